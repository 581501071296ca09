"""The shipper: cursor, batching, rotation, retry, dead letter, and not slowing log()."""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from pathlib import Path

import orjson
import pytest

from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.sinks.background import BackgroundShipper
from analyzer.sinks.elasticsearch import ElasticsearchSink
from analyzer.sinks.shipper import (
    Cursor,
    DeliveryError,
    LogTail,
    SendResult,
    Shipper,
    cursor_path,
    dead_letter_path,
    is_alert,
    load_cursor,
    save_cursor,
)


class Memory:
    """A destination in memory; can be down, or refuse some records for good."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.ids: list[str] = []
        self.batches: list[int] = []
        self.down = False
        self.refuse: set[str] = set()
        self.closed = False

    def send(self, batch):
        if self.down:
            raise DeliveryError(f"{self.name}: connection refused")
        self.batches.append(len(batch))
        rejected = tuple((i, "refused") for i, r in enumerate(batch)
                         if r.doc.get("user", {}).get("name") in self.refuse)
        self.ids += [r.event_id for i, r in enumerate(batch)
                     if i not in {j for j, _ in rejected}]
        return SendResult(rejected=rejected)

    def close(self):
        self.closed = True


def append(path: Path, n: int, **fields) -> list[str]:
    with AuditLogger(path, service="test") as audit:
        return [audit.log("login", user=fields.get("user", f"u{i}"), outcome="success")
                for i in range(n)]


def test_ships_from_the_cursor_and_resumes_where_it_stopped(log_path):
    first = append(log_path, 10)
    sink = Memory()
    assert Shipper(log_path, sink).run().delivered == 10
    cursor = load_cursor(cursor_path(log_path, "memory"))
    assert cursor.offset == log_path.stat().st_size
    assert cursor.inode == log_path.stat().st_ino
    assert cursor.sequence == 10 and cursor.event_id == first[-1]
    second = append(log_path, 5)
    Shipper(log_path, sink).run()
    assert sink.ids == first + second  # in order, nothing twice


def test_batches_stay_within_the_limits(log_path):
    append(log_path, 230)
    sink = Memory()
    Shipper(log_path, sink, batch_records=100).run()
    assert sink.batches == [100, 100, 30]
    sink = Memory("small")
    line = len(log_path.read_bytes().splitlines()[0]) + 1
    Shipper(log_path, sink, batch_bytes=line * 7 + 3).run()
    assert max(sink.batches) == 7 and sum(sink.batches) == 230


def test_an_incomplete_last_line_waits_for_its_newline(log_path):
    ids = append(log_path, 3)
    with open(log_path, "ab") as handle:
        handle.write(b'{"@timestamp":"2024-05-01T00:00:00Z","event":{"id":"half"')
    sink = Memory()
    Shipper(log_path, sink).run()
    assert sink.ids == ids
    with open(log_path, "ab") as handle:
        handle.write(b',"action":"x"}}\n')
    Shipper(log_path, sink).run()
    assert sink.ids == [*ids, "half"]


def test_outage_is_retried_and_a_stop_during_backoff_keeps_the_cursor(log_path):
    append(log_path, 5)
    sink = Memory()
    sink.down = True
    shipper = Shipper(log_path, sink, backoff_initial=0.01, backoff_max=0.05)
    thread = threading.Thread(target=shipper.run, kwargs={"follow": True})
    thread.start()
    deadline = time.monotonic() + 10
    while shipper.stats().retried < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    shipper.stop()
    thread.join(5)
    stats = shipper.stats()
    assert stats.delivered == 0 and stats.retried >= 15
    assert "connection refused" in stats.last_error
    assert load_cursor(cursor_path(log_path, "memory")) is None
    sink.down = False
    assert Shipper(log_path, sink).run().delivered == 5


def test_give_up_after_raises_when_nothing_gets_through(log_path):
    append(log_path, 2)
    sink = Memory()
    sink.down = True
    with pytest.raises(DeliveryError, match="no delivery"):
        Shipper(log_path, sink, backoff_initial=0.01, backoff_max=0.01).run(give_up_after=0.1)


def test_rejected_and_malformed_records_go_to_the_dead_letter_file(log_path):
    append(log_path, 4, user="mallory")
    ids = append(log_path, 2, user="alice")
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join([*lines[:4], b"this is not json\n", *lines[4:]]))
    sink = Memory()
    sink.refuse = {"mallory"}
    with AuditLogger(log_path, service="test") as audit:
        stats = Shipper(log_path, sink, audit=audit).run()
    assert stats.rejected == 5 and sink.ids == ids
    dead = [orjson.loads(x) for x in dead_letter_path(log_path, "memory").read_bytes()
            .splitlines()]
    assert sorted(d["reason"] for d in dead)[-1] == "refused"
    assert any(d["record"] == "this is not json" for d in dead)
    report = orjson.loads(log_path.read_bytes().splitlines()[-1])
    assert report["event"]["action"] == "ship.rejected"
    assert report["log"]["level"] == "error"


def test_the_filter_sends_alerts_only_and_still_moves_the_cursor(log_path):
    append(log_path, 3)
    from analyzer.events import AuditEvent
    with AuditLogger(log_path) as audit:
        alert = audit.log_event(AuditEvent("alert.anomaly", kind="alert", level="critical",
                                           user="eve", message="unusual",
                                           timestamp="2024-05-01T00:00:00Z"))
    sink = Memory()
    stats = Shipper(log_path, sink, select=is_alert).run()
    assert sink.ids == [alert] and stats.skipped == 3
    assert load_cursor(cursor_path(log_path, "memory")).offset == log_path.stat().st_size


def test_follows_rename_rotation_without_losing_the_old_files_tail(log_path):
    sink = Memory()
    shipper = Shipper(log_path, sink, poll_interval=0.01)
    first = append(log_path, 5)
    thread = threading.Thread(target=shipper.run, kwargs={"follow": True})
    thread.start()
    try:
        _wait(lambda: len(sink.ids) == 5)
        late = append(log_path, 3)  # lands in the file just before it is renamed
        log_path.rename(log_path.with_name("audit.jsonl.1"))
        fresh = append(log_path, 4)
        _wait(lambda: len(sink.ids) == 12)
    finally:
        shipper.stop()
        thread.join(5)
    assert sink.ids == first + late + fresh
    assert load_cursor(cursor_path(log_path, "memory")).inode == log_path.stat().st_ino


def test_finishes_a_file_rotated_while_it_was_not_running(log_path):
    sink = Memory()
    first = append(log_path, 5)
    Shipper(log_path, sink).run()
    more = append(log_path, 2)
    log_path.rename(log_path.with_name("audit.jsonl.1"))
    fresh = append(log_path, 3)
    Shipper(log_path, sink).run()
    assert sink.ids == first + more + fresh


def test_copy_truncate_rotation_restarts_at_the_beginning(log_path):
    sink = Memory()
    append(log_path, 5)
    Shipper(log_path, sink).run()
    os.truncate(log_path, 0)
    fresh = append(log_path, 2)  # shorter than the old cursor offset
    Shipper(log_path, sink).run()
    assert sink.ids[-2:] == fresh and len(sink.ids) == 7


def test_a_cursor_that_does_not_match_the_file_ships_again_rather_than_skip(log_path):
    ids = append(log_path, 4)
    save_cursor(cursor_path(log_path, "memory"),
                Cursor(offset=log_path.read_bytes().index(b"\n") + 1,
                       inode=log_path.stat().st_ino, event_id="someone-else"))
    sink = Memory()
    Shipper(log_path, sink).run()
    assert sink.ids == ids


def test_a_damaged_cursor_is_a_clear_error(log_path):
    append(log_path, 1)
    cursor_path(log_path, "memory").write_text("{not json")
    with pytest.raises(ConfigError, match="cursor"):
        Shipper(log_path, Memory()).run()


def test_tail_reads_a_line_longer_than_the_read_size(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a" * 100 + b"\n" + b"b\n")
    tail = LogTail(path)
    assert tail.read(10) == [(b"a" * 100, 101)]
    assert tail.read(10) == [(b"b", 103)]
    tail.close()


def test_background_shipper_ships_what_the_application_logs(log_path):
    sink = Memory()
    audit = AuditLogger(log_path, service="app")
    shipping = BackgroundShipper(log_path, [sink], audit=audit, poll_interval=0.01)
    shipping.start()
    ids = [audit.log("login", user="alice") for _ in range(50)]
    audit.flush()
    _wait(lambda: len(sink.ids) == 50)
    assert shipping.stop(timeout=5)
    audit.close()
    assert sink.ids == ids and sink.closed
    assert shipping.stats()[0].delivered == 50


def test_background_shipper_reports_a_destination_that_cannot_work(log_path):
    class Refusing(Memory):
        def send(self, batch):
            raise ConfigError("HTTP 401: credentials refused")

    audit = AuditLogger(log_path, service="app", durability="flush")
    audit.log("login", user="alice")
    shipping = BackgroundShipper(log_path, [Refusing("es")], audit=audit, poll_interval=0.01)
    shipping.start()
    _wait(lambda: b"ship.stopped" in log_path.read_bytes())
    shipping.stop()
    audit.close()
    line = next(x for x in log_path.read_bytes().splitlines() if b"ship.stopped" in x)
    assert orjson.loads(line)["log"]["level"] == "error"


def test_destination_names_must_differ(log_path):
    with pytest.raises(ConfigError):
        BackgroundShipper(log_path, [Memory("a"), Memory("a")])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(path: Path, n: int) -> list[int]:
    audit = _latencies.loggers[path]
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        audit.log("model.download", user="alice", resource="m/1", outcome="success",
                  source_ip="10.0.0.1", message=f"call {i}")
        out.append(time.perf_counter_ns() - t)
    return out


def test_log_latency_with_an_unreachable_destination_stays_close_to_no_shipping(tmp_path):
    """Median and p99 of log() with a background shipper whose destination refuses
    connections stay within 1.5x of no shipping. Runs are interleaved, so a machine that
    is busier during one part of the test affects both sides alike."""
    plain, shipped = tmp_path / "plain.jsonl", tmp_path / "shipped.jsonl"
    _latencies.loggers = {plain: AuditLogger(plain), shipped: AuditLogger(shipped)}
    sink = ElasticsearchSink(f"http://127.0.0.1:{_closed_port()}", timeout=1)
    shipping = BackgroundShipper(shipped, [sink], audit=_latencies.loggers[shipped],
                                 poll_interval=0.05, backoff_initial=0.05, backoff_max=0.5)
    shipping.start()
    try:
        _latencies(plain, 2000), _latencies(shipped, 2000)  # warm up caches on both
        off: list[int] = []
        on: list[int] = []
        for _ in range(8):
            off += _latencies(plain, 2500)
            on += _latencies(shipped, 2500)
        assert shipping.stats()[0].retried > 0  # the shipper really was trying meanwhile
    finally:
        shipping.stop()
        for audit in _latencies.loggers.values():
            audit.close()

    def p99(xs):
        return statistics.quantiles(xs, n=100)[98]

    assert statistics.median(on) <= 1.5 * statistics.median(off), \
        (statistics.median(on), statistics.median(off))
    assert p99(on) <= 1.5 * p99(off), (p99(on), p99(off))


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_audit_logger_ships_in_the_background_and_loses_nothing(tmp_path):
    """AuditTrail(ship=[...]): every record reaches the destination, including ones
    written while it was down, and log() never waits for it."""
    import threading

    from analyzer.sinks.shipper import DeliveryError, SendResult
    from analyzer.trail import AuditTrail

    class Flaky:
        name = "flaky"

        def __init__(self):
            self.down = True
            self.ids = []
            self.lock = threading.Lock()

        def send(self, batch):
            if self.down:
                raise DeliveryError("flaky: unreachable")
            with self.lock:
                self.ids.extend(r.event_id for r in batch)
            return SendResult()

        def close(self):
            pass

    sink = Flaky()
    log = tmp_path / "audit.jsonl"
    audit = AuditTrail(log, ship=[sink], batch_ms=20)
    ids = [audit.log("login", user=f"u{i}") for i in range(50)]
    sink.down = False
    ids += [audit.log("login", user=f"v{i}") for i in range(50)]
    audit.flush()
    deadline = threading.Event()
    for _ in range(300):
        with sink.lock:
            if set(ids) <= set(sink.ids):
                break
        deadline.wait(0.05)
    audit.close()
    assert set(ids) <= set(sink.ids)


def test_fields_read_from_the_line_head_agree_with_a_full_parse(log_path):
    """The shipper reads event.id, kind, sequence and @timestamp without parsing a line;
    for every shape the logger writes (plain, alerts, extras holding a nested ECS-looking
    document, odd strings) it must agree with parsing it."""
    from analyzer.events import AuditEvent
    from analyzer.sinks.shipper import read_head

    decoy = {"ecs": {"version": "1"}, "event": {"id": "decoy", "kind": "alert",
                                                "sequence": 999}, "host": {"name": "x"}}
    with AuditLogger(log_path, service="test") as audit:
        audit.log("login", user="bob", source_ip="10.0.0.1")
        audit.log("model.download", user='a "quoted" }{ user', message="x\ny",
                  extra={"original": decoy})
        audit.log_event(AuditEvent("alert.anomaly", kind="alert", level="critical",
                                   user="eve", message="unusual", risk_score=87.5,
                                   start="2024-05-01T00:00:00Z", end="2024-05-01T01:00:00Z",
                                   timestamp="2024-05-01T00:30:00Z",
                                   analyzer={"event": {"id": "decoy"}}))
    records = Shipper(log_path, Memory())._records(0, log_path.read_bytes())
    assert len(records) == 3
    for rec in records:
        doc = orjson.loads(rec.raw)
        assert read_head(rec.raw) is not None  # the fast path, not the fallback
        assert (rec.event_id, rec.kind, rec.sequence, rec.timestamp) == (
            doc["event"]["id"], doc["event"]["kind"], doc["event"]["sequence"],
            doc["@timestamp"])
        assert rec.doc == doc
    assert [is_alert(r) for r in records] == [False, False, True]


def test_cpu_share_must_be_a_share(log_path):
    with pytest.raises(ConfigError, match="cpu_share"):
        Shipper(log_path, Memory(), cpu_share=1.5)


def test_a_second_shipper_on_one_cursor_is_refused(log_path, capsys):
    """Issue 14 item 13: two shippers on one cursor delivered every record twice."""
    from analyzer.cli import main
    from analyzer.sinks.shipper import lock_cursor

    append(log_path, 5)
    sink = Memory()
    held = lock_cursor(cursor_path(log_path, sink.name))  # the first shipper, still running
    try:
        with pytest.raises(ConfigError, match="another shipper"):
            Shipper(log_path, sink).run()
        db = log_path.with_name("a.db")
        held_db = lock_cursor(cursor_path(log_path, "sqlite"))
        try:
            assert main(["ship", str(log_path), "--to", "sqlite", "--db", str(db),
                         "--once"]) == 2
        finally:
            os.close(held_db)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another shipper" in err
    finally:
        os.close(held)
    assert Shipper(log_path, sink).run().delivered == 5 and len(sink.ids) == 5


def test_tail_reads_every_generation_when_the_log_rotated_several_times_between_reads(tmp_path):
    # found by the metrics work: with two or more rotations between two reads, the tail
    # jumped from its drained file straight to the active one and lost the files between
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, durability="flush", rotate_bytes=2000) as audit:
        audit.log("login", user="u0")
        tail = LogTail(log)
        seen = [orjson.loads(line)["user"]["name"] for line, _ in tail.read(1 << 20)]
        for i in range(1, 60):  # several rotations before the tail reads again
            audit.log("login", user=f"u{i}")
    assert len(sorted(tmp_path.glob("audit.jsonl.2*"))) >= 3
    while batch := tail.read(1 << 20):
        seen += [orjson.loads(line).get("user", {}).get("name") for line, _ in batch]
    tail.close()
    assert [name for name in seen if name] == [f"u{i}" for i in range(60)]
