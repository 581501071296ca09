"""``train`` and ``score`` reading their logs in chunks (``--chunk-events``) give what a whole
read gives: the same scores file byte for byte, the same alerts written back, the same
accounting line and rejected lines."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from analyzer.cli import main
from analyzer.pipeline import Step, score_trail, train_trail
from analyzer.sources import is_side_file
from analyzer.synth import SynthConfig, generate, write_audit_log


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=10, days=8, attack_days=2, seed=3))


@pytest.fixture(scope="module")
def log(org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One chained log of a few thousand events."""
    path = tmp_path_factory.mktemp("log") / "audit.jsonl"
    write_audit_log(org.events, path)
    return path


@pytest.fixture(scope="module")
def series(org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same events rotated into several files."""
    path = tmp_path_factory.mktemp("series") / "audit.jsonl"
    write_audit_log(org.events, path, rotate_bytes=1 << 20)
    assert len(_files(path)) >= 3
    return path


def _files(log: Path) -> list[Path]:
    return [p for p in sorted(log.parent.glob(log.name + "*")) if not is_side_file(p)]


def alert_records(path: Path) -> list[dict]:
    """The alert records of a trail, less what differs between two writings of the same
    alerts (ids, sequence, chain, the time of writing) and the name of the model (two
    trainings, or a model fitted on the input, which is named by the time of its run).
    Lines that are not JSON (a damaged trail's) are no alerts."""
    out = []
    for line in path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if doc.get("event", {}).get("kind") != "alert":
            continue
        doc.pop("@timestamp", None)
        doc["event"] = {k: v for k, v in doc["event"].items()
                        if k not in ("id", "sequence", "hash", "created", "ingested")}
        doc.get("analyzer", {}).pop("chain", None)
        doc.pop("rule", None)
        out.append(doc)
    return out


def run_printed(argv: list[str], capsys, out: Path) -> str:
    """Run a command; what it printed (its accounting line is on stderr), with the run's
    folder named alike for both runs."""
    assert main(argv) == 0, argv
    captured = capsys.readouterr()
    return (captured.err + captured.out).replace(str(out), "OUT")


def _score(inputs: list[str], out: Path, capsys, *more: str) -> tuple[bytes, list, str]:
    out.mkdir()
    trail = out / "alerts.jsonl"
    printed = run_printed(["score", *inputs, "--scores", str(out / "scores.csv"), "--audit-log",
                    str(trail), *more], capsys, out)
    return (out / "scores.csv").read_bytes(), alert_records(trail), printed


@pytest.mark.parametrize("size", ["500", "3000"])
def test_score_in_chunks_writes_the_same_scores_andalert_records(log, tmp_path, capsys, size):
    whole = _score([str(log)], tmp_path / "whole", capsys, "--chunk-events", "0")
    chunked = _score([str(log)], tmp_path / "chunked", capsys, "--chunk-events", size)
    assert whole[1], "the synthetic attacks should alert"
    assert chunked[0] == whole[0]
    assert chunked[1] == whole[1]
    assert chunked[2] == whole[2]  # the accounting line, the warm-up note, the alerts


def test_train_then_score_in_chunks_on_a_rotated_series(series, tmp_path, capsys):
    inputs = [str(series) + "*"]
    runs = {}
    for name, size in (("whole", "0"), ("chunked", "500")):
        out = tmp_path / name
        out.mkdir()
        model = out / "model.joblib"
        trained = run_printed(["train", *inputs, "--model", str(model), "--chunk-events", size],
                       capsys, out)
        runs[name] = (trained, _score(inputs, out / "score", capsys, "--model", str(model),
                                      "--chunk-events", size))
    (trained, (scores, alerts, printed)), whole = runs["chunked"], runs["whole"]
    def said(text: str) -> list[str]:  # the accounting line; the events and windows fitted
        return [line.split("; model ")[0] for line in text.splitlines()
                if "records read" in line or line.startswith("trained on")]

    assert len(said(trained)) == 2 and said(trained) == said(whole[0])
    assert whole[1][1], "the synthetic attacks should alert"
    assert scores == whole[1][0]
    assert alerts == whole[1][1]
    assert printed == whole[1][2]


def test_a_parquet_export_in_chunks(series, tmp_path, capsys):
    export = tmp_path / "export"
    assert main(["export", *map(str, _files(series)), "--parquet", str(export)]) == 0
    capsys.readouterr()
    whole = _score([str(export)], tmp_path / "whole", capsys, "--chunk-events", "0")
    chunked = _score([str(export)], tmp_path / "chunked", capsys, "--chunk-events", "700")
    assert whole[1] and chunked[:2] == whole[:2]


def test_rejected_lines_are_set_aside_alike(log, tmp_path, capsys):
    lines = log.read_bytes().split(b"\n")
    lines[10] = b"{not json"
    lines[2500] = b'{"@timestamp": "yesterday", "event": {"action": "login"}}'
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"\n".join(lines))
    printed = {}
    for name, size in (("whole", "0"), ("chunked", "400")):
        out = tmp_path / name
        out.mkdir()
        assert main(["score", str(damaged), "--no-write-back", "--scores",
                     str(out / "scores.csv"), "--chunk-events", size]) == 0
        captured = capsys.readouterr()
        printed[name] = (captured.out.replace(str(out), "OUT"),
                         captured.err.replace(str(out), "OUT"),
                         (out / "scores.csv.rejected").read_text(),
                         (out / "scores.csv").read_bytes())
    assert printed["chunked"] == printed["whole"]
    assert "2 set aside" in printed["whole"][1]
    rejected = printed["whole"][2]
    assert ":11:" in rejected and ":2501:" in rejected  # numbered within the file


def test_an_option_for_another_format_is_refused_in_chunks_too(log, capsys):
    assert main(["score", str(log), "--year", "2020", "--no-write-back",
                 "--chunk-events", "500"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "audit-analyzer score: error: reader option 'year' does not apply to jsonl (it is "
        "for sshd)")


def test_a_negative_chunk_size_is_one_error_line(log, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(log), "--chunk-events", "-5"])
    assert exit_.value.code == 2
    assert "a number of events, 0 or more" in capsys.readouterr().err


def test_score_trail_in_chunks_tells_its_progress_per_chunk(log):
    seen: list[Step] = []
    run = score_trail(log, chunk_events=1000, progress=seen.append)
    reading = [s for s in seen if s.stage == "reading"]
    assert len(reading) > 3  # one step a chunk (of a MiB of lines at least), and per file
    done = [s.done for s in reading]
    assert done == sorted(done) and done[-1] == run.reading.records
    shares = [s.share for s in reading]
    assert all(0 < s <= 1 for s in shares) and shares == sorted(shares)  # for the ETA
    stages = [s.stage for s in seen if s.stage not in ("reading", "windows")]
    assert stages == ["training and scoring", "scored"]
    told = next(s for s in seen if s.stage == "training and scoring")
    assert told.done == run.reading.n_used > 5000 and seen[-1].done == len(run.scores)
    # then the windows of each block of the trail, with the share of the blocks done
    windows = [s for s in seen if s.stage == "windows"]
    assert len(windows) > 3 and seen.index(windows[0]) > seen.index(told)
    assert [s.done for s in windows] == sorted(s.done for s in windows)
    assert windows[-1].done == len(run.scores) and windows[-1].share == 1.0
    assert all(s.elapsed is not None and s.elapsed >= 0 for s in windows)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_chunks_on_a_terminal(log, tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["score", str(log), "--no-write-back", "--chunk-events", "500"]) == 0
    shown = terminal.getvalue()
    assert "\x1b[Kreading: " in shown and " records" in shown
    assert "training and scoring " in shown and "scored: " in shown
    # the last block's count at least (a terminal is redrawn at most five times a second)
    assert "windows: " in shown


def test_train_trail_in_chunks_fits_the_model_of_a_whole_read(log):
    whole = train_trail(log, chunk_events=None).model
    chunked = train_trail(log, chunk_events=700)
    assert chunked.reading.n_used == whole.metadata["n_events"]
    assert chunked.reading.frame.empty  # the events were never held together
    meta = {k: v for k, v in chunked.model.metadata.items()}
    assert meta == whole.metadata
