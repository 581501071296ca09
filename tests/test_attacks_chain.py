"""Issue 14, items 3-6: attacks on the chain's header, rotation, failed writes and edges.

Each test reproduces an attack from the adversarial review and shows it refused, caught or
harmless.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import orjson
import pytest

from analyzer.cli import main
from analyzer.errors import IntegrityError, LogWriteError
from analyzer.integrity import (
    ChainHasher,
    Problem,
    canonical_bytes,
    checkpoint_path,
    key_id,
    lock_path,
    read_checkpoints,
    verify_log,
    verify_series,
)
from analyzer.logger import AuditLogger
from analyzer.retention import apply_retention, rotated_files
from analyzer.sources import expand_paths
from tests.conftest import write_sample_log


def records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def rechain(path: Path, hasher: ChainHasher, edit=None) -> None:
    """Rewrite every record of ``path`` (after ``edit``) and recompute its chain, as an
    attacker with write access (and ``hasher``'s key, if any) would."""
    prev, out = "0" * 64, []
    for doc in records(path):
        if edit is not None:
            edit(doc)
        doc["event"].pop("hash", None)
        doc["event"]["hash"] = prev = hasher.link(prev, canonical_bytes(doc))
        out.append(orjson.dumps(doc))
    path.write_bytes(b"\n".join(out) + b"\n")


def series_of(log: Path) -> list[Path]:
    return [*rotated_files(log), log]


# -- item 3: the chain names its algorithm and key ------------------------------------------

def test_the_first_record_and_every_rotation_record_declare_algorithm_and_key_id(tmp_path, key):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key, durability="flush", rotate_bytes=1500) as audit:
        for i in range(12):
            audit.log("login", user=f"u{i}")
    files = series_of(log)
    assert len(files) >= 3
    for file in files:
        chain = records(file)[0]["analyzer"]["chain"]
        assert chain["algorithm"] == "hmac-sha256" and chain["key_id"] == key_id(key)
    # the id names the key without revealing it: not a prefix of the key, nor its plain hash
    assert key.hex()[:16] != key_id(key) and len(key_id(key)) == 16
    assert verify_series(files, key=key).ok


def test_a_writer_refuses_a_keyed_chain_without_its_key_or_with_another(log_path, key):
    write_sample_log(log_path, key=key, n=3)
    before = log_path.read_bytes()
    with pytest.raises(IntegrityError, match=r"keyed \(hmac-sha256, key id "
                                             + key_id(key)) as caught:
        AuditLogger(log_path)
    assert str(log_path) in str(caught.value)
    with pytest.raises(IntegrityError, match="key id " + key_id(b"another-key-0123456789")):
        AuditLogger(log_path, key=b"another-key-0123456789")
    assert log_path.read_bytes() == before  # nothing was appended
    assert verify_log(log_path, key=key).ok


def test_a_writer_refuses_an_unkeyed_chain_with_a_key(log_path, key):
    write_sample_log(log_path, key=None, n=3)
    with pytest.raises(IntegrityError, match=r"unkeyed \(sha256\)"):
        AuditLogger(log_path, key=key)
    assert verify_log(log_path).ok


@pytest.mark.parametrize("argv", [
    ["log", "--action", "login", "--user", "mallory", "--log", "{log}"],
    ["feedback", "abc-1", "--verdict", "benign", "--log", "{log}"],
    ["retention", "{log}", "--keep-files", "0", "--not-shipped"],
])
def test_writing_commands_refuse_a_keyed_trail_without_the_key(tmp_path, key, capsys, argv):
    log = write_sample_log(tmp_path / "audit.jsonl", key=key, n=3)
    before = log.read_bytes()
    assert main([a.replace("{log}", str(log)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "keyed (hmac-sha256" in err and len(err.strip().splitlines()) == 1
    assert log.read_bytes() == before


@pytest.mark.parametrize("command", [
    ["log"], ["ingest"], ["score"], ["feedback"], ["retention"], ["ship"], ["watch"],
    ["models", "promote"], ["models", "rollback"],
])
def test_every_command_that_writes_a_trail_takes_the_key(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert "--key-file" in capsys.readouterr().out


def test_verify_without_the_key_of_a_keyed_chain_says_so_and_fails(tmp_path, key, capsys):
    log = write_sample_log(tmp_path / "audit.jsonl", key=key, n=3)
    report = verify_log(log)
    assert not report.ok and report.problem is Problem.KEY_NEEDED
    assert main(["verify", str(log)]) == 2
    err = capsys.readouterr().err
    assert f"this chain is keyed (hmac-sha256, key id {key_id(key)}): pass --key-file" in err


def test_a_chain_rewritten_with_plain_sha256_does_not_verify(tmp_path, key, key_file, capsys):
    log = write_sample_log(tmp_path / "audit.jsonl", key=key, n=5)

    def forge(doc):  # the attacker changes a user and drops the declaration
        doc["user"]["name"] = "nobody"
        doc.get("analyzer", {}).pop("chain", None)
        if doc.get("analyzer") == {}:
            del doc["analyzer"]

    rechain(log, ChainHasher(None), forge)
    report = verify_log(log, key=key)
    assert not report.ok and report.line == 1
    assert main(["verify", str(log), "--key-file", str(key_file), "--no-checkpoint"]) == 1
    # keeping the declaration does not help: without the key verify refuses to say intact
    write_sample_log(log2 := tmp_path / "b.jsonl", key=key, n=5)
    rechain(log2, ChainHasher(None))
    assert verify_log(log2).problem is Problem.KEY_NEEDED
    assert verify_log(log2, key=key).problem is Problem.CHANGED
    # declaring sha256 is a declaration the key contradicts
    rechain(log2, ChainHasher(None), lambda d: d.get("analyzer", {}).get("chain", {}).update(
        {"algorithm": "sha256", "key_id": None}))
    report = verify_log(log2, key=key)
    assert not report.ok and report.problem is Problem.KEY_MISMATCH


def test_a_legacy_chain_without_a_declaration_still_verifies_and_continues(log_path, key):
    write_sample_log(log_path, key=key, n=4)
    rechain(log_path, ChainHasher(key), lambda d: d.get("analyzer", {}).pop("chain", None))
    assert "chain" not in records(log_path)[0].get("analyzer", {})
    assert verify_log(log_path, key=key).ok
    with AuditLogger(log_path, key=key) as audit:
        audit.log("login", user="dave")
    assert verify_log(log_path, key=key).ok


def test_the_declaration_stays_in_clear_in_an_encrypted_trail(tmp_path, key):
    pytest.importorskip("cryptography")
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key, encryption_key=b"e" * 32, durability="flush",
                     rotate_bytes=1500) as audit:
        for i in range(10):
            audit.log("login", user=f"person-{i:03d}")
    files = series_of(log)
    assert len(files) >= 2
    first, marker = records(files[0])[0], records(files[1])[0]
    assert first["analyzer"]["chain"]["key_id"] == key_id(key)
    # (a name long enough that base64 ciphertext cannot hold it by chance)
    assert "encrypted" in first["analyzer"] and "person-000" not in files[0].read_text()
    assert marker["analyzer"]["chain"]["previous"]["file"] == files[0].name
    assert verify_series(files, key=key).ok and verify_log(files[1], key=key).ok


# -- item 4: rotation is safe with several writers ------------------------------------------

def _writer(log: Path, key: bytes, n: int) -> None:
    with AuditLogger(log, key=key, rotate_bytes=20_000, batch_records=16) as audit:
        for i in range(n):
            audit.log("dataset.read", user=f"p{os.getpid()}", resource=f"d{i % 10}")
            if i % 10 == 0:
                time.sleep(0.01)  # paced, so that retention runs many times among rotations


def _retention(log: Path, key: bytes, stop: Path) -> None:
    # as from cron beside the application, only more often
    while not stop.exists():
        with AuditLogger(log, key=key, name="retention") as audit:
            gone = apply_retention(log, audit=audit, keep_files=3, destinations=()).deleted
        with (stop.parent / "runs").open("a") as runs:
            runs.write(f"{len(gone)}\n")
        time.sleep(0.25)


def _fork(target, *args) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            target(*args)
            code = 0
        finally:
            os._exit(code)
    return pid


@pytest.mark.slow
def test_four_writers_rotating_beside_retention_keep_one_chain(tmp_path, key):
    """Four processes rotating every ~50 records, retention every 0.25 s, a few seconds; the
    same run on the writer that locked the log's own inode broke the chain within 1 s."""
    log, stop = tmp_path / "audit.jsonl", tmp_path / "stop"
    writers = [_fork(_writer, log, key, 4000) for _ in range(4)]
    cleaner = _fork(_retention, log, key, stop)
    for pid in writers:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    stop.touch()
    assert os.waitstatus_to_exitcode(os.waitpid(cleaner, 0)[1]) == 0
    files = series_of(log)
    all_records = [r for f in files for r in records(f)]
    deleted_per_run = [int(n) for n in (tmp_path / "runs").read_text().split()]
    assert sum(1 for n in deleted_per_run if n) >= 3, \
        "retention deleted in too few runs among the rotations to exercise the race"
    report = verify_series(files, key=key, checkpoint=read_checkpoints(checkpoint_path(log)))
    assert report.ok, report.summary()
    assert report.notes == ()  # it starts where retention's recorded deletion ends
    sequences = [r["event"]["sequence"] for r in all_records]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert lock_path(log).exists() and lock_path(log).stat().st_mode & 0o777 == 0o600
    assert lock_path(log) not in expand_paths(str(tmp_path / "audit.jsonl*"))


def test_a_writer_holding_the_renamed_file_continues_after_the_rotation(tmp_path, key):
    log = tmp_path / "audit.jsonl"
    late = AuditLogger(log, key=key, durability="flush")  # opened before the rotation
    late.log("login", user="late-1")
    with AuditLogger(log, key=key, durability="flush", rotate_bytes=1200) as audit:
        for i in range(8):
            audit.log("login", user=f"u{i}")
    assert rotated_files(log)
    late.log("login", user="late-2")  # its descriptor is the renamed file: it must follow
    late.close()
    files = series_of(log)
    assert verify_series(files, key=key).ok
    assert records(log)[-1]["user"]["name"] == "late-2"


# -- item 5: a failed or short write leaves no fragment --------------------------------------

def test_a_write_that_hits_the_file_size_limit_leaves_no_fragment(tmp_path, key):
    log = tmp_path / "audit.jsonl"
    write_sample_log(log, key=key, n=3)
    limit = log.stat().st_size + 700  # room for one record and part of the next
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            audit = AuditLogger(log, key=key, batch_records=1000)
            for i in range(4):
                audit.log("dataset.read", user="u", message="m" * 300, resource=f"r{i}")
            try:
                audit.flush()
                code = 4  # the limit did not bite
            except LogWriteError:
                code = 5 if log.stat().st_size == limit - 700 else 6
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            audit.close()  # the retried batch
            code = code if code != 5 else 0
        finally:
            os._exit(code)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert status != 4, "RLIMIT_FSIZE did not limit the write here"
    assert status != 6, "the failed write left a fragment in the file"
    assert status == 0
    report = verify_log(log, key=key, checkpoint=read_checkpoints(checkpoint_path(log)))
    assert report.ok, report.summary()
    assert [r.get("resource", {}).get("name") for r in records(log)][-4:] == [
        "r0", "r1", "r2", "r3"]


# -- item 6: edges of a series and of the file ------------------------------------------------

def test_a_valid_last_record_without_its_newline_is_completed_not_set_aside(log_path, key):
    write_sample_log(log_path, key=key, n=4)
    log_path.write_bytes(log_path.read_bytes().rstrip(b"\n"))
    with AuditLogger(log_path, key=key) as audit:
        audit.log("login", user="next")
        assert audit.recovered_torn is None
    assert not list(log_path.parent.glob("*.torn-*"))
    report = verify_log(log_path, key=key, checkpoint=read_checkpoints(checkpoint_path(log_path)))
    assert report.ok and report.records == 5


def test_a_record_replaced_at_the_end_is_caught_by_an_older_checkpoint(log_path, key, key_file):
    write_sample_log(log_path, key=key, n=4)  # checkpoint at sequence 4 on close
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(lines[:-1]))  # the last record goes...
    with AuditLogger(log_path, key=key) as audit:  # ...and another is chained in its place
        audit.log("login", user="mallory")
        audit.log("login", user="mallory")  # the newest checkpoint (6) matches the new chain
    report = verify_log(log_path, key=key, checkpoint=read_checkpoints(checkpoint_path(log_path)))
    assert not report.ok and report.problem is Problem.CHANGED and report.sequence == 4
    assert main(["verify", str(log_path), "--key-file", str(key_file)]) == 1


def _rotated(tmp_path: Path, key: bytes) -> Path:
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key, durability="flush", rotate_bytes=1500) as audit:
        for i in range(20):
            audit.log("login", user=f"u{i}")
    assert len(rotated_files(log)) >= 4
    return log


def test_deleting_the_oldest_rotated_files_off_the_record_is_noted(tmp_path, key, key_file,
                                                                   capsys):
    log = _rotated(tmp_path, key)
    for old in rotated_files(log)[:2]:
        old.unlink()
    report = verify_series(series_of(log), key=key)
    assert report.ok and len(report.notes) == 1 and "starts mid-chain" in report.notes[0]
    assert main(["verify", str(tmp_path / "audit.jsonl*"), "--key-file", str(key_file)]) == 0
    assert "note: the series starts mid-chain" in capsys.readouterr().out


def test_deletions_recorded_by_retention_are_not_noted(tmp_path, key):
    log = _rotated(tmp_path, key)
    with AuditLogger(log, key=key) as audit:
        gone = apply_retention(log, audit=audit, keep_files=1, destinations=()).deleted
    assert gone
    report = verify_series(series_of(log), key=key)
    assert report.ok and report.notes == ()


def test_deleting_the_active_file_is_noted_or_caught(tmp_path, key, key_file, capsys):
    log = _rotated(tmp_path, key)
    pattern = str(tmp_path / "audit.jsonl*")
    log.unlink()  # its checkpoints remain: they hold the series to account
    assert main(["verify", pattern, "--key-file", str(key_file)]) == 1
    assert "truncated" in capsys.readouterr().out
    checkpoint_path(log).unlink()  # both gone: only a note (an offsite checkpoint catches it)
    assert main(["verify", pattern, "--key-file", str(key_file)]) == 0
    assert "without its active file audit.jsonl" in capsys.readouterr().out
