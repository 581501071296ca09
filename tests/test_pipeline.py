"""The one entry point: each command reads its log once, and one pass serves every reader.

Opens are counted with an audit hook (``sys.addaudithook``): every ``open`` the process
makes, however it is reached (``open``, ``Path.open``, ``os.open``, ``gzip``), raises the
``open`` audit event with the path and the OS flags.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from analyzer.alerts import alerts_from_scores, write_alerts
from analyzer.cli import main
from analyzer.cli._common import Progress, show_steps
from analyzer.errors import ConfigError
from analyzer.integrity import verify_log
from analyzer.logger import AuditLogger
from analyzer.model import AuditModel
from analyzer.pipeline import Step, read_trail, score_trail
from analyzer.report import read_recorded_alerts
from analyzer.sources import FORMATS, ReaderOptions, read_events
from analyzer.synth import SynthConfig, generate, write_audit_log

_OPENS: list[tuple[str, int, bool]] | None = None
_LOGGER = str(Path(__file__).resolve().parents[1] / "analyzer" / "logger")


def _hook(event: str, args: tuple) -> None:
    if event == "open" and _OPENS is not None and isinstance(args[0], str | bytes | Path):
        _OPENS.append((os.fsdecode(args[0]), args[2] if isinstance(args[2], int) else 0,
                       _by_logger()))


def _by_logger() -> bool:
    """Is the audit logger opening (to append alerts, checking the trail it continues)?"""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_LOGGER):
            return True
        frame = frame.f_back
    return False


sys.addaudithook(_hook)  # an audit hook cannot be removed: it records only inside opens_of


@contextmanager
def opens_of(path: Path) -> Iterator[dict[str, int]]:
    """Count the opens of ``path`` while the block runs: by the analyzer to read it
    (``read``), and by the audit logger that appends the alerts (``logger``)."""
    global _OPENS
    counts = {"read": 0, "logger": 0}
    _OPENS = []
    try:
        yield counts
    finally:
        seen, _OPENS = _OPENS, None
        target = os.path.realpath(path)
        for name, flags, by_logger in seen:
            if os.path.realpath(name) == target:
                assert by_logger or flags & os.O_ACCMODE == os.O_RDONLY, "only reads"
                counts["logger" if by_logger else "read"] += 1


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chained log of a small organisation, with alerts written back into it."""
    path = tmp_path_factory.mktemp("trail") / "audit.jsonl"
    org = generate(SynthConfig(users=10, days=8, attack_days=2, seed=3))
    write_audit_log(org.events, path)
    frame = read_events(path).frame
    scores = AuditModel(alerts_per_day=5).fit_score(frame)
    with AuditLogger(path, name="audit.analyzer") as audit:
        assert write_alerts(alerts_from_scores(scores), audit, model_id="m", model_version="v")
    return path


def _copy(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / path.name
    target.write_bytes(path.read_bytes())
    return target


def test_report_opens_the_log_once(trail, tmp_path, capsys):
    log = _copy(trail, tmp_path)
    with opens_of(log) as counts:
        assert main(["report", str(log), "--text", str(tmp_path / "r.txt")]) == 0
    assert counts == {"read": 1, "logger": 0}
    text = (tmp_path / "r.txt").read_text()
    assert "Verified" in text  # the one pass did verify the chain


def test_score_opens_the_log_once_to_read_and_once_to_record(trail, tmp_path, capsys):
    log = _copy(trail, tmp_path)
    with opens_of(log) as counts:
        assert main(["score", str(log), "--no-write-back"]) == 0
    assert counts == {"read": 1, "logger": 0}
    with opens_of(log) as counts:
        assert main(["score", str(log), "--alerts-per-day", "20"]) == 0
    out = capsys.readouterr().out
    assert "written to" in out and "at CRITICAL" in out
    # the alerts already in the log were found by the one read: no pass to look for them;
    # the logger opens the log to append (and checks the trail it continues: its business)
    assert counts["read"] == 1 and counts["logger"] >= 1


@pytest.mark.parametrize("chunks", ["0", "500"])
def test_score_in_chunks_or_whole_opens_each_file_once(trail, tmp_path, capsys, chunks):
    log = _copy(trail, tmp_path)
    with opens_of(log) as counts:
        assert main(["score", str(log), "--chunk-events", chunks, "--alerts-per-day",
                     "20"]) == 0
    assert "written to" in capsys.readouterr().out
    assert counts["read"] == 1 and counts["logger"] >= 1
    for rotated in range(2):  # a series: each of its files is opened once too
        older = tmp_path / f"audit.jsonl.2026010{rotated}T000000000000Z"
        older.write_bytes(trail.read_bytes())
    with opens_of(older) as counts:
        assert main(["train", str(log) + "*", "--model", str(tmp_path / "m.joblib"),
                     "--chunk-events", chunks]) == 0
    assert counts == {"read": 1, "logger": 0}


def test_demo_reads_its_trail_back_once_and_verifies_once(tmp_path, capsys):
    out = tmp_path / "demo"
    log = out / "audit.jsonl"
    with opens_of(log) as counts:
        assert main(["demo", "--out", str(out), "--users", "12", "--days", "9"]) == 0
    # read back to train, then one pass for the verdict and the report
    assert counts["read"] == 2
    assert "chain intact" in capsys.readouterr().out


def _damaged(path: Path, tmp_path: Path, how: str) -> Path:
    log = _copy(path, tmp_path)
    lines = log.read_bytes().split(b"\n")
    if how == "tampered":  # a record in the middle changed: the chain breaks there
        lines[40] = lines[40].replace(b'"success"', b'"failure"', 1)
    elif how == "torn":  # the last record lost its end
        lines[-2] = lines[-2][:-10]
        lines.pop()
        log.write_bytes(b"\n".join(lines))
        return log
    elif how == "blank first line":
        lines.insert(0, b"")
    elif how == "not chained":
        lines.insert(0, b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"login"}}')
    log.write_bytes(b"\n".join(lines))
    return log


@pytest.mark.parametrize("how", ["intact", "tampered", "torn", "blank first line",
                                 "not chained"])
def test_the_one_pass_finds_what_three_reads_found(trail, tmp_path, how):
    log = _damaged(trail, tmp_path, how)
    one = read_trail(log, verify=True, alert_records=True)
    assert one.reading.frame.equals(read_events(log, include_alerts=True).frame)
    if how == "not chained":
        assert not one.chained and one.verification is None
    else:
        assert one.chained and one.verification == verify_log(log)
        assert one.verification.ok == (how == "intact")
    from analyzer.report import alerts_of_records

    recorded = alerts_of_records(doc for _, doc in one.alert_records)
    assert recorded == read_recorded_alerts(log)
    assert len(recorded) > 0  # alerts past a broken record are still found


def test_reader_options_are_checked_by_name_and_by_format(trail, tmp_path):
    with pytest.raises(ConfigError, match="unknown reader option 'yaer'"):
        read_events(trail, yaer=2024)
    with pytest.raises(ConfigError, match=r"'year' does not apply to jsonl \(it is for sshd\)"):
        read_events(trail, year=2024)
    with pytest.raises(ConfigError, match="'mapping' does not apply to jsonl"):
        read_events(trail, options=ReaderOptions(mapping={"a": "user"}))
    # keys are offered to whatever is sealed: a clear log needs none, and that is no error
    assert len(read_events(trail, decrypt_keys=(b"k" * 32,)).frame)
    # one call may read a mix: the year goes to the syslog file only
    auth = tmp_path / "auth.log"
    auth.write_text("Jan  5 10:00:00 host sshd[1]: Accepted password for alice from "
                    "10.0.0.1 port 22 ssh2\n")
    mixed = read_events([trail, auth], year=2020)
    assert mixed.formats == ("jsonl", "sshd")
    assert (mixed.frame["timestamp"].dt.year == 2020).sum() == 1


def test_every_reader_declares_the_options_its_read_takes():
    import importlib
    import inspect

    fields = set(ReaderOptions.__dataclass_fields__)
    for name, module_name in FORMATS.items():
        module = importlib.import_module(module_name)
        takes = set(inspect.signature(module.read).parameters) - {"path", "since", "until"}
        assert set(module.OPTIONS) == takes, name
        assert takes <= fields, name


def test_an_option_for_another_format_is_one_error_line_and_exit_2(trail, capsys):
    assert main(["score", str(trail), "--year", "2020", "--no-write-back"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("audit-analyzer score: error: reader option 'year' does not apply "
                       "to jsonl (it is for sshd)")


def test_score_trail_returns_what_the_command_prints(trail, tmp_path):
    log = _copy(trail, tmp_path)
    model = AuditModel(alerts_per_day=20).fit(read_events(log).frame)
    seen: list[Step] = []
    run = score_trail(log, model, progress=seen.append, scores_path=tmp_path / "s.csv")
    assert not run.fitted and run.written == () and run.destination is None
    assert len(run.scores) and run.alerts and (tmp_path / "s.csv").exists()
    assert run.reading.skipped_alerts > 0  # the alerts already in the log are not scored
    stages = [s.stage for s in seen]
    assert stages[0] == "reading" and "scoring" in stages and stages[-1] == "scored"
    assert seen[-1].done == len(run.scores) and seen[-1].unit == "windows"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_of_train_and_score_on_a_terminal_only(trail, tmp_path, monkeypatch):
    log = _copy(trail, tmp_path)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["score", str(log), "--no-write-back"]) == 0
    shown = terminal.getvalue()
    assert "\x1b[Kreading: " in shown and " records" in shown
    assert "training and scoring " in shown
    assert "scored: " in shown and " windows (" in shown and "/s)" in shown
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    assert main(["train", str(log), "--model", str(tmp_path / "m.joblib")]) == 0
    assert "\r" not in piped.getvalue()


def test_progress_draws_each_step():
    stream = _Terminal()
    progress = Progress(enabled=True, clock=iter(range(100)).__next__)
    show = show_steps(progress)
    real, sys.stderr = sys.stderr, stream
    try:
        show(Step("reading", 1000, share=0.25))
        show(Step("reading", 4000, share=1.0))
        show(Step("training", 5000))
        show(Step("scored", 300, unit="windows", elapsed=2.0))
    finally:
        sys.stderr = real
    text = stream.getvalue()
    assert "reading: 4,000 records (4,000/s)" in text
    assert "training on 5,000 events..." in text
    assert "scored: 300 windows (150/s)" in text


def test_a_gzip_log_is_opened_once_too(trail, tmp_path):
    import gzip

    log = tmp_path / "audit.jsonl.gz"
    log.write_bytes(gzip.compress(trail.read_bytes()))
    with opens_of(log) as counts:
        one = read_trail(log, verify=True, alert_records=True)
    assert counts == {"read": 1, "logger": 0}
    assert one.verification == verify_log(log) and one.verification.ok
    assert one.reading.frame.equals(read_events(trail, include_alerts=True).frame)
