from __future__ import annotations

import pandas as pd
import pytest

from analyzer.errors import SchemaError
from analyzer.sources import detect_format, read_events

HEADER = "timestamp,user,action,resource,outcome,source_ip,bytes,country\n"


def write(tmp_path, body: bytes, header: str = HEADER):
    path = tmp_path / "access.csv"
    path.write_bytes(header.encode() + body)
    return path


def test_reads_iso_offsets_and_epoch_seconds(tmp_path):
    path = write(tmp_path, b"2026-01-02T03:04:05Z,alice,login,,success,10.0.0.7,,DE\n"
                           b"2026-01-02T05:04:05+02:00,bob,dataset.read,ds/x,ok,10.0.0.8,100,\n"
                           b"1767323045,carol,model.download,m/1,failed,10.0.0.9,5,US\n")
    frame = read_events(path).frame
    assert (frame["timestamp"] == pd.Timestamp("2026-01-02T03:04:05Z")).all()
    assert frame["outcome"].tolist() == ["success", "success", "failure"]
    assert frame["bytes"].tolist()[1:] == [100, 5]
    assert frame["country"].tolist()[0] == "DE"
    assert detect_format(path) == "csv"


@pytest.mark.parametrize(("row", "reason"), [
    (b"notatime,dave,login,,success,10.0.0.1,,", "timestamp: unparseable"),
    (b"2026-01-02T03:04:05Z,eve,login,,maybe,10.0.0.1,,", "outcome: unknown value"),
    (b"2026-01-02T03:04:05Z,eve,login,,success,999.1.1.1,,", "source_ip: not an IP"),
    (b"2026-01-02T03:04:05Z,eve,login,,success,10.0.0.1,12.5,", "bytes: not a non-negative"),
    (b"2026-01-02T03:04:05Z,eve,login,success,10.0.0.1", "expected 8 fields, got 5"),
    (b"2026-01-02T03:04:05Z,fr\xffed,login,,success,10.0.0.1,,", "not valid UTF-8"),
    (b"2026-01-02T03:04:05Z,n\x00l,login,,success,10.0.0.1,,", "NUL byte"),
    (b"2026-01-02T03:04:05Z," + b"x" * (10 << 20) + b",login,,success,10.0.0.1,,", "too long"),
])
def test_bad_rows_are_set_aside_with_line_numbers(tmp_path, row, reason):
    good = b"2026-01-02T03:04:05Z,alice,login,,success,10.0.0.7,,\n"
    path = write(tmp_path, good + row + b"\n" + good)
    result = read_events(path)
    assert len(result.frame) == 2
    (rejected,) = result.rejected
    assert rejected.line == 3 and reason in rejected.reason


def test_header_mapping_and_missing_columns(tmp_path):
    header = "time,who,what,on,result,src_addr\n"
    path = write(tmp_path, b"2026-01-02T03:04:05Z,alice,login,,success,10.0.0.7\n", header)
    with pytest.raises(SchemaError, match="missing required column"):
        read_events(path, format="csv")
    mapping = {"time": "timestamp", "who": "user", "what": "action", "on": "resource",
               "result": "outcome", "src_addr": "source_ip"}
    frame = read_events(path, format="csv", mapping=mapping).frame
    assert frame.loc[0, "source_ip"] == "10.0.0.7" and frame.loc[0, "user"] == "alice"


def test_times_the_frame_cannot_hold_are_set_aside_not_fatal(tmp_path):
    # found by the coverage-guided fuzzer: year 5996 overflowed the nanosecond frame
    path = write(tmp_path, b"5996-01-01T00:00:00Z,a,login,,success,10.0.0.1,,\n"
                           b"2026-01-02T03:04:05Z,b,login,,success,10.0.0.1,,\n"
                           b"99999999999999,c,login,,success,10.0.0.1,,\n")
    result = read_events(path)
    assert result.frame["user"].tolist() == ["b"]
    assert [r.line for r in result.rejected] == [2, 4]
