"""Issue 14, items 1, 2, 8 and 9: decisions on parsed fields, repeated keys, what the logger
accepts, and memory on hostile files. Each test reproduces an attack of the review."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.alerts import existing_alert_ids
from analyzer.errors import SchemaError, SourceError
from analyzer.events import MAX_LINE_BYTES, AuditEvent
from analyzer.feedback import read_alerts
from analyzer.integrity import Problem, verify_log
from analyzer.logger import AuditLogger
from analyzer.query import Filter, ScanStats, scan
from analyzer.report import read_recorded_alerts
from analyzer.sources import jsonl

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
#: the environment of a subprocess that imports this checkout's analyzer
_HERE = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}


def _alert(user: str, hour: int) -> AuditEvent:
    start = T0 + timedelta(hours=hour)
    return AuditEvent("detector.alert", timestamp=start, kind="alert", level="critical",
                      user=user, start=start, end=start + timedelta(hours=1), risk_score=90.0,
                      message=f"unusual activity of {user}",
                      analyzer={"alert": {"entity_type": "user", "entity": user}})


def _trail(path: Path, key: bytes) -> list[bytes]:
    with AuditLogger(path, key=key) as audit:
        for i in range(6):
            audit.log("login", user=f"u{i % 3 + 1}", outcome="success", resource="db",
                      level="critical" if i == 4 else "info",
                      timestamp=T0 + timedelta(minutes=i))
        audit.log_event(_alert("u3", 1))
        audit.log_event(_alert("u2", 2))
    return path.read_bytes().splitlines()


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


# -- item 1: a JSON-equivalent rewrite ---------------------------------------------------------

@pytest.mark.parametrize(("old", "new"), [
    (b'"kind":"alert"', b'"kind":"\\u0061lert"'),
    (b'"level":"critical"', b'"level":"\\u0063ritical"'),
    (b'"name":"u3"', b'"name":"\\u00753"'),
    (b'"kind":"alert"', b'"kind": "alert"'),
])
def test_an_escaped_or_spaced_rewrite_is_not_canonical(tmp_path: Path, key: bytes,
                                                       old: bytes, new: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _trail(path, key)
    assert verify_log(path, key=key).ok
    index = next(i for i, line in enumerate(lines) if old in line)
    lines[index] = lines[index].replace(old, new, 1)
    _rewrite(path, lines)
    report = verify_log(path, key=key)
    assert not report.ok
    assert report.problem is Problem.NOT_CANONICAL
    assert report.line == index + 1
    assert "not canonical" in report.summary()


def test_escaped_alerts_are_still_alerts_everywhere(tmp_path: Path, key: bytes) -> None:
    """The review's attack: with "\\u0061lert" the report said "Alerts: 0", train
    --exclude-alerts left nothing out and query --user/--level missed the records."""
    path = tmp_path / "audit.jsonl"
    lines = [line.replace(b'"kind":"alert"', b'"kind":"\\u0061lert"')
             .replace(b'"name":"u3"', b'"name":"\\u00753"')
             .replace(b'"level":"critical"', b'"level":"\\u0063ritical"')
             for line in _trail(path, key)]
    _rewrite(path, lines)
    assert {a.entity for a in read_recorded_alerts(path)} == {"u2", "u3"}
    assert set(read_alerts(path)["entity"]) == {"u2", "u3"}
    assert len(existing_alert_ids(path)) == 2
    result = jsonl.read(path)
    assert result.skipped_alerts == 2 and set(result.frame["kind"]) == {"event"}
    users = [u for b in scan(path, Filter(users=("u3",), kinds=("alert",))) for u in
             b.table.column("user").to_pylist()]
    assert users == ["u3"]
    critical = sum(b.table.num_rows for b in scan(path, Filter(levels=("critical",))))
    assert critical == 3  # one login and two alerts


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


def _respell(value: object, rng: random.Random) -> str:
    """Some JSON spelling of ``value``: escapes, spaces and key order chosen at random."""
    space = rng.choice(["", " ", "\t"])
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        inner = f",{space}".join(f"{_respell(k, rng)}:{space}{_respell(v, rng)}"
                                 for k, v in items)
        return "{" + space + inner + space + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(_respell(v, rng) for v in value) + "]"
    if isinstance(value, str):
        out = []
        for ch in value:
            if ord(ch) < 0x10000 and (rng.random() < 0.3 or ch in '"\\' or ord(ch) < 0x20):
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    return json.dumps(value)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.fixed_dictionaries({
    "user": st.sampled_from(["u1", "u2", "u3", "alice"]),
    "kind": st.sampled_from(["event", "alert"]),
    "level": st.sampled_from(["info", "warning", "critical"]),
    "outcome": st.sampled_from(["success", "failure"]),
    "ip": st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    "message": _TEXT,
}), min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_filtered_query_equals_parse_everything(tmp_path: Path, records: list[dict],
                                                seed: int) -> None:
    """A pre-filter only saves work: for any JSON spelling of the records, each filter's
    result is the records the parsed fields select."""
    rng = random.Random(seed)
    lines = []
    for i, rec in enumerate(records):
        doc = {"@timestamp": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
               "event": {"action": "login", "kind": rec["kind"], "outcome": rec["outcome"],
                         "sequence": i + 1},
               "log": {"level": rec["level"]}, "message": rec["message"],
               "source": {"ip": rec["ip"]}, "user": {"name": rec["user"]}}
        lines.append(_respell(doc, rng) if rng.random() < 0.7 else json.dumps(doc))
    path = tmp_path / f"trail-{seed}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    filters = [Filter(users=("u3",)), Filter(kinds=("alert",)), Filter(levels=("critical",)),
               Filter(outcomes=("failure",)), Filter(source_ips=("10.0.0.2",)),
               Filter(users=("u3", "alice"), levels=("critical",))]
    for flt in filters:
        got = [s for b in scan(path, flt) for s in b.table.column("sequence").to_pylist()]
        want = [i + 1 for i, rec in enumerate(records) if
                (not flt.users or rec["user"] in flt.users)
                and (not flt.kinds or rec["kind"] in flt.kinds)
                and (not flt.levels or rec["level"] in flt.levels)
                and (not flt.outcomes or rec["outcome"] in flt.outcomes)
                and (not flt.source_ips or rec["ip"] in flt.source_ips)]
        assert got == want, flt


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=_TEXT.filter(bool), message=_TEXT, resource=_TEXT.filter(bool),
       extra=st.dictionaries(_TEXT, st.one_of(_TEXT, st.integers(-2**63, 2**63 - 1),
                                              st.floats(allow_nan=False), st.booleans()),
                             max_size=3))
def test_the_logger_writes_exactly_the_canonical_line(tmp_path: Path, key: bytes, user: str,
                                                      message: str, resource: str,
                                                      extra: dict) -> None:
    path = tmp_path / f"c{abs(hash((user, message, resource)))}.jsonl"
    with AuditLogger(path, key=key) as audit:
        audit.log("login", user=user, message=message, resource=resource, extra=extra,
                  roles=[user], bytes=7, source_ip="192.0.2.1", country="FR")
        audit.log_event(_alert(user, 0))
    assert verify_log(path, key=key).ok


# -- item 2: repeated keys ---------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "where"), [
    (b'"user":{"name":"u3"}', b'"user":{"name":"mallory"},"user":{"name":"u3"}', "user"),
    (b'"user":{"name":"u3"}', b'"user":{"name":"mallory","name":"u3"}', "user.name"),
])
def test_repeated_keys_are_refused_and_set_aside(tmp_path: Path, key: bytes, old: bytes,
                                                 new: bytes, where: str) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _trail(path, key)
    index = next(i for i, line in enumerate(lines) if old in line and b'"login"' in line)
    lines[index] = lines[index].replace(old, new, 1)
    _rewrite(path, lines)

    report = verify_log(path, key=key)
    assert report.problem is Problem.NOT_CANONICAL and report.line == index + 1
    assert f"duplicate key {where}" in report.detail

    result = jsonl.read(path)
    assert [(r.line, r.reason) for r in result.rejected] == [
        (index + 1, f"duplicate key {where}")]
    assert result.records == len(result.frame) + len(result.rejected) + result.skipped_alerts
    stats = ScanStats()
    users = [u for b in scan(path, stats=stats) for u in b.table.column("user").to_pylist()]
    assert "mallory" not in users and len(users) == len(lines) - 1
    assert [r.describe() for r in stats.rejected] == [
        f"{path}:{index + 1}: duplicate key {where}"]


def test_a_repeated_key_the_reader_does_not_read_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"@timestamp":"2026-01-05T09:00:00Z","event":{"action":"login"},'
                    '"zz":1,"zz":2,"user":{"name":"u1"}}\n')
    result = jsonl.read(path)
    assert list(result.frame["user"]) == ["u1"] and not result.rejected


def test_repeated_keys_in_the_cli_commands_are_one_line_not_a_traceback(
        tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _trail(path, key)
    lines[0] = lines[0].replace(b'"user":{"name":"u1"}',
                                b'"user":{"name":"mallory"},"user":{"name":"u1"}', 1)
    _rewrite(path, lines)
    for command in (["query", str(path), "--user", "u1"], ["report", str(path)],
                    ["ingest", str(path), "--log", str(tmp_path / "copy.jsonl")]):
        done = subprocess.run([sys.executable, "-m", "analyzer", *command], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=_HERE)
        assert "Traceback" not in done.stderr, command
        assert done.returncode in (0, 1), (command, done.stderr)
        assert "duplicate key user" in done.stderr + done.stdout or command[0] == "report"


# -- item 8: the logger only writes what its readers accept ------------------------------------

@pytest.mark.parametrize(("fields", "named"), [
    ({"bytes": 2**64}, "resource.bytes"),
    ({"bytes": -1}, "resource.bytes"),
    ({"user": "u", "roles": [1, 2]}, "user.roles"),
    ({"timestamp": "9999-01-01T00:00:00Z"}, "@timestamp"),
    ({"message": "x" * (10 << 20)}, "message"),
    ({"extra": {"blob": "y" * (600 << 10)}}, "analyzer"),
    ({"resource": 5}, "resource.name"),
    ({"session": ["s"]}, "session.id"),
])
def test_the_logger_refuses_what_readers_would_not_read_back(
        tmp_path: Path, key: bytes, fields: dict, named: str) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLogger(path, key=key) as audit:
        with pytest.raises(SchemaError, match=rf"^{named}:"):
            audit.log("login", **fields)
        audit.log("login", user="u", resource="r", bytes=2**63 - 1, roles="admin",
                  timestamp="2262-04-01T00:00:00Z", message="m" * (400 << 10))
    assert verify_log(path, key=key).ok
    result = jsonl.read(path)
    assert not result.rejected
    assert list(result.frame["bytes"]) == [2**63 - 1] and list(result.frame["roles"]) == ["admin"]


def test_an_encrypted_record_is_held_to_the_limit_after_sealing(tmp_path: Path,
                                                                key: bytes) -> None:
    pytest.importorskip("cryptography")
    with AuditLogger(tmp_path / "a.jsonl", key=key, encryption_key=os.urandom(32)) as audit, \
            pytest.raises(SchemaError, match="over the limit"):
        audit.log("login", message="m" * (450 << 10))  # fits in clear, not sealed


def test_audit_events_refuse_values_readers_reject() -> None:
    with pytest.raises(SchemaError, match="user.roles"):
        AuditEvent("login", timestamp=T0, roles=[1, 2])
    with pytest.raises(SchemaError, match="resource.bytes"):
        AuditEvent("login", timestamp=T0, bytes=-5)
    with pytest.raises(SchemaError, match="@timestamp"):
        AuditEvent("login", timestamp="9999-12-31T00:00:00Z")


# -- item 9: bounded memory on hostile files ---------------------------------------------------

_PEAK = """
import resource, sys
from analyzer.integrity import verify_log
from analyzer.query import scan
from analyzer.sources import jsonl
path, what = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if what == "verify":
    print(verify_log(path).summary(), file=sys.stderr)
elif what == "read":
    print(jsonl.read(path).rejected[0].reason, file=sys.stderr)
elif what == "query":
    print(sum(b.table.num_rows for b in scan(path)), file=sys.stderr)
else:  # another reader, by its format name
    from analyzer.sources import read_events
    result = read_events(path, format=what)
    print(len(result.frame), result.rejected[0].reason, file=sys.stderr)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize("what", ["verify", "read", "query"])
def test_a_file_without_newline_is_read_in_bounded_memory(tmp_path: Path, what: str) -> None:
    size = 256 << 20  # far above the line limit and the readers' blocks (32 MiB)
    path = tmp_path / "hostile.jsonl"
    with path.open("wb") as out:
        out.write(b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"x"}}\n')
        chunk = b"A" * (1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path), what], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=_HERE)
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.strip())
    assert grown < size // 2, f"{what} grew by {grown:,} bytes on a {size:,}-byte line"
    assert "line" in done.stderr if what != "query" else done.stderr.strip() == "1"


_FIRST_RECORDS = {
    "windows": b'{"EventID": 4624, "Channel": "Security", "@timestamp": '
               b'"2026-01-01T00:00:00Z", "TargetUserName": "alice", "IpAddress": "10.0.0.9"}',
    "k8s": b'{"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", '
           b'"verb": "get", "user": {"username": "alice"}, "requestReceivedTimestamp": '
           b'"2026-01-01T00:00:00Z", "objectRef": {"resource": "secrets"}}',
    "cloudtrail": b'{"eventTime": "2026-01-01T00:00:00Z", "eventSource": "s3.amazonaws.com", '
                  b'"eventName": "GetObject", "userIdentity": {"type": "IAMUser", '
                  b'"userName": "alice"}}',
    "csv": b"timestamp,user,action,outcome,source_ip,resource\n"
           b"2026-01-01T00:00:00Z,alice,login,success,10.0.0.9,x",
}


@pytest.mark.parametrize("fmt", sorted(_FIRST_RECORDS))
def test_every_reader_reads_a_hostile_line_in_bounded_memory(tmp_path: Path, fmt: str) -> None:
    # the readers of JSON documents allow one long line (a whole-file document) but not
    # without bound; the CSV reader iterates lines: none may hold a 256 MiB line
    size = 256 << 20
    path = tmp_path / "hostile.log"
    with path.open("wb") as out:
        out.write(_FIRST_RECORDS[fmt] + b"\n")
        chunk = b"A" * (1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path), fmt], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=_HERE)
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.strip())
    assert grown < size // 2, f"{fmt} grew by {grown:,} bytes on a {size:,}-byte line"
    assert done.stderr.startswith("1 line too long"), done.stderr


def test_fifos_and_devices_are_refused_with_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/zero")):
        for read in (jsonl.read, verify_log, lambda p: list(scan(p))):
            with pytest.raises(SourceError, match=f"^{target}: is (a FIFO|a device|not a)"):
                read(target)


def test_an_over_long_line_is_set_aside_and_the_next_one_read(tmp_path: Path,
                                                             key: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _trail(path, key)
    lines.insert(2, b"x" * (3 * MAX_LINE_BYTES))
    _rewrite(path, lines)
    result = jsonl.read(path, include_alerts=True)
    assert [r.line for r in result.rejected] == [3]
    assert "line too long" in result.rejected[0].reason
    assert len(result.frame) == len(lines) - 1
    report = verify_log(path, key=key)
    assert report.line == 3 and "longer than the limit" in report.detail


@pytest.mark.parametrize(("fmt", "record"), [
    ("windows", b'{"EventID": 4624, "Channel": "Security", "@timestamp": '
                b'"2026-01-01T00:00:00Z", "TargetUserName": "mallory", "IpAddress": '
                b'"10.0.0.9", "LogonType": "3", "TargetUserName": "u3"}'),
    ("k8s", b'{"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": '
            b'"ResponseComplete", "verb": "get", "user": {"username": "mallory"}, '
            b'"requestReceivedTimestamp": "2026-01-01T00:00:00Z", "objectRef": '
            b'{"resource": "secrets"}, "user": {"username": "u3"}}'),
])
def test_other_json_readers_set_a_repeated_key_aside_too(tmp_path, fmt, record):
    # which value counts is up to the parser: such a record means different things to
    # different readers, so it is set aside with its line, not read one way silently
    from analyzer.sources import read_events

    path = tmp_path / "in.json"
    path.write_bytes(record + b"\n")
    result = read_events(path, format=fmt)
    assert len(result.frame) == 0
    (rejected,) = result.rejected
    assert rejected.line == 1 and rejected.reason.startswith("duplicate key ")
