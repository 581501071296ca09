"""Elasticsearch sink against a local ``_bulk`` endpoint that records ``_id``s.

The endpoint (http.server on 127.0.0.1) behaves like the real API where it matters here:
``create`` of an existing ``_id`` is a 409, a document with a field of the wrong type is a
400 ``mapper_parsing_exception``, and it can be told to answer 429, 503 or to go away.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.sinks.elasticsearch import ElasticsearchSink
from analyzer.sinks.shipper import (
    Record,
    Shipper,
    cursor_path,
    dead_letter_path,
    load_cursor,
)

REPO = Path(__file__).resolve().parents[1]


class FakeBulk:
    """A ``_bulk`` endpoint: stores documents by (index, _id), counts every write attempt."""

    def __init__(self, port: int = 0) -> None:
        self.docs: dict[tuple[str, str], dict] = {}
        self.writes: Counter[str] = Counter()  # _id -> successful creates (must stay 1)
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.fail_next: list[int] = []  # whole-request statuses to answer next
        self.throttle_items_once: set[str] = set()  # _ids answered 429 the first time
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                fake.connections.append(self.connection)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with fake.lock:
                    fake.requests += 1
                    fake.headers.append(dict(self.headers))
                    status = fake.fail_next.pop(0) if fake.fail_next else 200
                    answer = fake.bulk(body) if status == 200 else {"error": "busy"}
                data = orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bulk(self, body: bytes) -> dict:
        lines = body.split(b"\n")
        assert lines[-1] == b"", "NDJSON must end with a newline"
        items, errors = [], False
        for meta_line, doc_line in zip(lines[0:-1:2], lines[1:-1:2], strict=True):
            (op, meta), = orjson.loads(meta_line).items()
            doc = orjson.loads(doc_line)
            key = (meta["_index"], meta["_id"])
            if meta["_id"] in self.throttle_items_once:
                self.throttle_items_once.discard(meta["_id"])
                result = {"status": 429, "error": {"type": "es_rejected_execution_exception"}}
            elif isinstance(doc.get("user", {}).get("name"), str) and \
                    doc["user"]["name"].startswith("mapping-error"):
                result = {"status": 400, "error": {"type": "mapper_parsing_exception",
                                                   "reason": "failed to parse [user.name]"}}
            elif key in self.docs and op == "create":
                result = {"status": 409, "error": {"type": "version_conflict_engine_exception"}}
            else:
                self.docs[key] = doc
                self.writes[meta["_id"]] += 1
                result = {"status": 201, "_id": meta["_id"]}
            errors |= result["status"] >= 300
            items.append({op: {"_index": meta["_index"], **result}})
        return {"took": 1, "errors": errors, "items": items}

    def stop(self) -> None:
        """Go away like a dead server: stop listening and drop kept-alive connections."""
        self.server.shutdown()
        self.server.server_close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def bulk():
    fake = FakeBulk()
    yield fake
    fake.stop()


def write_events(path: Path, n: int, *, start: int = 0, bad_every: int = 0) -> list[str]:
    ids = []
    with AuditLogger(path, service="test") as audit:
        for i in range(start, start + n):
            user = f"mapping-error-{i}" if bad_every and i % bad_every == 0 else f"u{i % 7}"
            ids.append(audit.log("dataset.read", user=user, outcome="success",
                                 resource=f"d/{i}", timestamp=f"2024-05-0{1 + i % 3}T10:00:00Z"))
    return ids


def test_every_event_lands_once_under_its_id_in_its_days_index(tmp_path, bulk):
    log = tmp_path / "audit.jsonl"
    ids = write_events(log, 120)
    sink = ElasticsearchSink(bulk.url, index="audit-{yyyy.MM.dd}")
    stats = Shipper(log, sink, batch_records=50).run()
    assert stats.delivered == 120 and stats.rejected == 0 and stats.lag_bytes == 0
    assert {i for _, i in bulk.docs} == set(ids)
    assert {index for index, _ in bulk.docs} == {"audit-2024.05.01", "audit-2024.05.02",
                                                 "audit-2024.05.03"}
    assert bulk.requests == 3
    # the document is the record as written: the chain fields travel with it
    doc = next(iter(bulk.docs.values()))
    assert len(doc["event"]["hash"]) == 64


def test_resending_after_a_lost_cursor_creates_no_second_document(tmp_path, bulk):
    log = tmp_path / "audit.jsonl"
    write_events(log, 30)
    sink = ElasticsearchSink(bulk.url, index="audit")
    Shipper(log, sink).run()
    cursor_path(log, sink.name).unlink()  # as if the shipper died before saving it
    stats = Shipper(log, sink).run()
    assert stats.delivered == 30  # 409 on create: already there, counted as delivered
    assert len(bulk.docs) == 30 and max(bulk.writes.values()) == 1


def test_throttled_items_and_429_and_503_are_retried_until_delivered(tmp_path, bulk):
    log = tmp_path / "audit.jsonl"
    ids = write_events(log, 40)
    bulk.fail_next = [429, 503]
    bulk.throttle_items_once = set(ids[5:9])
    shipper = Shipper(log, ElasticsearchSink(bulk.url, index="audit"),
                      backoff_initial=0.01, backoff_max=0.02)
    stats = shipper.run()
    assert stats.delivered == 40 and stats.rejected == 0
    assert stats.retried == 40 + 40 + 4
    assert len(bulk.docs) == 40 and max(bulk.writes.values()) == 1


def test_mapping_errors_go_to_the_dead_letter_file_and_an_error_event(tmp_path, bulk):
    log = tmp_path / "audit.jsonl"
    ids = write_events(log, 20, bad_every=7)  # 0, 7, 14 are refused
    with AuditLogger(log, service="test") as audit:
        sink = ElasticsearchSink(bulk.url, index="audit")
        stats = Shipper(log, sink, audit=audit).run()
    assert stats.rejected == 3 and stats.delivered == 17
    dead = [orjson.loads(line) for line in dead_letter_path(log, sink.name).read_bytes()
            .splitlines()]
    assert [d["event_id"] for d in dead] == [ids[0], ids[7], ids[14]]
    assert "mapper_parsing_exception" in dead[0]["reason"]
    assert orjson.loads(dead[0]["record"])["event"]["id"] == ids[0]
    report = orjson.loads(log.read_bytes().splitlines()[-1])
    assert report["event"]["action"] == "ship.rejected"
    assert report["log"]["level"] == "error"
    assert report["analyzer"]["ship"]["rejected"] == 3
    # the report itself is shipped on the next pass
    assert Shipper(log, sink).run().delivered == 1


def test_credentials_are_sent_as_headers_and_never_shown(tmp_path, bulk):
    key_file = tmp_path / "k"
    key_file.write_text("myid:s3cret-api-key\n")
    key_file.chmod(0o600)
    sink = ElasticsearchSink.from_files(bulk.url, api_key_file=key_file, index="audit")
    log = tmp_path / "audit.jsonl"
    write_events(log, 1)
    Shipper(log, sink).run()
    expected = base64.b64encode(b"myid:s3cret-api-key").decode()
    assert bulk.headers[0]["Authorization"] == f"ApiKey {expected}"
    assert "s3cret" not in repr(sink)
    sink = ElasticsearchSink(bulk.url, username="elastic", password="pw-xyz")
    sink.send([Record(b'{"@timestamp":"2024-05-01T00:00:00Z","event":{"id":"x"}}',
                      {"@timestamp": "2024-05-01T00:00:00Z", "event": {"id": "x"}}, 1)])
    assert bulk.headers[-1]["Authorization"] == \
        "Basic " + base64.b64encode(b"elastic:pw-xyz").decode()
    with pytest.raises(ConfigError) as err:
        ElasticsearchSink("https://elastic:pw-xyz@127.0.0.1:9200")
    assert "pw-xyz" not in str(err.value)


def test_refused_credentials_stop_with_a_clear_error(tmp_path, bulk):
    log = tmp_path / "audit.jsonl"
    write_events(log, 3)
    bulk.fail_next = [401]
    with pytest.raises(ConfigError, match="HTTP 401"):
        Shipper(log, ElasticsearchSink(bulk.url, api_key="a:b")).run()
    assert load_cursor(cursor_path(log, "elasticsearch")) is None  # nothing marked shipped


@pytest.mark.parametrize("template", ["Audit", "audit-{yyyy", "audit {dd}", "a-{foo}", "_x"])
def test_invalid_index_templates_are_refused(template):
    with pytest.raises(ConfigError):
        ElasticsearchSink("http://127.0.0.1:9", index=template)


def test_tls_verification_is_on_by_default(tmp_path):
    sink = ElasticsearchSink("https://127.0.0.1:9200")
    import ssl
    context = sink._client._context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


_SHIP_SCRIPT = """
import sys
from analyzer.sinks.elasticsearch import ElasticsearchSink
from analyzer.sinks.shipper import Shipper
Shipper(sys.argv[1], ElasticsearchSink(sys.argv[2], index="audit-{yyyy.MM.dd}"),
        batch_records=25, poll_interval=0.05, backoff_initial=0.05, backoff_max=0.2
        ).run(follow=True)
"""


@pytest.mark.integration
def test_kill_restart_and_outage_deliver_everything_exactly_once(tmp_path):
    """A writer appends while the shipper is killed (SIGKILL) and restarted and while the
    destination is down; at the end every event is in the index, none twice."""
    log = tmp_path / "audit.jsonl"
    fake = FakeBulk()
    port = fake.port
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start_shipper() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _SHIP_SCRIPT, str(log), fake_url],
                                env=env)

    fake_url = fake.url
    ids: list[str] = []
    audit = AuditLogger(log, service="app", durability="flush")

    def append(n: int) -> None:
        for _ in range(n):
            ids.append(audit.log("model.download", user="alice", outcome="success",
                                 resource=f"m/{len(ids)}"))

    def wait_for(count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(fake.docs) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fake.docs) >= count, f"{len(fake.docs)} of {count} delivered"

    proc = start_shipper()
    try:
        append(200)
        wait_for(50, timeout=20)
        proc.send_signal(signal.SIGKILL)  # mid-stream, no chance to save anything
        proc.wait()
        append(100)
        proc = start_shipper()
        wait_for(300)
        first = fake
        fake.stop()  # the destination goes down ...
        append(150)
        time.sleep(0.5)  # the shipper retries meanwhile
        fake = FakeBulk(port)  # ... and comes back (a fresh index: only what it missed)
        wait_for(150)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start_shipper()
        append(50)
        wait_for(200)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        audit.close()
        fake.stop()
    assert {i for _, i in first.docs} == set(ids[:300])
    assert max(first.writes.values()) == 1
    assert {i for _, i in fake.docs} == set(ids[300:])
    assert max(fake.writes.values()) == 1


def test_ship_command_once_drains_and_reports_counts(tmp_path, bulk, capsys, monkeypatch):
    from analyzer.cli import main

    log = tmp_path / "audit.jsonl"
    write_events(log, 12, bad_every=5)  # 0, 5, 10 refused
    monkeypatch.setenv("AUDIT_ES_API_KEY", "id:env-secret")
    code = main(["ship", str(log), "--to", "elasticsearch", "--url", bulk.url, "--once"])
    out, err = capsys.readouterr()
    assert code == 1  # rejected records are a finding the user must act on
    assert "9 delivered" in out and "3 rejected" in out and "dead.jsonl" in err
    assert bulk.headers[0]["Authorization"] == "ApiKey " + base64.b64encode(
        b"id:env-secret").decode()
    assert "env-secret" not in out + err
    assert main(["ship", str(log), "--to", "elasticsearch", "--url", bulk.url,
                 "--once"]) == 0  # only the rejection report was left to ship
    assert "1 delivered" in capsys.readouterr().out


def test_ship_command_needs_its_destination_options(tmp_path, capsys):
    from analyzer.cli import main

    log = tmp_path / "audit.jsonl"
    write_events(log, 1)
    assert main(["ship", str(log), "--to", "cloudwatch", "--once"]) == 2
    assert "--group" in capsys.readouterr().err
