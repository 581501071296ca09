"""What used to read a trail whole now goes chunk by chunk, with the whole read's results:
``train --exclude-alerts``, ``score`` with suppression rules on action or source, ``--db``.
Each compares ``--chunk-events 0`` with small chunks: the scores file byte for byte, the
alerts written back, the accounting line and the rejected lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analyzer.cli import main
from analyzer.feedback import read_alerts
from analyzer.logger import AuditLogger
from analyzer.synth import SynthConfig, generate, write_audit_log
from tests.test_cli_chunks import alert_records, run_printed

SIZES = ("7", "500")


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=10, days=8, attack_days=2, seed=3))


@pytest.fixture(scope="module")
def damaged(org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chained log of a few thousand events with two malformed lines in it."""
    folder = tmp_path_factory.mktemp("log")
    path = folder / "clean.jsonl"
    write_audit_log(org.events, path)
    lines = path.read_bytes().split(b"\n")
    lines[10] = b"{not json"
    lines[2500] = b'{"@timestamp": "yesterday", "event": {"action": "login"}}'
    out = folder / "audit.jsonl"
    out.write_bytes(b"\n".join(lines))
    return out


def _said(printed: str) -> list[str]:
    """What ``train`` said, less the model's id (two trainings) and the note on a signing key
    made on first use."""
    return [line.split("; model ")[0] for line in printed.splitlines()
            if "created your model signing key" not in line]


# -- train --exclude-alerts ----------------------------------------------------------------

@pytest.fixture(scope="module")
def alerted(damaged, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The damaged log with the alerts of a self-fit written back into it, and verdicts:
    one alert cleared, one confirmed."""
    path = tmp_path_factory.mktemp("alerted") / "audit.jsonl"
    shutil.copy(damaged, path)
    assert main(["score", str(path), "--audit-log", str(path), "--chunk-events", "0"]) == 0
    alerts = read_alerts(path)
    assert len(alerts) >= 3
    with AuditLogger(path) as audit:
        from analyzer.feedback import record_feedback

        record_feedback(audit, alerts["alert_id"][0], "benign", analyst="ann")
        record_feedback(audit, alerts["alert_id"][1], "malicious", analyst="ann")
    return path


def test_train_excluding_alerts_in_chunks_fits_the_model_of_a_whole_read(alerted, tmp_path,
                                                                          capsys):
    runs = {}
    for size in ("0", *SIZES):
        out = tmp_path / size
        out.mkdir()
        model = out / "model.joblib"
        printed = run_printed(["train", str(alerted), "--model", str(model), "--exclude-alerts",
                        "--rejected", str(out / "rejected.txt"), "--chunk-events", size],
                       capsys, out)
        said = _said(printed)
        # the model scores a log alike: the same scores file
        run_printed(["score", str(alerted), "--model", str(model), "--no-write-back",
              "--scores", str(out / "scores.csv"), "--chunk-events", "0"], capsys, out)
        runs[size] = (said, (out / "rejected.txt").read_text(),
                      (out / "scores.csv").read_bytes())
    whole = runs["0"]
    left_out = [line for line in whole[0] if line.startswith("left out ")]
    assert left_out and "1 confirmed malicious" in left_out[0]
    assert "2 set aside" in "\n".join(whole[0])
    assert ":11:" in whole[1] and ":2501:" in whole[1]  # numbered within the file
    for size in SIZES:
        assert runs[size] == whole, size


def test_excluding_nothing_in_chunks_is_training_on_everything(damaged, tmp_path, capsys):
    """A trail without alerts leaves nothing out, and says so, in chunks as whole."""
    printed = {}
    for size in ("0", "500"):
        out = tmp_path / size
        out.mkdir()
        printed[size] = _said(run_printed(["train", str(damaged), "--model", str(out / "m.joblib"),
                                    "--exclude-alerts", "--chunk-events", size], capsys, out))
    assert "no alerted windows to leave out" in printed["0"]
    assert printed["500"] == printed["0"]


def test_train_trail_leaves_out_chunk_by_chunk_without_holding_the_events(alerted):
    from analyzer.pipeline import train_trail

    whole = train_trail(alerted, exclude_alerts=[alerted])
    chunked = train_trail(alerted, exclude_alerts=[alerted], chunk_events=300)
    assert chunked.reading.frame.empty and chunked.frame.empty  # never held together
    assert whole.left_out is not None and chunked.left_out is not None
    assert chunked.left_out.events_removed == whole.left_out.events_removed > 0
    assert chunked.left_out.summary() == whole.left_out.summary()
    assert chunked.model.metadata["n_events"] == len(whole.frame)
    meta = {k: v for k, v in chunked.model.metadata.items() if k != "created"}
    assert meta == {k: v for k, v in whole.model.metadata.items() if k != "created"}


# -- score with suppression rules on action and source -------------------------------------

RULES = "\n".join([
    # every action of jonas.petrov's alerted hour is an export: suppressed
    '{"id": "exports", "entity": "jonas.petrov", "action": ["dataset.export", "login"], '
    '"expires": "2099-01-01", "reason": "the quarterly export"}',
    # the office network: address windows, and service accounts that stay inside it
    '{"id": "office", "entity_type": "source_ip", "source": "10.0.0.0/8", '
    '"expires": "2099-01-01", "reason": "internal"}',
    '{"id": "services", "entity": "svc-*", "source": ["10.0.0.0/8"], '
    '"expires": "2099-01-01", "reason": "service accounts at home"}',
    # reading only: holds for a few windows, not for those with anything else
    '{"id": "readers", "action": ["*.read", "model.inference", "login"], '
    '"expires": "2099-01-01", "reason": "read-only"}',
    # expired: ignored, with a note
    '{"id": "old", "action": "*", "expires": "2020-01-01", "reason": "gone"}',
])


@pytest.fixture(scope="module")
def sliding(damaged, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A model of two-hour windows sliding by 30 minutes, as ``score`` options."""
    folder = tmp_path_factory.mktemp("sliding")
    model, key = folder / "model.joblib", folder / "model.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    assert main(["train", str(damaged), "--model", str(model), "--window", "2h", "--step",
                 "30m", "--signing-key-file", str(key), "--chunk-events", "0"]) == 0
    return ["--model", str(model), "--signing-key-file", str(key)]


@pytest.mark.parametrize("model", ["self-fit", "sliding"])
def test_score_with_rules_on_action_and_source_in_chunks(damaged, sliding, tmp_path, capsys,
                                                         model):
    rules = tmp_path / "rules.jsonl"
    rules.write_text(RULES + "\n")
    with_model = [] if model == "self-fit" else sliding
    capsys.readouterr()
    runs = {}
    for size in ("0", *SIZES):
        out = tmp_path / size
        out.mkdir()
        trail = out / "alerts.jsonl"
        printed = run_printed(["score", str(damaged), *with_model, "--suppressions", str(rules),
                        "--scores", str(out / "scores.csv"), "--audit-log", str(trail),
                        "--chunk-events", size], capsys, out)
        runs[size] = ((out / "scores.csv").read_bytes(), alert_records(trail), printed,
                      (out / "scores.csv.rejected").read_text())
    whole = runs["0"]
    assert "suppression rule old expired" in whole[2] and "2 set aside" in whole[2]
    silenced = [a["analyzer"]["alert"]["suppressed"]["rule"] for a in whole[1]
                if a["analyzer"]["alert"].get("suppressed")]
    # rules on actions and on addresses each silence some alerts and keep others
    if model == "self-fit":
        assert {"office", "services", "exports"} <= set(silenced) and \
            len(silenced) < len(whole[1]), silenced
    else:  # the sliding model alerts on few windows of its own training log
        assert silenced, "a rule should hold for a window of four steps"
    for size in SIZES:
        assert runs[size] == whole, size


# -- --db ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def database(alerted, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The alerted trail shipped into SQLite (its two malformed lines are the shipper's
    dead letters; its alerts are rows the analysis counts and leaves out)."""
    from analyzer.sinks.shipper import Shipper
    from analyzer.sinks.sqlite import SqliteSink

    db = tmp_path_factory.mktemp("db") / "audit.db"
    sink = SqliteSink(db)
    Shipper(alerted, sink).run(follow=False)
    sink.close()
    return f"sqlite:///{db}"


#: a database is read in pieces of exactly N events (a log, in blocks of whole lines of a
#: MiB at least): pieces of 7 would be a thousand and more passes of the features
DB_SIZES = ("500", "3000")


def test_score_from_a_database_in_chunks(database, tmp_path, capsys):
    runs = {}
    for size in ("0", *DB_SIZES):
        out = tmp_path / size
        out.mkdir()
        trail = out / "alerts.jsonl"
        printed = run_printed(["score", "--db", database, "--since", "2025-03-04T00:00:00Z",
                        "--scores", str(out / "scores.csv"), "--audit-log", str(trail),
                        "--chunk-events", size], capsys, out)
        runs[size] = ((out / "scores.csv").read_bytes(), alert_records(trail), printed)
    whole = runs["0"]
    assert whole[1], "the synthetic attacks should alert"
    assert "earlier alerts not scored" in whole[2]  # the accounting line counts them
    for size in DB_SIZES:
        assert runs[size] == whole, size


def test_train_from_a_database_in_chunks(database, tmp_path, capsys):
    runs = {}
    for size in ("0", *DB_SIZES):
        out = tmp_path / size
        out.mkdir()
        model = out / "model.joblib"
        said = _said(run_printed(["train", "--db", database, "--user", "zoe.haddad", "--user",
                           "chen.tanaka", "--model", str(model), "--chunk-events", size],
                          capsys, out))
        run_printed(["score", "--db", database, "--model", str(model), "--no-write-back",
              "--scores", str(out / "scores.csv"), "--chunk-events", "0"], capsys, out)
        runs[size] = (said, (out / "scores.csv").read_bytes())
    assert any(line.startswith("trained on") for line in runs["0"][0])
    for size in DB_SIZES:
        assert runs[size] == runs["0"], size


def test_a_database_in_chunks_is_never_held_whole(database):
    from analyzer.pipeline import train_trail
    from analyzer.store import DatabaseEvents, read_db_events

    source = DatabaseEvents(database)
    whole = read_db_events(database)
    chunks = source.chunks(1000)
    sizes = [len(frame) for frame in chunks]
    assert len(sizes) > 5 and max(sizes) <= 1000  # the cursor's pages cut, not the table
    assert sum(sizes) == len(whole.frame)
    result = chunks.result
    assert result is not None and result.frame.empty
    assert (result.records, result.n_used, result.skipped_alerts) == \
        (whole.records, whole.n_used, whole.skipped_alerts)
    run = train_trail(source, chunk_events=1000)
    assert run.reading.frame.empty and run.reading.n_used == len(whole.frame)


# -- a large single CSV file ---------------------------------------------------------------

@pytest.fixture(scope="module")
def access_csv(org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The organisation's events as one CSV file, with bad records among them: a wrong
    number of fields, a bad time, an unknown outcome, a line that is not UTF-8, and a quote
    that never closes (the parser runs over the lines after it, which are read again, one
    of them not UTF-8)."""
    columns = ["timestamp", "user", "action", "resource", "outcome", "source_ip", "bytes",
               "country"]
    events = org.events[columns].copy()
    events["timestamp"] = events["timestamp"].map(lambda t: t.isoformat())
    events["bytes"] = events["bytes"].astype("Int64")
    path = tmp_path_factory.mktemp("csv") / "access.csv"
    events.to_csv(path, index=False)
    lines = path.read_bytes().split(b"\n")
    lines[40] = b"2025-03-03T01:00:00Z,alice,login"
    lines[41] = lines[41].replace(b"2025-03", b"2025-13", 1)
    lines[1200] = lines[1200].replace(b",success,", b",perhaps,", 1)
    lines[1500] = b"2025-03-04T01:00:00Z,al\xffice,login,,success,10.0.0.1,,"
    lines[2600] = lines[2600].replace(b",", b',"', 1)  # opens a quote for good
    lines[2602] = lines[2602].replace(b"2025", b"\xff2025", 1)  # read ahead by that quote
    path.write_bytes(b"\n".join(lines))
    return path


def test_score_a_csv_file_in_chunks(access_csv, tmp_path, capsys):
    runs = {}
    for size in ("0", *DB_SIZES):
        out = tmp_path / size
        out.mkdir()
        trail = out / "alerts.jsonl"
        printed = run_printed(["score", str(access_csv), "--scores", str(out / "scores.csv"),
                        "--audit-log", str(trail), "--chunk-events", size], capsys, out)
        runs[size] = ((out / "scores.csv").read_bytes(), alert_records(trail), printed,
                      (out / "scores.csv.rejected").read_bytes())  # the lines as they were
    whole = runs["0"]
    assert whole[1], "the synthetic attacks should alert"
    found = [int(line.split(b":")[1]) for line in whole[3].splitlines()
             if line.startswith(b"# ")]
    assert found == [41, 42, 1201, 1501, 2601, 2603]  # numbered within the file, in order
    assert "6 set aside" in whole[2]
    for size in DB_SIZES:  # pieces of exactly N records, as a database's
        assert runs[size] == whole, size


def _small_csv(path: Path) -> Path:
    """Twenty records, with a quote that never closes on line 6 (the parser runs to the end
    of the file, and the lines after it are read again), a bad time on line 8 and a line
    that is not UTF-8 on line 9 (set aside while the parser ran ahead, yet listed after
    line 8), too few fields on line 13 and another bad time."""
    lines = [b"timestamp,user,action,resource,outcome,source_ip"]
    lines += [b"2025-03-03T%02d:00:00Z,u%d,login,r,success,10.0.0.%d" % (i, i, i)
              for i in range(20)]
    lines[5] = b'2025-03-03T04:00:00Z,"u4,login,r,success,10.0.0.4'
    lines[7] = b"2025-03-33T06:00:00Z,u6,login,r,success,10.0.0.6"
    lines[8] = b"2025-03-03T07:00:00Z,\xffu7,login,r,success,10.0.0.7"
    lines[12] = b"2025-03-03T11:00:00Z,u11,login"
    lines[15] = b"2025-03-33T14:00:00Z,u14,login,r,success,10.0.0.14"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("size", [1, 2, 3, 5, 500])
def test_a_csv_file_is_read_in_pieces_of_its_records(access_csv, tmp_path, size):
    import pandas as pd

    from analyzer.sources import read_events
    from analyzer.sources.chunks import read_chunks

    # the big file in pieces of 500 only: a piece costs some milliseconds of pandas
    path = access_csv if size == 500 else _small_csv(tmp_path / "small.csv")
    whole = read_events(path)
    chunks = read_chunks(path, size=size)
    frames = list(chunks)
    assert max(len(f) for f in frames) <= size
    assert chunks.result is not None
    assert chunks.result.rejected == whole.rejected  # the same lines, in the same order
    assert chunks.result.records == whole.records
    if path != access_csv:
        assert [r.line for r in whole.rejected] == [6, 8, 9, 13, 16]
    joined = pd.concat(frames, ignore_index=True).sort_values(
        "timestamp", kind="stable", ignore_index=True)
    assert joined.astype(str).equals(whole.frame[joined.columns].astype(str))


def test_what_needs_the_events_is_refused_on_an_engine_before_the_work(damaged):
    """The Dask engine keeps the events on its workers: a rule on actions, or leaving
    alerted windows out, is one clear error before anything is read."""
    from analyzer.errors import ConfigError
    from analyzer.model import AuditModel
    from analyzer.pipeline import score_trail, train_trail
    from analyzer.suppression import parse_suppressions

    never_used = object()  # refused before the engine is asked for anything
    rules = parse_suppressions('{"action": "login", "expires": "2099-01-01", "reason": "x"}')
    with pytest.raises(ConfigError, match="stay on the Dask workers"):
        score_trail(damaged, AuditModel(), suppressions=rules,
                    engine=never_used)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="runs locally"):
        train_trail(damaged, exclude_alerts=[damaged],
                    engine=never_used)  # type: ignore[arg-type]
