"""The report of a log read in chunks is the report of the log read whole, byte for byte,
and its memory does not grow with the trail (issue 17, item 1).

A chunked report counts the events as the read hands them over (analyzer.report.tally) and
gathers each alert's rows (analyzer.report.context); chunk sizes here are small and odd, so
that minutes, windows, files and groups fall across chunk boundaries.
"""

from __future__ import annotations

import re
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from analyzer.alerts import alerts_from_scores, write_alerts
from analyzer.cli import main
from analyzer.logger import AuditLogger
from analyzer.model import AuditModel
from analyzer.report import build_view, load_report_data, render_html, render_text
from analyzer.sources import read_events
from analyzer.synth import SynthConfig, generate, write_audit_log
from tests.conftest import shared_data
from tests.test_pipeline import opens_of
from tests.test_report import FIXED, scores_for, write_log


def reports(log: Path | str, size: int | None, **options) -> tuple[str, str]:
    """The text and HTML reports of ``log`` counted in chunks of ``size`` (None: whole)."""
    view = build_view(load_report_data(log, generated=FIXED, chunk_events=size, **options))
    return render_text(view), render_html(view)


def assert_same_in_chunks(log: Path | str, sizes: tuple[int, ...], **options) -> str:
    """Each chunked report equals the whole one; returns the whole text report."""
    whole = reports(log, None, **options)
    for size in sizes:
        text, html = reports(log, size, **options)
        assert text == whole[0], f"text report differs in chunks of {size}"
        assert html == whole[1], f"HTML report differs in chunks of {size}"
    return whole[0]


@pytest.fixture(scope="module")
def trails(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The organisation's trail plain, with its alerts written back, and rotated."""
    folder = tmp_path_factory.mktemp("chunks")
    events = generate(SynthConfig(users=8, days=6, attack_days=2, seed=5)).events
    plain = folder / "plain.jsonl"
    write_audit_log(events, plain)
    recorded = folder / "recorded.jsonl"
    recorded.write_bytes(plain.read_bytes())
    frame = read_events(plain).frame
    scores = AuditModel(alerts_per_day=5).fit_score(frame)
    scores.to_csv(folder / "scores.csv", index=False)
    with AuditLogger(recorded, name="audit.analyzer") as audit:
        assert write_alerts(alerts_from_scores(scores), audit, model_id="m", model_version="v")
    (folder / "series").mkdir()
    # in three writes (each a logger of its own, which continues the series); the files are
    # cut at the record that would pass rotate_bytes, whatever the batches
    third = -(-len(events) // 3)
    for lo in range(0, len(events), third):
        write_audit_log(events.iloc[lo:lo + third], folder / "series" / "audit.jsonl",
                        rotate_bytes=1_500_000)
    return {"plain": plain, "recorded": recorded, "scores": folder / "scores.csv",
            "series": folder / "series" / "audit.jsonl"}


# -- byte for byte ----------------------------------------------------------------------

def test_recorded_alerts_in_chunks(trails):
    text = assert_same_in_chunks(trails["recorded"], (997, 4096))
    assert "recorded in the audit trail" in text and "Verified" in text


def test_scores_given_in_chunks(trails):
    from analyzer.report import read_scores

    text = assert_same_in_chunks(trails["plain"], (997,),
                                 scores=read_scores(trails["scores"]))
    assert "scored windows" in text and "Evidence records" in text


def test_self_fit_in_chunks(trails):
    text = assert_same_in_chunks(trails["plain"], (997,))
    assert "scored against the log's own earlier activity" in " ".join(text.split())


def test_model_given_in_chunks(trails):
    frame = read_events(trails["plain"]).frame
    first_days = frame[frame["timestamp"] < frame["timestamp"].min() + pd.Timedelta(days=3)]
    model = AuditModel(alerts_per_day=5).fit(first_days)
    text = assert_same_in_chunks(trails["plain"], (997,), model=model)
    assert "No alerts." not in text  # the attack days alert: their rows are gathered


@pytest.mark.parametrize("mode", ["recorded", "self-fit"])
def test_rotated_series_in_chunks(trails, tmp_path, mode):
    series = tmp_path / "series" / "audit.jsonl"
    shutil.copytree(trails["series"].parent, series.parent)
    assert len(list(series.parent.glob("audit.jsonl.*"))) > 3  # rotated files, checkpoints
    if mode == "recorded":
        with AuditLogger(series, name="audit.analyzer") as audit:  # continues the series
            frame = read_events(str(series) + "*").frame
            write_alerts(alerts_from_scores(AuditModel(alerts_per_day=3).fit_score(frame)),
                         audit, model_id="m", model_version="v")
    # the rotation records are stamped when written (today): the organisation's days only
    until = {} if mode == "recorded" else {"until": pd.Timestamp("2026-01-01", tz="UTC")}
    text = assert_same_in_chunks(str(series) + "*", (997,), **until)
    said = "recorded in the audit trail" if mode == "recorded" else "scored windows"
    assert said in text


@pytest.mark.parametrize("mode", ["scores", "recorded", "self-fit"])
def test_a_small_log_in_chunks_of_seven(tmp_path, mode):
    log = write_log(tmp_path / "audit.jsonl")
    options = {}
    if mode == "scores":
        options["scores"] = scores_for()
    elif mode == "recorded":
        with AuditLogger(log, name="audit.analyzer") as audit:
            write_alerts(alerts_from_scores(scores_for()), audit, model_id="m",
                         model_version="v")
    assert_same_in_chunks(log, (7, 1000), **options)


def test_real_logs_in_chunks(tmp_path):
    assert_same_in_chunks(shared_data("loghub", "OpenSSH_2k.log"), (100, 1000))
    assert_same_in_chunks(shared_data("otrf", "cloudtrail_ec2_proxy_s3_exfiltration.jsonl"),
                          (7,))
    with zipfile.ZipFile(shared_data("otrf", "schtask_create.zip")) as archive:
        archive.extractall(tmp_path)
    logs = sorted(p for p in tmp_path.rglob("*.json") if p.is_file())
    assert logs
    assert_same_in_chunks(logs[0], (50,))


def test_cli_report_in_chunks_is_the_whole_report(trails, tmp_path, capsys):
    outputs = {}
    for size in ("0", "997"):
        html, text = tmp_path / f"r{size}.html", tmp_path / f"r{size}.txt"
        assert main(["report", str(trails["recorded"]), "--chunk-events", size,
                     "--html", str(html), "--text", str(text)]) == 0
        said = capsys.readouterr()
        assert "alert(s); integrity: verified" in said.out
        outputs[size] = [html.read_text(), text.read_text(), said.err]
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")  # the "generated" minute
    for whole, chunked in zip(outputs["0"][:2], outputs["997"][:2], strict=True):
        assert stamp.findall(chunked)
        assert whole == chunked or stamp.sub("T", whole) == stamp.sub("T", chunked)
    # the read's accounting line counts the same records, used and skipped
    assert "records read" in outputs["997"][2]
    assert outputs["0"][2] == outputs["997"][2]


# -- passes over the file -----------------------------------------------------------------

def _copy(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / path.name
    target.write_bytes(path.read_bytes())
    return target


def test_how_often_a_chunked_report_opens_the_log(trails, tmp_path, capsys):
    """One pass serves the verdict, the recorded alerts and the counts (and a model's
    scores); a trail larger than one chunk is read again for what that pass cannot know yet:
    the alerts' rows (recorded alerts are found at its end), and, without a model or
    scores, the scores."""
    recorded, plain = _copy(trails["recorded"], tmp_path), _copy(trails["plain"], tmp_path)
    model = tmp_path / "model.joblib"
    assert main(["train", str(trails["plain"]), "--model", str(model)]) == 0
    cases = [  # (log, options, reads)
        (recorded, [], 1),  # the default chunk holds this trail: kept, read once
        (recorded, ["--chunk-events", "997"], 2),  # the pass, then the alerts' rows
        (plain, ["--scores", str(trails["scores"]), "--chunk-events", "997"], 1),
        (plain, [], 1),  # self-fit on the one chunk kept
        (plain, ["--chunk-events", "997"], 3),  # the pass, the self-fit, the alerts' rows
        # a model scores the chunks as the pass counts them: then the alerts' rows
        (plain, ["--model", str(model), "--chunk-events", "997"], 2),
        (plain, ["--model", str(model)], 1),  # the one chunk kept, scored
    ]
    for log, options, reads in cases:
        with opens_of(log) as counts:
            assert main(["report", str(log), "--text", str(tmp_path / "r.txt"),
                         *options]) == 0
        assert counts == {"read": reads, "logger": 0}, (options, counts)
        assert "Verified" in (tmp_path / "r.txt").read_text()
    capsys.readouterr()


# -- memory -------------------------------------------------------------------------------

def _dense_trail(path: Path, events: pd.DataFrame, times: int) -> Path:
    """The same organisation and days, each event written ``times`` times: more events,
    the same entities, values and minutes."""
    write_audit_log(events.loc[events.index.repeat(times)].reset_index(drop=True), path)
    return path


def _peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dense")
    events = generate(SynthConfig(users=4, days=2, attack_days=1, seed=9)).events
    return (_dense_trail(folder / "n.jsonl", events, 1),
            _dense_trail(folder / "4n.jsonl", events, 4))


def test_report_memory_does_not_grow_with_the_events(dense):
    small, large = dense
    sizes = [len(read_events(p).frame) for p in dense]
    assert sizes[1] == 4 * sizes[0]

    scores = AuditModel(alerts_per_day=5).fit_score(read_events(small).frame)
    assert scores["alert"].any()  # alerts, whose rows are gathered in the pass

    def report(log: Path, size: int | None) -> None:
        view = build_view(load_report_data(log, generated=FIXED, chunk_events=size,
                                           scores=scores))
        render_text(view)

    chunked = [_peak(lambda p=p: report(p, 1500)) for p in (small, large)]
    whole = [_peak(lambda p=p: report(p, None)) for p in (small, large)]
    # counted in chunks, four times the events cost about the same; read whole, the
    # events are held, and the peak grows with them (so the measure sees what it should)
    assert chunked[1] < 1.25 * chunked[0], chunked
    assert whole[1] - whole[0] > 5 * max(chunked[1] - chunked[0], 100_000), (whole, chunked)


def test_verify_memory_does_not_grow_with_the_records(dense):
    from analyzer.integrity import verify_log

    peaks = []
    for log in dense:
        report = None

        def run(log: Path = log) -> None:
            nonlocal report
            report = verify_log(log)

        peaks.append(_peak(run))
        assert report is not None and report.ok
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_parquet_export_in_chunks(trails, tmp_path, capsys):
    """A Parquet copy is handed over by row groups (not read whole) and reports alike."""
    from analyzer.report import read_scores

    copy = tmp_path / "copy"
    assert main(["export", str(trails["recorded"]), "--parquet", str(copy)]) == 0
    capsys.readouterr()
    pieces: list[int] = []
    read_events(copy, rows=997, pieces=lambda frame: pieces.append(len(frame)))
    assert len(pieces) > 2 and max(pieces) < 2 * 997
    assert_same_in_chunks(copy, (997,), scores=read_scores(trails["scores"]))


def test_a_period_in_chunks(trails):
    """--since/--until decide on each record's time in every chunk, as in a whole read."""
    events = read_events(trails["recorded"]).frame["timestamp"]
    since = events.min() + pd.Timedelta(days=2)
    until = events.min() + pd.Timedelta(days=4, hours=5)
    text = assert_same_in_chunks(trails["recorded"], (997,), since=since, until=until)
    assert "Events" in text
    chunked = load_report_data(trails["recorded"], chunk_events=997, since=since, until=until)
    whole = load_report_data(trails["recorded"], since=since, until=until)
    assert chunked.reading.accounting() == whole.reading.accounting()
    assert "outside --since/--until" in whole.reading.accounting()
