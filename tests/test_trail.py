"""The logger only writes; what acts on its files attaches to it (analyzer.logger.Attachment),
and analyzer.trail.AuditTrail puts a logger, shipping and retention together."""

from __future__ import annotations

import threading

import orjson
import pytest

from analyzer.errors import AnalyzerError, ConfigError
from analyzer.follow import load_cursor
from analyzer.integrity import verify_series
from analyzer.logger import AuditLogger
from analyzer.retention import RetentionPolicy
from analyzer.series import cursor_path, rotated_files, rotated_series
from analyzer.sinks.shipper import SendResult
from analyzer.trail import AuditTrail


class Recorder:
    """An attachment that notes what it is told, and whether the logger's lock was free."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def _note(self, what: str, audit: AuditLogger) -> None:
        free = audit._lock.acquire(blocking=False)
        if free:
            audit._lock.release()
        self.calls.append(what if free else f"{what} (lock held)")

    def attach(self, audit: AuditLogger) -> None:
        self._note("attach", audit)

    def rotated(self, audit: AuditLogger) -> None:
        self._note("rotated", audit)
        audit.log("attachment.saw.rotation")  # an attachment may write through the logger
        if self.fail:
            raise AnalyzerError("this attachment fails")

    def detach(self, audit: AuditLogger) -> None:
        self._note("detach", audit)


def test_an_attachment_is_told_of_rotations_and_close_outside_the_lock(tmp_path) -> None:
    recorder = Recorder()
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, durability="flush", rotate_bytes=1500, attach=[recorder]) as audit:
        for i in range(30):
            audit.log("login", user=f"u{i}", message="z" * 30)
    rotations = len(rotated_files(log))
    assert rotations >= 2
    assert recorder.calls == ["attach", *["rotated"] * rotations, "detach"]
    assert verify_series(rotated_series(log)).ok


def test_a_failing_attachment_never_stops_the_application_logging(tmp_path, caplog) -> None:
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, durability="flush", rotate_bytes=1500) as audit:
        audit.attach(Recorder(fail=True))
        ids = [audit.log("login", user=f"u{i}", message="z" * 30) for i in range(30)]
    assert all(ids) and len(rotated_files(log)) >= 2
    assert "this attachment fails" in caplog.text


def test_audit_trail_ships_and_applies_retention(tmp_path) -> None:
    class Collect:
        name = "collect"

        def __init__(self) -> None:
            self.ids: list[str] = []
            self.lock = threading.Lock()

        def send(self, batch):
            with self.lock:
                self.ids.extend(r.event_id for r in batch)
            return SendResult()

        def close(self) -> None:
            pass

    def shipped(ids: list[str | None]) -> bool:
        stop = threading.Event()
        for _ in range(1000):  # shipping is asynchronous: wait (bounded) for it to catch up
            with sink.lock:
                if set(ids) <= set(sink.ids):
                    return True
            stop.wait(0.02)
        return False

    sink = Collect()
    log = tmp_path / "audit.jsonl"
    with AuditTrail(log, ship=[sink], retention=RetentionPolicy(keep_files=1),
                    ship_options={"poll_interval": 0.01}, durability="flush",
                    rotate_bytes=3000) as audit:
        assert isinstance(audit, AuditLogger)
        ids = [audit.log("dataset.read", user=f"u{i}", message="x" * 40) for i in range(60)]
        # retention ran at each rotation, before the destination had anything: nothing went
        assert shipped(ids) and len(rotated_files(log)) >= 3
        cursor = cursor_path(log, "collect")
        for _ in range(500):
            if cursor.exists() and load_cursor(cursor).inode == log.stat().st_ino:
                break
            threading.Event().wait(0.02)
        ids += [audit.log("dataset.read", user=f"v{i}", message="x" * 40) for i in range(60)]
        assert shipped(ids)
    # the files shipped by then were deleted at the next rotations, on the record, and no
    # record was deleted before the destination had it (all ids arrived above)
    records = [orjson.loads(line) for f in rotated_series(log) for line in f.read_bytes()
               .splitlines()]
    deletions = [r for r in records if r["event"]["action"] == "audit.retention.delete"]
    assert deletions
    assert verify_series(rotated_series(log)).ok


def test_audit_trail_refuses_two_destinations_of_one_name_before_opening(tmp_path) -> None:
    class Named:
        name = "same"

        def send(self, batch):
            return SendResult()

        def close(self) -> None:
            pass

    with pytest.raises(ConfigError, match="distinct names"):
        AuditTrail(tmp_path / "audit.jsonl", ship=[Named(), Named()])
    assert not (tmp_path / "audit.jsonl").exists()
