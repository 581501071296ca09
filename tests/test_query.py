"""Tests for analyzer.query and the ``query`` command over JSONL trails."""

from __future__ import annotations

import fnmatch
import gzip
import ipaddress
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer import query
from analyzer.cli import main
from analyzer.errors import ConfigError
from analyzer.query import Filter, ScanStats, parse_time, scan, trail_files

T0 = datetime(2025, 3, 3, tzinfo=UTC)
USERS = ["alice", "bob", "carol", "o\"neil", "zoë", "svc/etl", "x' OR '1'='1x"]
ACTIONS = ["login", "logout", "permission.change", "role.assign", "dataset.read",
           "model.download", "secret.read"]
RESOURCES = ["datasets/sales", "datasets/hr", "models/llm-7b", "secrets/db", ""]
IPS = ["10.0.0.7", "10.1.2.3", "192.168.1.20", "203.0.113.9", "2001:db8::5", "fe80::1", ""]
MESSAGES = ["ok", "Access DENIED by policy", "hello world", "", "résumé viewed"]


def _doc(rng: random.Random, k: int) -> dict:
    ts = T0 + timedelta(minutes=37 * k + rng.randrange(30))
    doc: dict = {
        "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": {"action": rng.choice(ACTIONS), "id": f"id-{k}", "sequence": k + 1},
        "message": rng.choice(MESSAGES),
    }
    if rng.random() < 0.9:
        doc["event"]["outcome"] = rng.choice(["success", "success", "failure", "unknown"])
    if rng.random() < 0.85:
        doc["log"] = {"level": rng.choice(["debug", "info", "info", "warning", "error",
                                           "critical"])}
    if rng.random() < 0.15:
        doc["event"]["kind"] = "alert"
    elif rng.random() < 0.5:
        doc["event"]["kind"] = "event"
    user = rng.choice([*USERS, None])
    if user is not None:
        doc["user"] = {"name": user}
    ip = rng.choice(IPS)
    if ip:
        doc["source"] = {"ip": ip}
    resource = rng.choice(RESOURCES)
    if resource:
        doc["resource"] = {"name": resource}
    return doc


def _encode(rng: random.Random, doc: dict) -> bytes:
    """Most lines as the logger writes them; some in another key order or time offset."""
    roll = rng.random()
    if roll < 0.7:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    if roll < 0.85:
        return json.dumps(dict(reversed(list(doc.items()))), ensure_ascii=False).encode()
    other = dict(doc)
    other["@timestamp"] = other["@timestamp"].replace("Z", "+00:00")
    return json.dumps(other).encode()  # ASCII escapes for non-ASCII values


MALFORMED = [
    b'{"@timestamp": "2025-03-04T00:00:00Z", "event": {"action": "login"',  # torn
    b"not json at all",
    b'{"@timestamp": "yesterday", "event": {"action": "login"}, "user": {"name": "alice"}}',
    b'{"@timestamp": "2025-03-04T00:00:00Z", "event": {"outcome": "success"}}',
    b'{"@timestamp": "2025-03-04T00:00:00Z", "event": {"action": "x", "outcome": "maybe"}}',
    b'{"@timestamp": "2025-03-04T00:00:00Z", "event": {"action": "x"}, "user": {"name": 5}}',
    b"[1, 2, 3]",
]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A log with two rotated generations (one gzipped), malformed and blank lines."""
    folder = tmp_path_factory.mktemp("trail")
    rng = random.Random(20250303)
    names = ["audit.jsonl.2.gz", "audit.jsonl.1", "audit.jsonl"]
    files = [folder / n for n in names]
    k = 0
    for file in files:
        lines = []
        for _ in range(140):
            if rng.random() < 0.05:
                lines.append(rng.choice(MALFORMED))
            elif rng.random() < 0.02:
                lines.append(b"")
            else:
                lines.append(_encode(rng, _doc(rng, k)))
                k += 1
        data = b"\n".join(lines) + b"\n"
        if file.suffix == ".gz":
            file.write_bytes(gzip.compress(data))
        else:
            file.write_bytes(data)
    (folder / "audit.jsonl.checkpoints").write_bytes(b'{"sequence":1,"hash":"00","time":""}\n')
    (folder / "audit.jsonl.ship-es.cursor").write_bytes(b'{"offset": 0}')
    return folder, files


def _lines(file: Path) -> list[bytes]:
    data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    return data.split(b"\n")[:-1]


def _valid(doc: object) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), dict):
        return False
    event = doc["event"]
    if not isinstance(event.get("action"), str) or not event["action"]:
        return False
    if event.get("outcome", "unknown") not in ("success", "failure", "unknown"):
        return False
    user = doc.get("user", {}).get("name")
    if user is not None and not isinstance(user, str):
        return False
    try:
        datetime.fromisoformat(doc["@timestamp"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def reference(files: list[Path], flt: Filter) -> list[bytes]:
    """What a plain Python filter over the same files returns."""
    result = []
    for file in files:
        for raw in _lines(file):
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if not _valid(doc):
                continue
            event = doc["event"]
            ts = datetime.fromisoformat(doc["@timestamp"])
            user = doc.get("user", {}).get("name")
            ip = doc.get("source", {}).get("ip")
            resource = doc.get("resource", {}).get("name")
            level = doc.get("log", {}).get("level")
            checks = [
                not flt.users or user in flt.users,
                not flt.actions or any(fnmatch.fnmatchcase(event["action"], p)
                                       for p in flt.actions),
                not flt.resources or (resource is not None and any(
                    fnmatch.fnmatchcase(resource, p) for p in flt.resources)),
                not flt.outcomes or event.get("outcome", "unknown") in flt.outcomes,
                not flt.levels or level in flt.levels,
                not flt.kinds or event.get("kind", "event") in flt.kinds,
                not flt.source_ips or (ip is not None and any(
                    ipaddress.ip_address(ip) in ipaddress.ip_network(n, strict=False)
                    for n in flt.source_ips
                    if ipaddress.ip_address(ip).version
                    == ipaddress.ip_network(n, strict=False).version)),
                flt.since is None or ts >= flt.since,
                flt.until is None or ts < flt.until,
                not flt.text or flt.text.lower() in doc.get("message", "").lower(),
            ]
            if all(checks):
                result.append(raw)
    return result


def scanned(paths, flt: Filter, **options) -> list[bytes]:
    out = []
    for batch in scan(paths, flt, **options):
        out.extend(r.encode() for r in batch.table.column("record").to_pylist())
    return out


def _same_records(got: list[bytes], expected: list[bytes]) -> None:
    assert [orjson.loads(r) for r in got] == [json.loads(r) for r in expected]
    assert got == expected  # and byte for byte as in the file


TIMES = [T0 + timedelta(hours=h) for h in (0, 5, 30, 60, 90, 200, 400)]
filters = st.builds(
    Filter,
    users=st.lists(st.sampled_from([*USERS, "nobody"]), max_size=2).map(tuple),
    actions=st.lists(st.sampled_from(["login", "permission.*", "*.read", "model.?ownload",
                                      "[lr]o*", "nothing"]), max_size=2).map(tuple),
    outcomes=st.lists(st.sampled_from(["success", "failure", "unknown"]),
                      max_size=2).map(tuple),
    levels=st.one_of(st.just(()), st.sampled_from(["debug", "warning", "critical"])
                     .map(Filter.at_least), st.sampled_from([("info",), ("error",)])),
    kinds=st.sampled_from([(), ("event",), ("alert",)]),
    source_ips=st.lists(st.sampled_from(["10.0.0.0/8", "10.1.2.3", "2001:db8::/32",
                                         "192.168.0.0/16", "0.0.0.0/0"]),
                        max_size=2).map(tuple),
    resources=st.lists(st.sampled_from(["datasets/*", "models/llm-7b", "*/db", "secrets/?b"]),
                       max_size=2).map(tuple),
    since=st.one_of(st.none(), st.sampled_from(TIMES)),
    until=st.one_of(st.none(), st.sampled_from(TIMES)),
    text=st.one_of(st.none(), st.sampled_from(["denied", "HELLO", "o", "résumé"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flt=filters, block=st.sampled_from([512, 4096, 1 << 20]))
def test_query_equals_a_plain_python_filter(trail, flt: Filter, block: int) -> None:
    folder, files = trail
    with patch.object(query, "_BLOCK_BYTES", block):
        got = scanned(str(folder / "audit.jsonl*"), flt)
    _same_records(got, reference(files, flt))


def test_rotated_files_are_read_oldest_first_and_side_files_skipped(trail) -> None:
    folder, files = trail
    assert trail_files(str(folder / "audit.jsonl*")) == files
    assert trail_files(folder) == files


def test_malformed_lines_are_set_aside_with_their_line_numbers(trail) -> None:
    _, files = trail
    stats = ScanStats()
    with patch.object(query, "_BLOCK_BYTES", 700):
        got = scanned(files[2], Filter(), stats=stats)
    lines = _lines(files[2])
    bad = [n for n, raw in enumerate(lines, 1) if raw.strip() and not _valid(_loads(raw))]
    assert [r.line for r in stats.rejected] == bad
    assert all(r.path == str(files[2]) for r in stats.rejected)
    assert len(got) == sum(1 for raw in lines if raw.strip()) - len(bad)


def _loads(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def test_filter_values_are_data_not_code(trail) -> None:
    folder, _ = trail
    everything = scanned(folder, Filter())
    assert scanned(folder, Filter(users=("x' OR '1'='1",))) == []
    assert scanned(folder, Filter(users=("*",))) == []
    quoted = scanned(folder, Filter(users=('o"neil',)))
    assert quoted and all(json.loads(r)["user"]["name"] == 'o"neil' for r in quoted)
    assert len(quoted) < len(everything)


def test_limit_stops_early_and_count_matches(trail) -> None:
    folder, files = trail
    flt = Filter(outcomes=("failure",))
    expected = reference(files, flt)
    assert len(expected) > 5
    assert scanned(folder, flt, limit=5) == expected[:5]
    stats = ScanStats()
    assert scanned(folder, flt, limit=0, stats=stats) == []


def test_since_decides_on_record_times_not_on_file_modification_times(trail,
                                                                        tmp_path) -> None:
    # a log restored from a backup keeps records newer than its modification time
    _, files = trail
    restored = tmp_path / "audit.jsonl.1"
    restored.write_bytes(_lines_bytes(files[1]))
    new = tmp_path / "audit.jsonl"
    new.write_bytes(_lines_bytes(files[2]))
    stamps = sorted(json.loads(r)["@timestamp"] for r in _lines(restored) if _valid(_loads(r)))
    since = datetime.fromisoformat(stamps[len(stamps) // 2])
    long_ago = since.timestamp() - 30 * 86400
    os.utime(restored, (long_ago, long_ago))
    stats = ScanStats()
    got = scanned(tmp_path, Filter(since=since), stats=stats)
    expected = reference([restored, new], Filter(since=since))
    assert any(row in expected for row in reference([restored], Filter(since=since)))
    assert got == expected
    assert stats.files == 2 and stats.files_skipped == 0


def _lines_bytes(file: Path) -> bytes:
    return b"\n".join(_lines(file)) + b"\n"


def test_parse_time_relative_and_absolute() -> None:
    now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    assert parse_time("12h", now=now) == datetime(2026, 1, 10, 0, tzinfo=UTC)
    assert parse_time("2w", now=now) == datetime(2025, 12, 27, 12, tzinfo=UTC)
    assert parse_time("30m", now=now) == datetime(2026, 1, 10, 11, 30, tzinfo=UTC)
    assert parse_time("2026-01-02T10:00:00Z") == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert parse_time("2026-01-02T12:00:00+02:00") == datetime(2026, 1, 2, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("last tuesday")


def test_filter_refuses_values_it_cannot_match() -> None:
    with pytest.raises(ConfigError, match="outcome"):
        Filter(outcomes=("ok",))
    with pytest.raises(ConfigError, match="IP"):
        Filter(source_ips=("10.0.0.300",))
    with pytest.raises(ConfigError, match="kind"):
        Filter(kinds=("alarm",))


# -- the command ---------------------------------------------------------------------------


def test_cli_csv_and_count(trail, capsys) -> None:
    folder, files = trail
    flt = Filter(actions=("permission.*",), outcomes=("failure",))
    expected = reference(files, flt)
    assert main(["query", str(folder / "audit.jsonl*"), "--action", "permission.*",
                 "--outcome", "failure", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "timestamp,level,kind,user,action,outcome,source_ip,resource,message"
    assert len(out) == len(expected) + 1
    assert all(",permission.change,failure," in line for line in out[1:])
    assert main(["query", str(folder), "--action", "permission.*", "--outcome", "failure",
                 "--count"]) == 0
    assert capsys.readouterr().out.strip() == str(len(expected))


def test_cli_json_is_the_original_records(trail, capsys) -> None:
    folder, files = trail
    assert main(["query", str(folder), "--kind", "alert", "--format", "json",
                 "--limit", "3"]) == 0
    out = capsys.readouterr().out.encode().splitlines()
    assert out == reference(files, Filter(kinds=("alert",)))[:3]


def test_cli_table_is_aligned(trail, capsys) -> None:
    folder, _ = trail
    assert main(["query", str(folder), "--user", "alice", "--format", "table",
                 "--columns", "timestamp,user,action"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIMESTAMP", "USER", "ACTION"]
    starts = [lines[0].index("USER"), lines[0].index("ACTION")]
    for line in lines[2:]:
        assert line[starts[0]:].startswith("alice")
        assert line[starts[1] - 2:starts[1]] == "  "


def test_cli_bad_input_is_one_line_and_exit_2(trail, capsys) -> None:
    folder, _ = trail
    assert main(["query", str(folder), "--since", "whenever"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a time" in err[0]
    assert main(["query", str(folder / "nothing*.jsonl")]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["query", str(folder), "--columns", "timestamp,nope", "--format", "csv"]) == 2
    assert "unknown column" in capsys.readouterr().err
