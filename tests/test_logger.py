from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import orjson
import pytest

from analyzer.errors import IntegrityError, LogWriteError, SchemaError
from analyzer.integrity import verify_log
from analyzer.logger import AuditHandler, AuditLogger, log_audit_event, setup_audit_logger


def records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_logged_event_has_ecs_fields_and_the_callers_location(log_path, key):
    fields = dict(user="bob", resource="models/llm-7b", outcome="success",
                  source_ip="10.1.2.3", country="DE", bytes=1234)
    with AuditLogger(log_path, service="inference-api", key=key) as audit:
        line = sys._getframe().f_lineno + 1
        event_id = audit.log("model.download", **fields)
    (rec,) = records(log_path)
    assert rec["event"]["id"] == event_id
    assert rec["event"]["action"] == "model.download"
    assert rec["event"]["outcome"] == "success"
    assert rec["event"]["kind"] == "event"
    assert rec["event"]["sequence"] == 1 and len(rec["event"]["hash"]) == 64
    assert rec["@timestamp"].endswith("Z") and len(rec["@timestamp"]) == 27
    assert rec["user"]["name"] == "bob" and rec["resource"] == {"name": "models/llm-7b",
                                                               "bytes": 1234}
    assert rec["source"] == {"ip": "10.1.2.3", "geo": {"country_iso_code": "DE"}}
    assert rec["service"]["name"] == "inference-api"
    assert rec["process"]["pid"] > 0 and rec["host"]["name"]
    origin = rec["log"]["origin"]
    assert origin["file"]["name"] == "test_logger.py"
    assert origin["function"] == "test_logged_event_has_ecs_fields_and_the_callers_location"
    assert origin["file"]["line"] == line


def test_level_helpers_report_their_callers_location_too(log_path):
    with AuditLogger(log_path) as audit:
        audit.critical("permission.change", user="eve", resource="iam/admins",
                       outcome="failure", message="denied")
    (rec,) = records(log_path)
    assert rec["log"]["level"] == "critical"
    assert rec["log"]["origin"]["function"] == "test_level_helpers_report_their_callers_location_too"
    assert rec["event"]["category"] == ["iam"]


def test_min_level_filters(log_path):
    with AuditLogger(log_path, min_level="warning") as audit:
        assert audit.info("login", user="a") is None
        assert audit.error("login", user="a") is not None
    assert [r["log"]["level"] for r in records(log_path)] == ["error"]


def test_explicit_timestamp_is_kept_for_imports(log_path):
    with AuditLogger(log_path) as audit:
        audit.log("login", timestamp="2020-02-03T04:05:06+01:00")
    assert records(log_path)[0]["@timestamp"] == "2020-02-03T03:05:06.000000Z"


def test_bad_values_are_refused_not_written(log_path):
    with AuditLogger(log_path) as audit:
        with pytest.raises(SchemaError, match="source.ip"):
            audit.log("login", source_ip="300.1.1.1")
        with pytest.raises(SchemaError, match="outcome"):
            audit.log("login", outcome="perhaps")
        with pytest.raises(SchemaError, match="category"):
            audit.log("login", category="mystery")
    assert log_path.read_bytes() == b""


def test_restart_continues_one_chain(log_path, key):
    for round_ in range(3):
        with AuditLogger(log_path, key=key) as audit:
            for i in range(5):
                audit.log("login", user=f"u{round_}{i}")
    report = verify_log(log_path, key=key)
    assert report.ok and report.records == 15
    assert [r["event"]["sequence"] for r in records(log_path)] == list(range(1, 16))


@pytest.mark.parametrize("durability", ["flush", "batch", "fsync"])
def test_two_threads_one_unbroken_chain(log_path, key, durability):
    with AuditLogger(log_path, key=key, durability=durability, batch_records=7) as audit:
        def work(name):
            for i in range(300):
                audit.log("dataset.read", user=name, resource=f"d{i}")
        threads = [threading.Thread(target=work, args=(n,)) for n in ("t1", "t2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report = verify_log(log_path, key=key)
    assert report.ok and report.records == 600


def test_two_loggers_on_one_file_never_fork_the_chain(log_path, key):
    # Two writers (as two processes would be) interleave appends through the file lock.
    a = AuditLogger(log_path, key=key, durability="flush")
    b = AuditLogger(log_path, key=key, durability="flush")
    for i in range(50):
        (a if i % 2 else b).log("login", user=f"u{i}")
    a.close()
    b.close()
    assert verify_log(log_path, key=key).records == 50


def test_flush_policy_writes_before_returning(log_path):
    audit = AuditLogger(log_path, durability="flush")
    audit.log("login", user="a")
    assert len(records(log_path)) == 1
    audit.close()


def test_batch_policy_writes_within_its_window(log_path):
    audit = AuditLogger(log_path, durability="batch", batch_records=1000, batch_ms=20)
    audit.log("login", user="a")
    done = threading.Event()
    for _ in range(200):  # the background flusher writes within ~20 ms; allow generous time
        if log_path.read_bytes():
            done.set()
            break
        done.wait(0.01)
    assert done.is_set()
    audit.close()


def test_torn_last_line_is_set_aside_and_recorded(log_path, key):
    with AuditLogger(log_path, key=key) as audit:
        audit.log("login", user="a")
        audit.log("login", user="b")
    with log_path.open("ab") as f:
        f.write(b'{"@timestamp":"2026-01-01T00:00:00.000000Z","event":{"act')  # a crash mid-write
    with AuditLogger(log_path, key=key) as audit:
        assert audit.recovered_torn is not None
        torn = audit.recovered_torn
        audit.log("login", user="c")
    assert torn.read_bytes().startswith(b'{"@timestamp"')
    report = verify_log(log_path, key=key)
    assert report.ok and report.records == 4
    recovery = records(log_path)[2]
    assert recovery["event"]["action"] == "audit.recovery"
    assert recovery["log"]["level"] == "warning" and torn.name in recovery["message"]


def test_refuses_to_chain_onto_a_corrupt_last_record(log_path):
    log_path.write_bytes(b'{"not": "a chained record"}\n')
    with pytest.raises(IntegrityError, match="refusing to continue"):
        AuditLogger(log_path)


def test_closed_logger_refuses_writes(log_path):
    audit = AuditLogger(log_path)
    audit.close()
    audit.close()  # idempotent
    with pytest.raises(LogWriteError, match="closed"):
        audit.log("login")


def test_logging_handler_maps_records_and_extra(log_path, key):
    audit = AuditLogger(log_path, key=key)
    logger = logging.getLogger("test.audit.handler")
    logger.setLevel(logging.DEBUG)
    handler = AuditHandler(audit)
    logger.addHandler(handler)
    try:
        logger.warning("blocked %s", "eve", extra={"action": "login", "user": "eve",
                                                   "outcome": "failure", "source_ip": "10.9.9.9"})
        logger.info("plain message")
    finally:
        logger.removeHandler(handler)
        handler.close()
    first, second = records(log_path)
    assert first["event"]["action"] == "login" and first["log"]["level"] == "warning"
    assert first["message"] == "blocked eve" and first["user"]["name"] == "eve"
    assert first["source"]["ip"] == "10.9.9.9" and first["event"]["outcome"] == "failure"
    assert first["log"]["origin"]["file"]["name"] == "test_logger.py"
    assert first["log"]["logger"] == "test.audit.handler"
    assert second["event"]["action"] == "log.test.audit.handler"
    assert verify_log(log_path, key=key).ok


def test_seed_api_writes_verifiable_structured_events(tmp_path):
    path = tmp_path / "seed.log"
    logger = setup_audit_logger(str(path))
    assert setup_audit_logger(str(path)) is logger and len(logger.handlers) == 1
    log_audit_event(logger, "model_access", {"user": "alice", "ip": "10.0.0.1",
                                             "model": "gpt-x", "status": "success"})
    for h in logger.handlers:
        h.flush()
    (rec,) = records(path)
    assert rec["event"]["action"] == "model_access"
    assert rec["user"]["name"] == "alice" and rec["source"]["ip"] == "10.0.0.1"
    assert rec["event"]["outcome"] == "success"
    assert rec["analyzer"]["details"] == {"model": "gpt-x"}
    assert rec["log"]["origin"]["function"] == "test_seed_api_writes_verifiable_structured_events"
    assert verify_log(path).ok
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def test_a_forked_child_writes_its_own_pid_and_never_forks_the_chain(log_path, key):
    import os
    audit = AuditLogger(log_path, key=key, durability="batch")
    audit.log("login", user="parent-before-fork")  # queued, not yet written
    pid = os.fork()
    if pid == 0:  # child: its own descriptor and lock; the parent's queue is not its to write
        try:
            for i in range(20):
                audit.log("dataset.read", user="child", resource=f"d{i}")
            audit.close()
        finally:
            os._exit(0)
    for i in range(20):
        audit.log("dataset.read", user="parent", resource=f"d{i}")
    os.waitpid(pid, 0)
    audit.close()
    recs = records(log_path)
    assert verify_log(log_path, key=key).records == 41
    pids = {r["user"]["name"]: r["process"]["pid"] for r in recs}
    assert pids["child"] == pid and pids["parent"] == os.getpid()
    assert sum(r["user"]["name"] == "parent-before-fork" for r in recs) == 1


# -- rotation at the size promised -------------------------------------------------------

def _series_records(log: Path) -> list[tuple[Path, dict]]:
    from analyzer.series import rotated_series

    return [(file, doc) for file in rotated_series(log) for doc in records(file)]


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "encrypted"])
def test_a_batch_crossing_rotate_bytes_is_cut_into_two_files(log_path, key, sealed):
    from analyzer.integrity import verify_series
    from analyzer.series import rotated_series

    limit = 20_000
    options = {"encryption_key": bytes(range(32))} if sealed else {}
    # one batch: nothing is written before flush() (a 10-minute window, never reached)
    with AuditLogger(log_path, key=key, rotate_bytes=limit, batch_records=10_000,
                     batch_ms=600_000, **options) as audit:
        ids = [audit.log("dataset.read", user="ann", resource=f"datasets/d{i}",
                         message=f"read {i}") for i in range(10)]
        audit.flush()
        assert len(rotated_series(log_path)) == 1 and log_path.stat().st_size < limit / 2
        # a batch that takes the file to about one and a half times the limit
        more = int(1.5 * limit / (log_path.stat().st_size / 10))
        ids += [audit.log("dataset.read", user="ann", resource=f"datasets/d{i}",
                          message=f"read {i}") for i in range(10, 10 + more)]
        audit.flush()  # the batch crosses the limit: part of it opens the next file
    files = rotated_series(log_path)
    assert len(files) == 2 and files[-1] == log_path
    sizes = [f.stat().st_size for f in files]
    assert max(sizes) <= limit < sum(sizes)
    assert sizes[0] > limit - 2_000  # filled up to the record that would cross, not before
    written = _series_records(log_path)
    events = [doc["event"]["id"] for _, doc in written if doc["event"]["action"] == "dataset.read"]
    assert events == ids  # nothing lost, nothing twice, in order
    assert [doc["event"]["sequence"] for _, doc in written] == list(range(1, len(written) + 1))
    opening = records(files[1])[0]
    assert opening["event"]["action"] == "audit.rotation"
    assert opening["analyzer"]["chain"]["previous"]["file"] == files[0].name
    report = verify_series(files, key=key)
    assert report.ok and report.records == len(written), report.summary()


def test_a_record_larger_than_rotate_bytes_is_alone_in_its_file(log_path, key):
    from analyzer.integrity import verify_series
    from analyzer.series import rotated_series

    limit = 2_000
    with AuditLogger(log_path, key=key, rotate_bytes=limit, batch_records=10_000,
                     batch_ms=600_000) as audit:
        for i in range(6):
            audit.log("login", user="ann", message=f"small {i}")
        audit.log("dataset.export", user="ann", message="x" * 3 * limit)
        for i in range(6):
            audit.log("login", user="ann", message=f"small {i + 6}")
    files = rotated_series(log_path)
    big = [f for f in files if f.stat().st_size > limit]
    assert len(big) == 1
    actions = [doc["event"]["action"] for doc in records(big[0])]
    assert actions == ["audit.rotation", "dataset.export"]  # its file's one record
    messages = [doc["message"] for _, doc in _series_records(log_path)
                if doc["event"]["action"] != "audit.rotation"]
    assert messages == [*(f"small {i}" for i in range(6)), "x" * 3 * limit,
                        *(f"small {i}" for i in range(6, 12))]
    report = verify_series(files, key=key)
    assert report.ok, report.summary()


def test_records_logged_about_a_rotation_stay_in_the_file_it_opened(log_path):
    """An attachment that logs each rotation (as retention logs its deletions) would rotate
    a small file again and again; its records go into the new file instead."""
    from analyzer.integrity import verify_series
    from analyzer.series import rotated_series

    class Notes:
        def attach(self, audit):
            pass

        def rotated(self, audit):
            audit.log("rotation.noted", message="n" * 200)

        def detach(self, audit):
            pass

    limit = 1_500
    with AuditLogger(log_path, durability="flush", rotate_bytes=limit,
                     attach=[Notes()]) as audit:
        for i in range(40):
            audit.log("login", user=f"u{i}", message="z" * 30)
    files = rotated_series(log_path)
    assert len(files) > 5
    for file in files:
        lines = file.read_bytes().splitlines(keepends=True)
        notes = [line for line in lines if b'"rotation.noted"' in line]
        assert len(notes) <= 1 and file.stat().st_size - sum(map(len, notes)) <= limit
    assert sum(b'"rotation.noted"' in f.read_bytes() for f in files) == len(files) - 1
    assert verify_series(files).ok
