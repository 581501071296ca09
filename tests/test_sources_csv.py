from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from analyzer.cli import main
from analyzer.errors import ConfigError, SchemaError
from analyzer.sources import detect_format, read_events
from tests.conftest import shared_data

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


SIX = "timestamp,user,action,resource,outcome,source_ip\n"
GOOD = b"2026-09-01T11:00:00Z,u1,login,r,success,10.0.0.1\n"


def test_an_unterminated_quote_costs_its_own_row_only(tmp_path):
    # issue #15.2: the open quote swallowed the ten good rows after it into one reject
    path = write(tmp_path, GOOD + b'2026-09-01T11:00:00Z,"u3\n' + GOOD * 10, header=SIX)
    result = read_events(path)
    assert len(result.frame) == 11
    (rejected,) = result.rejected
    assert rejected.line == 3 and "quote" in rejected.reason
    assert rejected.raw == b'2026-09-01T11:00:00Z,"u3'
    assert result.records == 12


def test_a_quoted_field_may_still_span_lines_when_it_closes(tmp_path):
    body = (b'2026-09-01T11:00:00Z,"u3\n' + GOOD
            + b'2026-09-01T11:00:00Z,u2,login,"two\nlines",success,10.0.0.2\n'
            + b"2026-09-01T11:00:00Z,u4,login,r,maybe,10.0.0.4\n" + GOOD)
    result = read_events(write(tmp_path, body, header=SIX))
    assert result.frame["user"].tolist() == ["u1", "u2", "u1"]
    assert result.frame["resource"].tolist()[1] == "two\nlines"
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [
        (2, "unterminated quote"), (6, "outcome")]
    assert result.records == len(result.frame) + len(result.rejected) + result.n_skipped


def test_constants_fill_columns_the_file_lacks(tmp_path):
    header = "timestamp,user,action,resource,source_ip\n"
    path = write(tmp_path, b"2026-01-02T03:04:05Z,alice,login,,10.0.0.7\n", header)
    with pytest.raises(SchemaError, match="missing required column.*outcome.*--set"):
        read_events(path, format="csv")
    frame = read_events(path, format="csv", constants={"outcome": "ok", "host": "web-1",
                                                       "category": "web"}).frame
    assert frame.loc[0, ["outcome", "host", "category"]].tolist() == ["success", "web-1", "web"]


@pytest.mark.parametrize(("constants", "message"), [
    ({"outcome": "maybe"}, "--set outcome=maybe: not a valid outcome"),
    ({"colour": "red"}, "--set colour: not a column"),
    ({"category": "kitchen"}, "not an ECS category"),
    ({"user": "x"}, "--set user: the file has a user column"),
])
def test_a_wrong_constant_is_one_config_error_naming_it(tmp_path, constants, message):
    path = write(tmp_path, b"2026-01-02T03:04:05Z,alice,login,,success,10.0.0.7,,\n")
    with pytest.raises(ConfigError, match=message):
        read_events(path, format="csv", constants=constants)


def test_a_key_is_taken_out_of_a_column_of_dict_text(tmp_path):
    header = "when,who,what,ip\n"
    body = (b"2026-01-02T03:04:05Z,\"{'principalId': 'AIDA1', 'type': 'IAMUser'}\",get,10.0.0.1\n"
            b'2026-01-02T03:04:06Z,"{""principalId"": ""AIDA2"", ""s"": {""n"": 3}}",get,10.0.0.2\n'
            b"2026-01-02T03:04:07Z,,get,10.0.0.3\n"
            b"2026-01-02T03:04:08Z,\"{'principalId': __import__('os').getpid()}\",get,10.0.0.4\n"
            b"2026-01-02T03:04:09Z,alice,get,10.0.0.5\n")
    path = write(tmp_path, body, header)
    result = read_events(path, format="csv", mapping={
        "when": "timestamp", "who.principalId": "user", "what": "action", "ip": "source_ip",
        "who.s.n": "resource"}, constants={"outcome": "success"})
    assert result.frame["user"].tolist() == ["AIDA1", "AIDA2", ""]
    assert result.frame["resource"].tolist() == ["", "3", ""]
    # an expression is never evaluated; a cell that is no dict shows the map is wrong
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [(5, "who"), (6, "who")]
    assert "not a dict" in result.rejected[0].reason


def test_the_otrf_honey_bucket_csv_reads_whole_through_map_and_set(tmp_path, capsys):
    with zipfile.ZipFile(shared_data("otrf", "aws_s3_honeybucketlogs.zip")) as archive:
        archive.extractall(tmp_path)
    source = tmp_path / "AWS_S3_HoneyBucketLogs.csv"
    log = tmp_path / "audit.jsonl"
    # the command line docs/formats.md shows
    assert main(["ingest", str(source), "--format", "csv", "--log", str(log),
                 "--map", "Event DateTime=timestamp", "--map", "User ID.principalId=user",
                 "--map", "Event Name=action", "--map", "Request Parameters.bucketName=resource",
                 "--map", "Source IP=source_ip", "--map", "Event ID=session",
                 "--set", "outcome=success", "--set", "category=web"]) == 0
    out = capsys.readouterr()
    assert "ingested 301 events" in out.out
    assert "301 records read: 301 used" in out.err
    frame = read_events(log).frame
    assert len(frame) == 301
    rows = pd.read_csv(source, dtype=str)
    assert sorted(frame["source_ip"]) == sorted(rows["Source IP"])
    assert frame["action"].value_counts().to_dict() == {
        "HeadBucket": 159, "ListObjects": 138, "PutObject": 4}
    assert set(frame["resource"]) == {"microsoft-devtest"}
    assert (frame["user"] == "AIDAZTADS5TQBDY2MAAOH").sum() == 3
