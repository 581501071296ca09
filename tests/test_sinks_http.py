"""Splunk HEC and webhook sinks against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading

import orjson
import pytest

from analyzer.errors import ConfigError
from analyzer.events import AuditEvent
from analyzer.logger import AuditLogger
from analyzer.sinks.http import SplunkHecSink, WebhookSink
from analyzer.sinks.shipper import DeliveryError, Shipper, dead_letter_path, is_alert
from tests.services import EchoingRefuser


class Receiver:
    """Records each request; answers with the statuses queued in ``answers`` (else 200)."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.answers: list[int] = []
        self.refuse_body: bytes | None = None
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                if status == 200 and receiver.refuse_body and receiver.refuse_body in body:
                    status = 400
                data = b'{"text":"Success","code":0}' if status == 200 else \
                    b'{"text":"Invalid data format","code":6}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def write(log_path, n=3, *, alert=False):
    with AuditLogger(log_path, service="api") as audit:
        ids = [audit.log("login", user=f"u{i}", outcome="success",
                         timestamp="2024-05-01T10:00:00.5Z") for i in range(n)]
        if alert:
            ids.append(audit.log_event(AuditEvent(
                "alert.anomaly", kind="alert", level="critical", user="eve",
                message="unusual downloads", timestamp="2024-05-01T11:00:00Z")))
    return ids


def test_splunk_hec_gets_event_envelopes_with_the_token(receiver, log_path, tmp_path):
    ids = write(log_path, 3)
    token = tmp_path / "hec"
    token.write_text("11111111-2222-3333-4444-555555555555\n")
    token.chmod(0o600)
    sink = SplunkHecSink.from_files(receiver.url, token_file=token, index="audit")
    assert Shipper(log_path, sink).run().delivered == 3
    path, headers, body = receiver.requests[0]
    assert path == "/services/collector/event"
    assert headers["Authorization"] == "Splunk 11111111-2222-3333-4444-555555555555"
    envelopes = [orjson.loads(x) for x in body.split(b"\n")]
    assert [e["event"]["event"]["id"] for e in envelopes] == ids
    assert envelopes[0]["time"] == pytest.approx(1714557600.5)
    assert envelopes[0]["sourcetype"] == "_json" and envelopes[0]["index"] == "audit"
    assert "1111" not in repr(sink)


def test_splunk_busy_is_retried_and_a_bad_record_is_isolated(receiver, log_path):
    write(log_path, 4)
    receiver.answers = [503]
    receiver.refuse_body = b'"u2"'
    sink = SplunkHecSink(receiver.url, token="t")
    stats = Shipper(log_path, sink, backoff_initial=0.01, backoff_max=0.02).run()
    assert stats.retried == 4 and stats.rejected == 1 and stats.delivered == 3
    dead = orjson.loads(dead_letter_path(log_path, "splunk").read_bytes().splitlines()[0])
    assert "Invalid data format" in dead["reason"]


def test_splunk_token_refused_is_a_configuration_error(receiver, log_path):
    write(log_path, 1)
    receiver.answers = [403]
    with pytest.raises(ConfigError, match="HEC token refused"):
        Shipper(log_path, SplunkHecSink(receiver.url, token="secret-tok")).run()


def test_webhook_gets_alerts_only_with_an_idempotency_key(receiver, log_path):
    ids = write(log_path, 3, alert=True)
    sink = WebhookSink(receiver.url + "/hooks/audit?channel=sec")
    stats = Shipper(log_path, sink, select=is_alert).run()
    assert stats.delivered == 1 and stats.skipped == 3
    ((path, headers, body),) = receiver.requests
    assert path == "/hooks/audit?channel=sec"
    assert headers["Idempotency-Key"] == ids[-1]
    assert orjson.loads(body)["event"]["kind"] == "alert"


def test_webhook_retries_from_the_record_that_failed(receiver, log_path):
    ids = write(log_path, 3)
    receiver.answers = [200, 502]
    sink = WebhookSink(receiver.url)
    result = sink.send(_records(log_path))
    assert result.retry == (1, 2)
    stats = Shipper(log_path, WebhookSink(receiver.url), backoff_initial=0.01).run()
    assert stats.delivered == 3
    keys = [h["Idempotency-Key"] for _, h, _ in receiver.requests]
    assert keys == [ids[0], ids[1], *ids]  # the resends carry the same keys


def test_webhook_unreachable_is_a_delivery_error():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError):
        WebhookSink(f"http://127.0.0.1:{port}").send(_records_from_doc())


def _records(log_path):
    from analyzer.sinks.shipper import LogTail
    tail = LogTail(log_path)
    try:
        from analyzer.sinks.shipper import Record
        return [Record(raw, orjson.loads(raw), end) for raw, end in tail.read(1 << 20)]
    finally:
        tail.close()


def _records_from_doc():
    from analyzer.sinks.shipper import Record
    doc = {"@timestamp": "2024-05-01T00:00:00Z", "event": {"id": "x"}}
    return [Record(orjson.dumps(doc), doc, 1)]


def test_an_echoed_token_reaches_neither_dead_letters_nor_the_trail(tmp_path, capsys):
    """Issue 14 item 11: a destination echoing the request in its error body put the bearer
    token on stderr, in the dead letters and in the chained trail."""
    from analyzer.cli import main

    server = EchoingRefuser()
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit:
        audit.log("login", user="alice")
    token = tmp_path / "token"
    token.write_text("tok-very-secret-123\n")
    token.chmod(0o644)
    argv = ["ship", str(log), "--to", "webhook", "--url", server.url, "--once",
            "--token-file", str(token)]
    assert main(argv) == 2  # a credential file others can read is refused, as key files are
    assert "chmod 600" in capsys.readouterr().err
    token.chmod(0o600)
    assert main(argv) == 1
    server.shutdown()
    err = capsys.readouterr().err
    assert "plain http://" in err  # the token travels in clear: said once
    for path in tmp_path.iterdir():
        if path != token:
            assert b"tok-very-secret-123" not in path.read_bytes(), path.name
    assert "tok-very-secret-123" not in err
    dead = orjson.loads(dead_letter_path(log, "webhook").read_bytes().splitlines()[0])
    assert dead["reason"] == "HTTP 400"


def test_refusal_reasons_keep_only_harmless_words():
    from analyzer.sinks._http import safe_reason
    from analyzer.sinks.elasticsearch import _error_text

    assert safe_reason("Invalid data format") == "Invalid data format"
    assert safe_reason("Authorization: Bearer x") == safe_reason("a\nb") == ""
    assert safe_reason("x" * 200) == ""
    error = {"type": "mapper_parsing_exception",
             "reason": "failed to parse field [user.name] value 'alice'",
             "caused_by": {"type": "illegal_argument_exception", "reason": "'alice'"}}
    assert _error_text(error) == "mapper_parsing_exception (caused by " \
                                 "illegal_argument_exception)"
    assert _error_text(b"<html>Authorization: Bearer x</html>") == "error"
