"""The access-log adapter on hand-written nginx and Apache lines.

``tests/data/apache_scanner_quoted_crlf.log`` is hand-written in the shape of published scanner
datasets: each line wrapped in double quotes with inner quotes doubled, CRLF ends, Nikto and
sqlmap user agents, probes of /.env and /etc/passwd, injection-shaped queries, and clients
named by host name (documentation addresses and example domains only).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from analyzer.alerts import Alert
from analyzer.cli import main
from analyzer.errors import SourceError
from analyzer.features import FeatureExtractor
from analyzer.sources import weblog

LINES = [
    # Apache common
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
    # nginx combined, with a query string
    '203.0.113.5 - - [01/Jun/2024:08:00:01 +0000] "POST /login?next=%2Fadmin HTTP/1.1" 401 53 '
    '"https://example.org/" "Mozilla/5.0 (X11; Linux x86_64)"',
    "garbage line",
    # nginx main with $http_x_forwarded_for after the agent
    '2001:db8::5 - alice [01/Jun/2024:08:00:02 +0000] "DELETE /api/models/7 HTTP/2.0" 500 - '
    '"-" "python-requests/2.32" "198.51.100.1"',
    # TLS bytes on a plain port: nginx logs the raw request
    '198.51.100.9 - - [01/Jun/2024:08:00:03 +0000] "\\x16\\x03\\x01\\x00\\xa5" 400 157 "-" "-"',
    '198.51.100.9 - - [31/Foo/2024:08:00:03 +0000] "GET / HTTP/1.1" 200 1',
    "",
]


@pytest.fixture
def access_log(tmp_path):
    path = tmp_path / "access.log.gz"
    path.write_bytes(gzip.compress(("\n".join(LINES) + "\n").encode()))
    return path


def test_mapping_counts_and_rejects(access_log):
    result = weblog.read(access_log)
    frame = result.frame
    assert [(r.line, r.reason.split(" ")[0]) for r in result.rejected] == [
        (3, "not"), (6, "unreadable")]
    got = list(zip(frame.source_ip, frame.user, frame.action, frame.resource, frame.outcome,
                   strict=True))
    assert got == [
        ("127.0.0.1", "frank", "http.get", "/apache_pb.gif", "success"),
        ("203.0.113.5", "", "http.post", "/login", "failure"),
        ("2001:db8::5", "alice", "http.delete", "/api/models/7", "failure"),
        ("198.51.100.9", "", "http.invalid", "", "failure"),
    ]
    assert frame.bytes.tolist()[:2] == [2326, 53] and frame.bytes.isna().tolist()[2]
    assert frame.timestamp[0] == pd.Timestamp("2000-10-10 20:55:36", tz="UTC")
    assert set(frame.category) == {"web"}
    assert "Mozilla/5.0" in frame.message[1]
    # six non-blank lines: four requests and two set aside, nothing skipped
    assert result.records == 6 == len(frame) + len(result.rejected) + result.n_skipped


def test_sniff_and_missing_file(access_log, tmp_path):
    assert weblog.sniff(gzip.decompress(access_log.read_bytes()))
    assert not weblog.sniff(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user x from 1.2.3.4\n")
    with pytest.raises(SourceError, match="access.log.1"):
        weblog.read(tmp_path / "access.log.1")


SCANNER = Path(__file__).parent / "data" / "apache_scanner_quoted_crlf.log"


@pytest.fixture(scope="module")
def scanner():
    return weblog.read(SCANNER)


def test_scanner_log_with_quoted_lines_and_crlf_reads_its_clients(scanner):
    raw = SCANNER.read_bytes()
    assert raw.count(b"\r\n") == 13 and raw.startswith(b'"203.0.113.7 - - [')  # the shape
    frame = scanner.frame
    assert [r.line for r in scanner.rejected] == [7]
    assert scanner.rejected[0].raw == b'"this is not an access log line"'
    assert scanner.records == 13 == len(frame) + len(scanner.rejected) + scanner.n_skipped
    assert scanner.skipped == {}
    assert list(frame.source_ip[:8]) == ["203.0.113.7"] + ["198.51.100.23"] * 4 + \
        ["2001:db8::66"] * 3
    # no carriage return or wrapping quote is left in any field
    for column in ("message", "user_agent", "url", "resource"):
        text = frame[column].astype(str)
        assert not text.str.contains("\r").any() and not text.str.startswith('"').any()
    probe = frame.iloc[2]
    assert (probe.action, probe.url, probe.status, probe.outcome) == \
        ("http.get", "/../../../../etc/passwd", 400, "failure")
    assert probe.user_agent.startswith("Mozilla/5.00 (Nikto/2.1.6)")
    assert probe.message.startswith('198.51.100.23 - - [12/Mar/2024:02:14:05 +0000] "GET ')


def test_url_parts_status_and_user_agent_are_kept(scanner):
    frame = scanner.frame
    assert str(frame.status.dtype) == "Int64"
    row = frame.iloc[5]
    assert (row.url_path, row.url_query) == ("/product.php", "id=1%27%20OR%20%271%27%3D%271")
    assert row.url == row.url_path + "?" + row.url_query
    assert (row.status, row.user_agent) == (500, "sqlmap/1.7.2#stable (https://sqlmap.org)")
    assert frame.url_query[0] == "" and frame.url_path[0] == "/index.html"
    assert set(frame.url_path[frame.user_agent.str.contains("Nikto")]) >= {
        "/.env", "/.git/config", "/../../../../etc/passwd"}
    # TLS bytes on a plain port: no request, so no URL; no user agent ("-")
    last = frame.iloc[-1]
    assert (last.action, last.url, last.user_agent, last.status) == \
        ("http.invalid", "", "", 400)


def test_host_name_clients_are_kept_counted_and_scored_as_sources(scanner):
    frame = scanner.frame
    named = frame[frame.source_domain != ""]
    assert list(named.source_domain) == ["crawl-66.googlebot.example.com"] * 2 + \
        ["scan.bad.example.net"]
    assert set(named.source_ip) == {""}             # source_ip holds addresses only
    assert named.user.tolist()[-1] == "admin"
    assert len(scanner.notes) == 1
    assert "3 requests from 2 clients named by host name" in scanner.notes[0]
    # the analyzer gives them windows of their own, as sources
    windows = FeatureExtractor().fit_transform(frame)
    sources = set(windows.loc[windows.entity_type == "source_ip", "entity"])
    assert {"crawl-66.googlebot.example.com", "scan.bad.example.net",
            "198.51.100.23"} <= sources


def test_scoring_a_log_with_host_name_clients_shows_their_windows(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.write_bytes(SCANNER.read_bytes())
    scores = tmp_path / "scores.csv"
    assert main(["score", str(log), "--format", "weblog", "--scores", str(scores),
                 "--no-write-back"]) == 0
    table = pd.read_csv(scores)
    assert {"scan.bad.example.net", "crawl-66.googlebot.example.com"} <= \
        set(table.loc[table.entity_type == "source_ip", "entity"])
    err = capsys.readouterr().err
    assert "13 records read: 12 used, 1 set aside" in err
    assert "2 clients named by host name" in err


def test_host_name_alert_is_written_without_a_source_ip():
    alert = Alert(id="a1", entity_type="source_ip", entity="scan.bad.example.net",
                  window_start=pd.Timestamp("2024-03-12 02:00", tz="UTC"),
                  window_end=pd.Timestamp("2024-03-12 03:00", tz="UTC"), score=1.0,
                  risk_score=90.0, reasons=("probes",), features={}, contributions={})
    event = alert.to_event(model_id="m", model_version="1")
    assert event.source_ip is None
    assert "scan.bad.example.net" in event.message
