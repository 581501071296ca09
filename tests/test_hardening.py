"""Issue 9: rotation, many writers, crash safety."""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from pathlib import Path

import orjson
import pytest

from analyzer.cli import main
from analyzer.integrity import Problem, verify_log, verify_series
from analyzer.logger import AuditLogger


def rotated_series(directory: Path, key: bytes, *, files: int = 10, per_file: int = 30) -> list[Path]:
    log = directory / "audit.jsonl"
    with AuditLogger(log, key=key, durability="flush", rotate_bytes=per_file * 420) as audit:
        while len(list(directory.glob("audit.jsonl.*T*"))) < files - 1:
            audit.log("dataset.read", user="alice", resource="d", message="x" * 100)
    return [*sorted(directory.glob("audit.jsonl.*T*")), log]


def test_rotation_continues_one_chain_across_ten_files(tmp_path, key):
    series = rotated_series(tmp_path, key)
    assert len(series) == 10
    report = verify_series(series, key=key)
    assert report.ok, report.summary()
    total = sum(len(p.read_bytes().splitlines()) for p in series)
    assert report.records == total
    # every file after the first opens with a record naming the file before it
    for before, after in itertools.pairwise(series):
        first = orjson.loads(after.read_bytes().splitlines()[0])
        assert first["event"]["action"] == "audit.rotation"
        assert first["analyzer"]["chain"]["previous"]["file"] == before.name
    # a single rotated file verifies on its own, from where it says the chain came from
    assert verify_log(series[4], key=key).ok


def test_a_missing_middle_file_is_caught_and_named(tmp_path, key):
    series = rotated_series(tmp_path, key)
    series[4].unlink()
    remaining = series[:4] + series[5:]
    report = verify_series(remaining, key=key)
    assert not report.ok and report.problem is Problem.MISSING
    assert series[3].name in report.detail and series[5].name in report.detail


def test_a_truncated_middle_file_is_caught(tmp_path, key):
    series = rotated_series(tmp_path, key)
    lines = series[4].read_bytes().splitlines(keepends=True)
    series[4].write_bytes(b"".join(lines[:-2]))
    report = verify_series(series, key=key)
    assert not report.ok and report.problem is Problem.MISSING
    assert series[4].name in report.detail


def test_swapped_file_contents_are_caught_as_reordered(tmp_path, key):
    series = rotated_series(tmp_path, key)
    a, b = series[3].read_bytes(), series[6].read_bytes()
    series[3].write_bytes(b)
    series[6].write_bytes(a)
    report = verify_series(series, key=key)
    assert not report.ok and report.problem is Problem.REORDERED


def test_the_cli_verifies_a_glob_of_rotated_files(tmp_path, key_file, capsys):
    rotated_series(tmp_path, key_file.read_bytes().strip())
    assert main(["verify", str(tmp_path / "audit.jsonl*"), "--key-file", str(key_file)]) == 0
    assert "10 files" in capsys.readouterr().out


def test_restart_after_rotation_keeps_the_chain(tmp_path, key):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key, rotate_bytes=2000, durability="flush") as audit:
        for i in range(20):
            audit.log("login", user=f"u{i}")
    with AuditLogger(log, key=key, rotate_bytes=2000, durability="flush") as audit:
        for i in range(20):
            audit.log("login", user=f"v{i}")
    series = [*sorted(tmp_path.glob("audit.jsonl.*T*")), log]
    assert verify_series(series, key=key).ok


def _writer(path: Path, key: bytes, n: int) -> None:
    with AuditLogger(path, key=key) as audit:  # default batch durability
        for i in range(n):
            audit.log("dataset.read", user=f"p{os.getpid()}", resource=f"d{i % 10}")


def test_eight_processes_append_one_unbroken_chain(tmp_path, key):
    log = tmp_path / "audit.jsonl"
    pids = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            try:
                _writer(log, key, 5000)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.splitlines()
    assert len(lines) == 40_000
    records = [orjson.loads(line) for line in lines]  # no partial or interleaved lines
    assert [r["event"]["sequence"] for r in records] == list(range(1, 40_001))
    assert verify_log(log, key=key).ok


@pytest.mark.slow
def test_every_acknowledged_fsync_write_survives_a_kill(tmp_path, key):
    """200 trials: a child writes with fsync and reports each acknowledged event id over a
    pipe; the parent kills it at a random moment. Every acknowledged record is in the file,
    the next writer verifies and sets any torn tail aside."""
    rng = random.Random(20261128)
    for trial in range(200):
        log = tmp_path / f"crash-{trial}.jsonl"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                with AuditLogger(log, key=key, durability="fsync") as audit:
                    while True:
                        event_id = audit.log("login", user="u", message="m" * rng.randint(0, 200))
                        os.write(write_end, event_id.encode() + b"\n")
            finally:
                os._exit(1)
        os.close(write_end)
        time.sleep(rng.uniform(0.001, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acknowledged = set()
        with os.fdopen(read_end, "rb") as pipe:
            acknowledged = {x for x in pipe.read().split(b"\n") if x}
        # The next writer opens the log: a torn tail is moved aside, the chain continues.
        with AuditLogger(log, key=key) as audit:
            torn = audit.recovered_torn
            audit.log("login", user="after-crash")
        report = verify_log(log, key=key)
        assert report.ok, (trial, report.summary())
        on_disk = {orjson.loads(line)["event"]["id"].encode()
                   for line in log.read_bytes().splitlines()}
        assert acknowledged <= on_disk, (trial, len(acknowledged - on_disk))
        if torn is not None:
            assert torn.read_bytes() and not torn.read_bytes().endswith(b"\n")


def test_a_full_disk_raises_the_projects_error_and_the_next_write_continues_the_chain(
        tmp_path, key, monkeypatch):
    import errno

    from analyzer.errors import LogWriteError

    log = tmp_path / "audit.jsonl"
    audit = AuditLogger(log, key=key, durability="flush")
    audit.log("login", user="before")
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(LogWriteError, match=rf"{log}.*No space left"):
        audit.log("login", user="while-full")
    monkeypatch.setattr(os, "write", real_write)
    audit.log("login", user="after")  # the queued record goes first, then this one
    audit.close()
    assert verify_log(log, key=key).ok
    users = [orjson.loads(x)["user"]["name"] for x in log.read_bytes().splitlines()]
    assert users == ["before", "while-full", "after"]


def test_an_unwritable_log_is_one_clear_error(tmp_path, monkeypatch):
    import errno

    from analyzer.errors import LogWriteError

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)  # as root, chmod would not stop us
    with pytest.raises(LogWriteError, match="audit.jsonl: cannot open audit log: Permission"):
        AuditLogger(tmp_path / "audit.jsonl")
