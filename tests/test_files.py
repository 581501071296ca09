"""Side files never follow links and get explicit modes (issue 14, item 10)."""

from __future__ import annotations

import os
import stat

import orjson
import pytest

from analyzer.errors import SourceError
from analyzer.files import atomic_write
from analyzer.integrity import checkpoint_path
from analyzer.logger import AuditLogger
from analyzer.persistence import save_model
from analyzer.sinks.shipper import Cursor, SendResult, Shipper, save_cursor
from analyzer.sources import Rejected, write_rejected

ATTACKER_LINE = b"ssh-ed25519 AAAA attacker@evil\n"


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim(tmp_path):
    """A file the attacker wants written (stands for ~/.ssh/authorized_keys)."""
    path = tmp_path / "authorized_keys"
    path.write_bytes(b"ssh-ed25519 AAAA owner@host\n")
    return path


def test_a_symlink_at_the_rejected_file_is_refused_not_followed(tmp_path, victim, capsys):
    from analyzer.cli import main

    data = tmp_path / "in.csv"
    data.write_text("timestamp,user,action,outcome,source_ip,resource\n"
                    "not a time,alice,login,success,10.0.0.1,x\n"
                    "2026-01-01T00:00:00Z,bob,login,success,10.0.0.2,y\n")
    (tmp_path / "in.csv.rejected").symlink_to(victim)
    before = victim.read_bytes()
    with pytest.raises(SourceError, match="symbolic link"):
        write_rejected([Rejected(str(data), 2, "bad time", ATTACKER_LINE)],
                       tmp_path / "in.csv.rejected")
    (tmp_path / "a.jsonl.rejected").symlink_to(victim)  # where ingest sets lines aside
    # a side file that cannot be written is a warning that names it, never a stop (#15.5),
    # and never a write through the link
    assert main(["ingest", str(data), "--log", str(tmp_path / "a.jsonl")]) == 0
    assert "is a symbolic link; refusing to write through it" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_rejected_lines_are_private(tmp_path):
    out = tmp_path / "x.rejected"
    write_rejected([Rejected("x", 1, "bad", b"raw")], out)
    assert mode(out) == 0o600


def test_the_log_and_its_checkpoints_refuse_symlinks(tmp_path, victim):
    before = victim.read_bytes()
    link = tmp_path / "audit.jsonl"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        AuditLogger(link)
    link.unlink()
    checkpoint_path(link).symlink_to(victim)
    with AuditLogger(link, checkpoint_every=1) as audit:  # a checkpoint it cannot write:
        audit.log("login", user="alice")                  # a warning, never a crash
    assert victim.read_bytes() == before


def test_side_files_get_the_logs_mode_not_the_umask(tmp_path):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, checkpoint_every=1) as audit:
        audit.log("login", user="alice")
    assert mode(log) == 0o640
    assert mode(checkpoint_path(log)) == 0o640
    # a torn last line is set aside with the log's mode too
    with log.open("ab") as handle:
        handle.write(b'{"torn')
    AuditLogger(log).close()
    torn = next(tmp_path.glob("audit.jsonl.torn-*"))
    assert mode(torn) == 0o640

    class Refuses:
        name = "dest"

        def send(self, batch):
            return SendResult(rejected=tuple((i, "HTTP 400") for i in range(len(batch))))

        def close(self):
            pass

    shipper = Shipper(log, Refuses())
    shipper.run()
    assert mode(shipper.dead_letter) == 0o640
    assert mode(shipper.cursor_file) == 0o600


def test_cursor_and_state_writes_never_go_through_a_planted_link(tmp_path, victim):
    before = victim.read_bytes()
    cursor = tmp_path / "audit.jsonl.ship-x.cursor"
    # yesterday's predictable temporary names, planted as links
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".{cursor.name}.{pid}.tmp").symlink_to(victim)
    cursor.symlink_to(victim)
    save_cursor(cursor, Cursor(offset=1, inode=2))
    assert victim.read_bytes() == before
    assert not cursor.is_symlink() and orjson.loads(cursor.read_bytes())["offset"] == 1


def test_model_files_are_private_and_atomic(tmp_path, victim):
    before = victim.read_bytes()
    target = tmp_path / "m.joblib"
    (tmp_path / "m.joblib.tmp").symlink_to(victim)  # the old fixed temporary name
    save_model({"weights": [1, 2]}, target)
    assert mode(target) == 0o600
    assert victim.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.joblib")]


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no-such-folder" / "x", b"data")
    target = tmp_path / "x"
    atomic_write(target, b"one")
    atomic_write(target, b"two", mode=0o640)
    assert target.read_bytes() == b"two" and os.listdir(tmp_path) == ["x"]
