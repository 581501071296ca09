from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.errors import ConfigError, SourceError
from analyzer.integrity import (
    GENESIS_HASH,
    ChainHasher,
    Problem,
    canonical_bytes,
    checkpoint_path,
    key_id,
    read_checkpoints,
    verify_log,
)
from tests.conftest import write_sample_log

N = 20


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_link_is_standard_hmac_sha256(key):
    # Anyone can re-verify a log with stock tools: the link is plain HMAC over prev || \n || record.
    canonical = b'{"a":1}'
    expected = hmac.new(key, GENESIS_HASH.encode() + b"\n" + canonical, hashlib.sha256).hexdigest()
    assert ChainHasher(key).link(GENESIS_HASH, canonical) == expected
    assert ChainHasher(None).link(GENESIS_HASH, canonical) == hashlib.sha256(
        GENESIS_HASH.encode() + b"\n" + canonical).hexdigest()


def test_canonical_encoding_ignores_key_order_and_the_hash_itself():
    a = {"b": 1, "event": {"hash": "x", "action": "y"}, "a": "é"}
    b = {"a": "é", "event": {"action": "y"}, "b": 1}
    assert canonical_bytes(a) == canonical_bytes(b) == '{"a":"é","b":1,"event":{"action":"y"}}'.encode()


def test_intact_log_verifies(sample_log, key):
    report = verify_log(sample_log, key=key)
    assert report.ok and report.records == N and report.head_sequence == N


def test_keyed_log_does_not_verify_with_another_key(sample_log):
    report = verify_log(sample_log, key=b"wrong-integrity-key")
    # the chain names its key (issue 14): a wrong key is said to be one, at the first record
    assert not report.ok and report.problem is Problem.KEY_MISMATCH and report.line == 1
    assert key_id(b"wrong-integrity-key") in report.detail


# -- tampering, chosen by hypothesis --------------------------------------------------------

def _rechain_unkeyed(doc: dict, prev: str) -> dict:
    doc["event"].pop("hash", None)
    doc["event"]["hash"] = ChainHasher(None).link(prev, canonical_bytes(doc))
    return doc


def _flip_byte(lines, i):
    line = bytearray(lines[i])
    # change one character of the message value, keeping the JSON valid
    pos = line.index(b'"message":"') + len(b'"message":"')
    line[pos] = ord("X") if line[pos] != ord("X") else ord("Y")
    lines[i] = bytes(line)
    return lines, Problem.CHANGED, i + 1


def _delete(lines, i):
    del lines[i]
    return lines, Problem.MISSING, i + 1


def _insert(lines, i):
    # a forged record with a valid-looking *unkeyed* hash, claiming the next sequence
    doc = orjson.loads(lines[i])
    prev = orjson.loads(lines[i - 1])["event"]["hash"] if i else GENESIS_HASH
    doc["user"] = {"name": "mallory"}
    forged = _rechain_unkeyed(doc, prev)
    lines.insert(i, orjson.dumps(forged) + b"\n")
    return lines, Problem.INSERTED, i + 1


def _swap(lines, i):
    j = i + 1
    lines[i], lines[j] = lines[j], lines[i]
    return lines, Problem.REORDERED, i + 1


def _resign(lines, i):
    doc = orjson.loads(lines[i])
    doc["event"].pop("hash")
    prev = orjson.loads(lines[i - 1])["event"]["hash"] if i else GENESIS_HASH
    doc["event"]["hash"] = ChainHasher(b"attacker key").link(prev, canonical_bytes(doc))
    lines[i] = orjson.dumps(doc) + b"\n"
    return lines, Problem.CHANGED, i + 1


MUTATIONS = {"flip": _flip_byte, "delete": _delete, "insert": _insert, "swap": _swap,
             "resign": _resign}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(mutation=st.sampled_from(sorted(MUTATIONS)), index=st.integers(0, N - 2))
def test_every_tampering_is_caught_and_located(tmp_path, key, mutation, index):
    # hypothesis reuses tmp_path across examples: start each from a fresh log
    path = tmp_path / f"{mutation}-{index}.jsonl"
    path.unlink(missing_ok=True)
    checkpoint_path(path).unlink(missing_ok=True)
    log = write_sample_log(path, key=key, n=N)
    lines, problem, line_number = MUTATIONS[mutation](lines_of(log), index)
    log.write_bytes(b"".join(lines))
    report = verify_log(log, key=key)
    assert not report.ok
    assert report.problem is problem
    assert report.line == line_number
    assert report.records == index  # everything before the tampering still verifies


def test_truncated_tail_is_caught_with_a_checkpoint(sample_log, key):
    checkpoints = read_checkpoints(checkpoint_path(sample_log))
    assert checkpoints[-1].sequence == N
    lines = lines_of(sample_log)
    sample_log.write_bytes(b"".join(lines[:-3]))
    assert verify_log(sample_log, key=key).ok  # without a checkpoint it cannot be seen
    report = verify_log(sample_log, key=key, checkpoint=checkpoints[-1])
    assert not report.ok and report.problem is Problem.TRUNCATED
    assert "ends at sequence 17" in report.detail and f"sequence {N}" in report.detail


def test_rewritten_log_does_not_match_the_checkpoint(tmp_path):
    # An unkeyed log rewritten wholesale with a consistent chain still contradicts its checkpoint.
    log = write_sample_log(tmp_path / "a.jsonl", key=None)
    checkpoint = read_checkpoints(checkpoint_path(log))[-1]
    lines = lines_of(log)
    prev = GENESIS_HASH
    rewritten = []
    for raw in lines:
        doc = orjson.loads(raw)
        doc["message"] = "nothing to see"
        doc = _rechain_unkeyed(doc, prev)
        prev = doc["event"]["hash"]
        rewritten.append(orjson.dumps(doc) + b"\n")
    log.write_bytes(b"".join(rewritten))
    report = verify_log(log, checkpoint=checkpoint)
    assert not report.ok and "checkpoint" in report.detail


def test_bad_json_and_torn_lines_are_named(sample_log, key):
    lines = lines_of(sample_log)
    lines[4] = b'{"not": json\n'
    sample_log.write_bytes(b"".join(lines))
    report = verify_log(sample_log, key=key)
    assert report.problem is Problem.BAD_JSON and report.line == 5
    sample_log.write_bytes(b"".join(lines_of(sample_log)[:4]) + b'{"@timestamp": "20')
    report = verify_log(sample_log, key=key)
    assert report.problem is Problem.BAD_JSON and "torn" in report.detail


def test_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        verify_log(tmp_path / "nope.jsonl")
    with pytest.raises(SourceError, match="directory"):
        verify_log(tmp_path)


@pytest.mark.parametrize("weak", [b"short-key", b"\0" * 32, b"a" * 40])
def test_weak_integrity_and_model_keys_are_refused(tmp_path, weak):
    """Issue 14 item 12: a key an attacker could guess forges chains and models."""
    from analyzer.errors import ModelLoadError
    from analyzer.logger import AuditLogger
    from analyzer.persistence import save_model

    with pytest.raises(ConfigError, match="bytes|repeated"):
        AuditLogger(tmp_path / "a.jsonl", key=weak)
    with pytest.raises(ModelLoadError, match="bytes|repeated"):
        save_model({"w": 1}, tmp_path / "m.joblib", key=weak)


def test_a_key_file_in_a_folder_others_can_write_is_refused(tmp_path, capsys):
    from analyzer.cli import main

    folder = tmp_path / "shared"
    folder.mkdir()
    key = folder / "audit.key"
    key.write_text("a-perfectly-good-key-0123456789")
    key.chmod(0o600)
    folder.chmod(0o777)
    assert main(["log", "--action", "a", "--log", str(tmp_path / "l.jsonl"),
                 "--key-file", str(key)]) == 2
    assert "folder others can write" in capsys.readouterr().err
