"""syslog sink: RFC 5424 formatting, and delivery to a real rsyslog on loopback ports.

The rsyslog tests start ``rsyslogd`` themselves with a temporary configuration (imudp,
imtcp, and imtcp with the openssl stream driver for TLS) whose template writes the fields
rsyslog parsed out of each RFC 5424 message, then stop it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.sinks.shipper import DeliveryError, Record, Shipper
from analyzer.sinks.syslog import SyslogSink, format_message, sd_escape

RSYSLOGD = shutil.which("rsyslogd") or next(
    (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if Path(p).exists()), None)
needs_rsyslog = pytest.mark.skipif(
    RSYSLOGD is None, reason="rsyslogd is absent (Debian package rsyslog; .ci/run installs it)")

FIELDS = ("app", "msgid", "procid", "host", "severity", "facility", "sd", "msg")
TEMPLATE = "|".join(f"%{p}%" for p in ("app-name", "msgid", "procid", "hostname",
                                          "syslogseverity-text", "syslogfacility",
                                          "structured-data")) + "|%msg%\\n"


def record(**fields) -> Record:
    doc = {"@timestamp": "2024-05-01T10:00:00.123456Z", "message": "hello",
           "event": {"id": "e-1", "action": "login", "sequence": 7, "outcome": "failure"},
           "log": {"level": "error"}, "host": {"name": "web-1"}, "process": {"pid": 42},
           "service": {"name": "inference-api"}, "user": {"name": "alice"}}
    doc.update(fields)
    return Record(orjson.dumps(doc), doc, 0)


def test_header_and_structured_data_follow_rfc5424():
    msg = format_message(record(), body="message").decode()
    assert msg == ('<107>1 2024-05-01T10:00:00.123456Z web-1 inference-api 42 login '
                   '[audit@32473 id="e-1" seq="7" action="login" outcome="failure" '
                   'user="alice"] hello')


def test_sd_values_escape_quote_backslash_and_bracket():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    msg = format_message(record(user={"name": 'x"]\\'}), body="message").decode()
    assert 'user="x\\"\\]\\\\"' in msg


def test_header_fields_are_printable_ascii_within_their_lengths():
    msg = format_message(record(event={"id": "e", "action": "model download é" + "x" * 40},
                                host={"name": ""})).decode()
    parts = msg.split(" ", 7)
    assert parts[2] == "-"  # empty host
    assert parts[5] == ("model_download_" + "_" + "x" * 40)[:32]


def test_the_json_body_is_the_record_itself():
    rec = record()
    assert format_message(rec).endswith(b" " + rec.raw)


@pytest.mark.parametrize(("address", "problem"), [
    ("http://x:1", "udp://"), ("udp://x:1", "TLS"), ("tcp://:5", "udp://")])
def test_bad_addresses_are_refused(address, problem):
    with pytest.raises(ConfigError, match=problem):
        SyslogSink(address, tls=address.startswith("udp"))


def test_sd_id_needs_an_enterprise_number():
    with pytest.raises(ConfigError, match="SD-ID"):
        SyslogSink("udp://127.0.0.1:514", sd_id="audit")


def test_an_unreachable_tcp_server_is_a_retryable_delivery_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError, match="refused"):
        SyslogSink(f"tcp://127.0.0.1:{port}").send([record()])


def test_tcp_frames_use_octet_counting():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        sink = SyslogSink(f"tcp://127.0.0.1:{server.getsockname()[1]}")
        sink.send([record(), record(message="two")])
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while data.count(b"}") < 2 or not data.endswith(b"}"):
                data += conn.recv(65536)
        sink.close()
    first_len, _, rest = data.partition(b" ")
    assert len(rest[:int(first_len)].split(b" ", 7)[7]) > 0
    second = rest[int(first_len):]
    n, _, msg = second.partition(b" ")
    assert int(n) == len(msg) and msg.startswith(b"<107>1 ")


# -- against a real rsyslog ----------------------------------------------------------------


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_certs(folder: Path) -> dict[str, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    ca_key, ca, key, csr, cert, ext = (folder / n for n in (
        "ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "san.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
         "-out", ca, "-subj", "/CN=audit-test-ca", "-days", "2"],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ]
    for cmd in run:
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    return {"ca": ca, "key": key, "cert": cert}


class Rsyslog:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.udp, self.tcp, self.tls = _free_port(socket.SOCK_DGRAM), _free_port(), _free_port()
        self.certs = _make_certs(folder)
        out = {name: folder / f"{name}.out" for name in ("udp", "tcp", "tls")}
        self.out = out
        tls_global = tls_input = ""
        if self.certs:
            tls_global = (f'global(DefaultNetstreamDriverCAFile="{self.certs["ca"]}" '
                          f'DefaultNetstreamDriverCertFile="{self.certs["cert"]}" '
                          f'DefaultNetstreamDriverKeyFile="{self.certs["key"]}")')
            tls_input = (f'input(type="imtcp" port="{self.tls}" address="127.0.0.1" '
                         f'name="tls" ruleset="tls" streamDriver.name="ossl" '
                         f'streamDriver.mode="1" streamDriver.authMode="anon")')
        conf = f"""
global(workDirectory="{folder}" maxMessageSize="64k")
{tls_global}
module(load="imudp")
module(load="imtcp")
template(name="fields" type="string" string="{TEMPLATE}")
ruleset(name="udp") {{ action(type="omfile" file="{out['udp']}" template="fields") }}
ruleset(name="tcp") {{ action(type="omfile" file="{out['tcp']}" template="fields") }}
ruleset(name="tls") {{ action(type="omfile" file="{out['tls']}" template="fields") }}
input(type="imudp" port="{self.udp}" address="127.0.0.1" ruleset="udp")
input(type="imtcp" port="{self.tcp}" address="127.0.0.1" ruleset="tcp")
{tls_input}
"""
        self.conf = folder / "rsyslog.conf"
        self.conf.write_text(conf)
        self.log = open(folder / "rsyslogd.stderr", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(folder / "rsyslogd.pid")],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.tls_ready = self.certs is not None and self._listening(self.tls)
        if not self._listening(self.tcp):
            self.stop()
            pytest.fail("rsyslogd did not start: "
                        + (folder / "rsyslogd.stderr").read_text()[-2000:])

    def _listening(self, port: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                        timeout=0.5):
                return True
            time.sleep(0.05)
        return False

    def lines(self, transport: str, count: int, timeout: float = 10.0) -> list[dict]:
        """The first ``count`` messages rsyslog wrote for ``transport``, as parsed fields."""
        path = self.out[transport]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                rows = path.read_bytes().decode().splitlines()
                if len(rows) >= count:
                    return [dict(zip(FIELDS, r.split("|", 7), strict=True)) for r in rows]
            time.sleep(0.05)
        raise AssertionError(f"rsyslog wrote {path.read_text() if path.exists() else 'nothing'}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory):
    if RSYSLOGD is None:
        pytest.skip("rsyslogd is absent (Debian package rsyslog; .ci/run installs it)")
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    yield server
    server.stop()


def _ship(tmp_path: Path, sink: SyslogSink) -> list[dict]:
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, service="inference-api") as audit:
        audit.log("login", user='eve "the" [admin]', outcome="failure",
                  source_ip="10.0.0.9", level="warning", message="bad password")
        audit.log("model.download", user="bob", resource="models/llm-7b", outcome="success")
    stats = Shipper(log, sink).run()
    sink.close()
    assert stats.delivered == 2
    return [orjson.loads(x) for x in log.read_bytes().splitlines()]


def _check(parsed: list[dict], docs: list[dict]) -> None:
    first, second = parsed
    assert first["app"] == "inference-api"
    assert first["msgid"] == "login" and second["msgid"] == "model.download"
    assert first["procid"] == str(docs[0]["process"]["pid"])
    assert first["host"] == docs[0]["host"]["name"]
    assert first["severity"] == "warning" and second["severity"] == "info"
    assert first["facility"] == "13"
    sd = first["sd"]
    assert sd.startswith("[audit@32473 ") and sd.endswith("]")
    assert f'id="{docs[0]["event"]["id"]}"' in sd
    assert 'seq="1"' in sd and 'outcome="failure"' in sd and 'src="10.0.0.9"' in sd
    assert 'user="eve \\"the\\" [admin\\]"' in sd  # escaped as RFC 5424 requires
    assert orjson.loads(first["msg"].strip()) == docs[0]  # the whole record as the body
    assert 'resource="models/llm-7b"' in second["sd"]


@needs_rsyslog
@pytest.mark.integration
def test_rsyslog_parses_tcp_octet_counted_frames(rsyslog, tmp_path):
    docs = _ship(tmp_path, SyslogSink(f"tcp://127.0.0.1:{rsyslog.tcp}"))
    _check(rsyslog.lines("tcp", 2), docs)


@needs_rsyslog
@pytest.mark.integration
def test_rsyslog_parses_udp_datagrams(rsyslog, tmp_path):
    docs = _ship(tmp_path, SyslogSink(f"udp://127.0.0.1:{rsyslog.udp}"))
    _check(rsyslog.lines("udp", 2), docs)


@needs_rsyslog
@pytest.mark.integration
def test_rsyslog_parses_messages_over_tls_with_a_verified_certificate(rsyslog, tmp_path):
    if not rsyslog.tls_ready:
        pytest.skip("rsyslog TLS driver absent (Debian package rsyslog-openssl) or no openssl")
    docs = _ship(tmp_path, SyslogSink(f"tls://127.0.0.1:{rsyslog.tls}",
                                      ca_file=rsyslog.certs["ca"]))
    _check(rsyslog.lines("tls", 2), docs)


@needs_rsyslog
@pytest.mark.integration
def test_an_untrusted_tls_certificate_is_refused(rsyslog):
    if not rsyslog.tls_ready:
        pytest.skip("rsyslog TLS driver absent (Debian package rsyslog-openssl) or no openssl")
    with pytest.raises(ConfigError, match="not trusted"):
        SyslogSink(f"tls://127.0.0.1:{rsyslog.tls}").send([record()])
