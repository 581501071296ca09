"""The declarative (generic) reader: regex and JSON-path mappings, and the mapping checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyzer.errors import ConfigError, SourceError
from analyzer.sources import generic

REGEX_SPEC = {
    "pattern": r"^(?P<ts>\S+ \S+) \[(?P<ip>[^\]]+)\] (?P<who>\S+) (?P<verb>\S+) (?P<what>\S+)"
               r" (?P<ok>\w+)(?: (?P<size>\d+))?$",
    "fields": {"timestamp": "ts", "source_ip": "ip", "user": "who", "action": "verb",
               "resource": "what", "outcome": "ok", "bytes": "size"},
    "constants": {"category": "database"},
    "outcome_values": {"success": ["GRANTED"], "failure": ["NOPE"]},
    "time_format": "%Y-%m-%d %H:%M:%S",
    "tz": "Europe/Paris",
}


def test_regex_mapping(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(
        "2024-03-01 10:00:00 [10.0.0.1] alice dataset.read sales GRANTED 512\n"
        "2024-03-01 10:00:05 [not-an-ip] bob dataset.read hr NOPE\n"
        "a line of something else\n"
        "\n"
        "2024-13-01 10:00:00 [10.0.0.1] carol dataset.read hr ok\n"
        "2024-03-01 10:01:00 [10.0.0.2] dave dataset.read hr maybe\n"
    )
    result = generic.read(path, mapping=REGEX_SPEC)
    frame = result.frame
    assert [(r.line, r.reason) for r in result.rejected] == [
        (3, "does not match the mapping's pattern"), (5, "unreadable time")]
    assert list(frame.user) == ["alice", "bob", "dave"]
    assert list(frame.outcome) == ["success", "failure", "unknown"]
    assert list(frame.source_ip) == ["10.0.0.1", "", "10.0.0.2"]
    assert frame.bytes.tolist()[0] == 512 and frame.bytes.isna().tolist()[1]
    assert frame.timestamp[0] == pd.Timestamp("2024-03-01 09:00:00", tz="UTC")  # Paris, UTC+1
    assert set(frame.category) == {"database"}


def test_python_only_regex_falls_back(tmp_path):
    spec = {"pattern": r"^(?P<ts>\d+) (?P<who>\w+)(?=!)",
            "fields": {"timestamp": "ts", "user": "who"}, "constants": {"action": "ping"}}
    path = tmp_path / "p.log"
    path.write_text("1700000000 erin! hello\n1700000001 frank? no\n")
    result = generic.read(path, mapping=spec)
    assert list(result.frame.user) == ["erin"]
    assert [r.line for r in result.rejected] == [2]
    assert result.frame.timestamp[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")


def test_json_paths_from_a_mapping_file(tmp_path):
    spec = {"json": True,
            "fields": {"timestamp": "time", "user": "actor.login", "action": "event",
                       "outcome": "result", "source_ip": "actor.ip", "resource": "repo"},
            "constants": {"category": "iam"}}
    mapping_file = tmp_path / "github.json"
    mapping_file.write_text(json.dumps(spec))
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join([
        json.dumps({"time": "2024-01-01T00:00:00Z", "actor": {"login": "octo", "ip": "1.2.3.4"},
                    "event": "repo.destroy", "result": "success", "repo": "org/app"}),
        "[1, 2]",
        json.dumps({"time": 1704067200, "actor.login": "flat", "event": "org.add_member",
                    "result": "failed"}),
    ]) + "\n")
    result = generic.read(path, mapping=mapping_file)
    frame = result.frame
    assert [(r.line, r.reason) for r in result.rejected] == [(2, "not a JSON object")]
    assert list(frame.user) == ["octo", "flat"]
    assert list(frame.outcome) == ["success", "failure"]
    assert list(frame.source_ip) == ["1.2.3.4", ""]


@pytest.mark.parametrize(("spec", "match"), [
    ({"fields": {"timestamp": "t"}}, "either"),
    ({"pattern": "(?P<t>x)", "json": True, "fields": {"timestamp": "t"}}, "either"),
    ({"pattern": "(?P<t>x)", "fields": {"user": "t"}}, "timestamp"),
    ({"pattern": "(?P<t>x)", "fields": {"timestamp": "t", "usr": "t"}}, "usr"),
    ({"pattern": "(?P<t>x)", "fields": {"timestamp": "t", "user": "u"}}, "no group"),
    ({"pattern": "(?P<t>x", "fields": {"timestamp": "t"}}, "regular expression"),
    ({"pattern": "(?P<t>x)", "fields": {"timestamp": "t"}, "colour": 1}, "colour"),
])
def test_bad_mappings_are_named(spec, match):
    spec.setdefault("constants", {"action": "x"})
    with pytest.raises(ConfigError, match=match):
        generic.load_mapping(spec)


def test_missing_file_and_sniff(tmp_path):
    with pytest.raises(SourceError, match="absent.log"):
        generic.read(tmp_path / "absent.log", mapping=REGEX_SPEC)
    with pytest.raises(ConfigError, match="nomap.json"):
        generic.read(tmp_path / "absent.log", mapping=tmp_path / "nomap.json")
    assert not generic.sniff(b"anything")
