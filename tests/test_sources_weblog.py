"""The access-log adapter on hand-written nginx and Apache lines."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from analyzer.errors import SourceError
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


def test_sniff_and_missing_file(access_log, tmp_path):
    assert weblog.sniff(gzip.decompress(access_log.read_bytes()))
    assert not weblog.sniff(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user x from 1.2.3.4\n")
    with pytest.raises(SourceError, match="access.log.1"):
        weblog.read(tmp_path / "access.log.1")
