"""Issue 9: encryption at rest of each record's sensitive fields."""

from __future__ import annotations

import orjson
import pytest

pytest.importorskip("cryptography", reason="encryption needs the cryptography extra")

from analyzer.cli import main
from analyzer.errors import SchemaError
from analyzer.integrity import Problem, verify_log
from analyzer.logger import AuditLogger
from analyzer.sources import read_events

ENC = bytes(range(32))


@pytest.fixture
def encrypted_log(tmp_path, key):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key, encryption_key=ENC) as audit:
        audit.log("dataset.read", user="zelda-secret-user", resource="datasets/payroll-2026",
                  source_ip="198.51.100.77", country="NO", message="read the payroll", bytes=512)
        audit.log("login", user="yorick-secret-user", outcome="failure", source_ip="10.0.0.9")
    return log


def test_no_plaintext_of_sensitive_fields_on_disk(encrypted_log):
    raw = encrypted_log.read_bytes()
    for secret in (b"zelda-secret-user", b"payroll", b"198.51.100.77", b"yorick", b"read the payroll"):
        assert secret not in raw
    first = orjson.loads(raw.splitlines()[0])
    assert first["event"]["action"] == "dataset.read" and first["log"]["level"] == "info"
    assert first["analyzer"]["encrypted"]["alg"] == "A256GCM"


def test_verify_needs_only_the_integrity_key(encrypted_log, key):
    assert verify_log(encrypted_log, key=key).ok


def test_readers_decrypt_with_the_key_and_refuse_without(encrypted_log):
    frame = read_events(encrypted_log, decrypt_keys=(ENC,)).frame
    assert frame["user"].tolist() == ["zelda-secret-user", "yorick-secret-user"]
    assert frame["resource"].tolist()[0] == "datasets/payroll-2026"
    assert frame["source_ip"].tolist() == ["198.51.100.77", "10.0.0.9"]
    assert frame["country"].tolist()[0] == "NO" and frame["bytes"].tolist()[0] == 512
    assert frame["message"].tolist()[0] == "read the payroll"
    with pytest.raises(SchemaError, match="encrypted .key id"):
        read_events(encrypted_log)
    clear = read_events(encrypted_log, clear_only=True).frame
    assert clear["action"].tolist() == ["dataset.read", "login"] and set(clear["user"]) == {""}


def test_a_flipped_ciphertext_byte_is_caught_by_verify_and_by_decryption(encrypted_log, key):
    lines = encrypted_log.read_bytes().splitlines(keepends=True)
    doc = orjson.loads(lines[0])
    ct = doc["analyzer"]["encrypted"]["ct"]
    doc["analyzer"]["encrypted"]["ct"] = ("B" if ct[5] != "B" else "C").join((ct[:5], ct[6:]))
    lines[0] = orjson.dumps(doc) + b"\n"
    encrypted_log.write_bytes(b"".join(lines))
    report = verify_log(encrypted_log, key=key)
    assert report.problem is Problem.CHANGED and report.line == 1
    result = read_events(encrypted_log, decrypt_keys=(ENC,))
    assert len(result.frame) == 1
    assert result.rejected[0].line == 1 and "fail authentication" in result.rejected[0].reason


def test_cli_writes_and_scores_encrypted_logs_and_refuses_shared_key_files(tmp_path, capsys):
    enc = tmp_path / "enc.key"
    enc.write_text(ENC.hex())
    enc.chmod(0o644)
    log = tmp_path / "audit.jsonl"
    argv = ["log", "--action", "login", "--user", "ursula", "--log", str(log),
            "--encryption-key-file", str(enc)]
    assert main(argv) == 2 and "chmod 600" in capsys.readouterr().err
    enc.chmod(0o600)
    assert main(argv) == 0
    assert b"ursula" not in log.read_bytes()


def test_query_filters_on_sealed_fields_with_the_key_and_refuses_without(encrypted_log, tmp_path,
                                                                          capsys):
    from analyzer.query import Filter, scan

    def users(**kw):
        return [u for b in scan(encrypted_log, Filter(**kw.pop("flt", {})), **kw)
                for u in b.table.column("user").to_pylist()]

    assert users(flt={"users": ("zelda-secret-user",)}, decrypt_keys=(ENC,)) == [
        "zelda-secret-user"]
    record = next(scan(encrypted_log, Filter(resources=("datasets/*",)), decrypt_keys=(ENC,)))
    line = orjson.loads(record.table.column("record")[0].as_py())
    # the envelope is gone; only the chain's declaration (first record) stays under analyzer
    assert line["resource"]["name"] == "datasets/payroll-2026"
    assert set(line.get("analyzer", {})) <= {"chain"}
    with pytest.raises(SchemaError, match="encrypted"):
        users(flt={"users": ("zelda-secret-user",)})
    assert users(flt={"users": ("zelda-secret-user",)}, clear_only=True) == []
    enc = tmp_path / "enc.key"
    enc.write_text(ENC.hex())
    enc.chmod(0o600)
    assert main(["query", str(encrypted_log), "--user", "yorick-secret-user",
                 "--encryption-key-file", str(enc), "--format", "json"]) == 0
    assert "yorick-secret-user" in capsys.readouterr().out


def test_ship_delivers_encrypted_records_in_clear_with_the_key_only(encrypted_log, tmp_path,
                                                                     key_file, capsys):
    import sqlite3

    enc = tmp_path / "enc.key"
    enc.write_text(ENC.hex())
    enc.chmod(0o600)
    db = tmp_path / "audit.db"
    ship = ["ship", str(encrypted_log), "--to", "sqlite", "--db", str(db), "--once",
            "--key-file", str(key_file)]
    assert main(ship) == 2
    assert "records are encrypted at rest" in capsys.readouterr().err
    assert main([*ship, "--encryption-key-file", str(enc)]) == 0
    with sqlite3.connect(db) as con:
        names = sorted(r[0] for r in con.execute("SELECT user_name FROM audit_events"))
    assert names == ["yorick-secret-user", "zelda-secret-user"]


def test_watch_reads_encrypted_records_with_the_key(encrypted_log):
    import pandas as pd

    from analyzer.crypto import RecordCipher
    from analyzer.watch import Watcher

    seen: list[str] = []

    def scorer(events: pd.DataFrame) -> pd.DataFrame:
        seen.extend(events["user"].astype(str))
        return pd.DataFrame(columns=["entity_type", "entity", "window_start", "window_end",
                                     "score", "alert", "reasons"])

    watcher = Watcher(encrypted_log, score_windows=scorer, on_alert=lambda rows: None,
                      state_file=False, unseal=RecordCipher(keys=(ENC,)).unseal)
    watcher.poll()
    watcher.tick()
    assert sorted(set(seen)) == ["yorick-secret-user", "zelda-secret-user"]
