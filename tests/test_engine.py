"""The Dask engine: partitions of the inputs (no dask needed), and train + score on a
``LocalCluster`` giving what the local engine gives (needs the ``dask`` extra)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer.engine.partitions import (
    merge_accounting,
    plan_partitions,
    read_partition,
    renumber,
    worker_options,
)
from analyzer.errors import ConfigError
from analyzer.sources import is_side_file, read_events
from analyzer.synth import SynthConfig, generate, write_audit_log
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=12, days=8, attack_days=2, seed=5))


@pytest.fixture(scope="module")
def series(org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trail of a few thousand events rotated into several files."""
    folder = tmp_path_factory.mktemp("series")
    log = folder / "audit.jsonl"
    write_audit_log(org.events, log, rotate_bytes=1 << 20)
    return log


def _files(log: Path) -> list[Path]:
    return [p for p in sorted(log.parent.glob(log.name + "*")) if not is_side_file(p)]


def _read_all(parts, options=None):
    results = [read_partition(p, options or {}) for p in parts]
    frames = [r.frame for r, _ in results if len(r.frame)]
    return pd.concat(frames, ignore_index=True), results


def test_a_rotated_series_is_its_files_oldest_first(series: Path) -> None:
    files = _files(series)
    assert len(files) >= 3, "the fixture should rotate"
    parts = plan_partitions([str(series) + "*"])
    assert [p.kind for p in parts] == ["file"] * len(files)
    assert parts[-1].source == str(series)  # the active file holds the newest records
    frame, _ = _read_all(parts)
    # each file's events by time, the files oldest first: one stable sort by time gives the
    # local read (the rotation records carry the time they were written, so files overlap)
    assert frame["sequence"].iloc[:100].is_monotonic_increasing
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    local = read_events(str(series) + "*").frame
    for column in ("timestamp", "user", "action", "sequence"):
        assert frame[column].astype(str).tolist() == local[column].astype(str).tolist()


def test_byte_ranges_read_every_line_once_and_number_rejects_in_the_file(
        series: Path, tmp_path: Path) -> None:
    lines = b"".join(f.read_bytes() for f in _files(series)).splitlines(keepends=True)
    broken = tmp_path / "audit.jsonl"
    lines[100] = b'{"@timestamp": "not json\n'
    lines[2500] = b"garbage\n"
    broken.write_bytes(b"".join(lines))
    parts = plan_partitions([broken], target_bytes=256 << 10)
    assert len(parts) > 10 and {p.kind for p in parts} == {"range"}
    frame, results = _read_all(parts)
    local = read_events(broken)
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    assert frame["event_id"].tolist() == local.frame["event_id"].tolist()
    rejected = [r for group in renumber(parts, results) for r in group]
    assert [r.line for r in rejected] == [r.line for r in local.rejected] == [101, 2501]
    merged = merge_accounting([r for r, _ in results], len(frame))
    assert merged.records == local.records
    assert merged.used == len(local.frame)
    assert merged.accounting() == local.accounting()


@pytest.mark.parametrize("workers", [2, 3])
def test_a_large_file_gives_every_worker_the_same_number_of_ranges(
        series: Path, tmp_path: Path, workers: int) -> None:
    from analyzer.engine.dask_engine import RANGES_PER_WORKER, _plan

    one = tmp_path / "audit.jsonl"
    one.write_bytes(b"".join(f.read_bytes() for f in _files(series)))
    target = 256 << 10
    parts = _plan([str(one)], format=None, since=None, until=None, workers=workers,
                  target_bytes=target)
    # no worker idles through phase 1's last round, and no range grows past the target
    assert {p.kind for p in parts} == {"range"}
    assert len(parts) % workers == 0 and len(parts) >= RANGES_PER_WORKER * workers
    assert max(p.stop - p.start for p in parts) <= target
    frame, _ = _read_all(parts)
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    assert frame["event_id"].tolist() == read_events(one).frame["event_id"].tolist()


def test_a_parquet_export_is_cut_by_day(series: Path, tmp_path: Path) -> None:
    from analyzer.export import export_parquet

    out = tmp_path / "export"
    export_parquet(_files(series), out)
    parts = plan_partitions([out])
    days = sorted(p.name for p in out.iterdir() if p.name.startswith("dt="))
    assert len(parts) == len(days) >= 8
    assert all(p.kind == "row_groups" for p in parts)
    frame, _ = _read_all(parts)
    local = read_events(out).frame
    assert frame["event_id"].tolist() == local["event_id"].tolist()


def test_keys_never_go_to_a_worker() -> None:
    with pytest.raises(ConfigError, match="never sent to a worker"):
        worker_options({"decrypt_keys": (b"k" * 32,), "clear_only": False})
    assert worker_options({"clear_only": True, "decrypt_keys": ()}) == {"clear_only": True}


# -- train + score on a LocalCluster: what the local engine gives ------------------------------

@pytest.fixture(scope="module")
def scheduler():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _alerts(log: Path, unseal=None) -> list[dict]:
    """The alert records written back, without what differs between two runs (when they
    were written, their chain, the model's id); opened with ``unseal`` when sealed."""
    out = []
    for line in log.read_text().splitlines():
        doc = json.loads(line)
        doc = unseal(doc) if unseal is not None else doc
        if doc.get("event", {}).get("kind") != "alert":
            continue
        event = {k: v for k, v in doc["event"].items()
                 if k not in ("id", "sequence", "hash", "created", "ingested")}
        out.append({"event": event, "user": doc.get("user"), "source": doc.get("source"),
                    "message": doc["message"], "analyzer": doc.get("analyzer", {}).get("alert")
                    or {k: v for k, v in doc.get("analyzer", {}).items() if k != "chain"}})
    return out


def _train_and_score(inputs: list[str], out: Path, engine: list[str], unseal=None
                     ) -> tuple[pd.DataFrame, list[dict]]:
    from analyzer.cli import main

    model, scores, alerts = out / "model.joblib", out / "scores.csv", out / "alerts.jsonl"
    assert main(["train", *inputs, "--model", str(model), *engine]) == 0
    assert main(["score", *inputs, "--model", str(model), "--scores", str(scores),
                 "--audit-log", str(alerts), *engine]) == 0
    return pd.read_csv(scores, keep_default_na=False), _alerts(alerts, unseal)


def _same_scores(dask: pd.DataFrame, local: pd.DataFrame, at_least: int = 100) -> None:
    assert list(dask.columns) == list(local.columns)
    assert len(dask) == len(local) > at_least
    numbers = [c for c in local.columns if pd.api.types.is_float_dtype(local[c])]
    others = [c for c in local.columns if c not in numbers]
    pd.testing.assert_frame_equal(dask[others], local[others])
    np.testing.assert_allclose(dask[numbers].to_numpy(), local[numbers].to_numpy(),
                               rtol=0, atol=1e-9)


@pytest.mark.slow
def test_dask_engine_scores_a_rotated_series_as_the_local_engine(
        series: Path, scheduler: str, tmp_path: Path) -> None:
    inputs = [str(series) + "*"]
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    local = _train_and_score(inputs, tmp_path / "local", [])
    dask = _train_and_score(inputs, tmp_path / "dask", ["--scheduler", scheduler])
    _same_scores(dask[0], local[0])
    assert local[1], "the synthetic attacks should alert"
    assert dask[1] == local[1]


@pytest.mark.slow
def test_dask_engine_scores_a_parquet_export_as_the_local_engine(
        series: Path, scheduler: str, tmp_path: Path) -> None:
    from analyzer.cli import main

    export = tmp_path / "export"
    assert main(["export", *map(str, _files(series)), "--parquet", str(export)]) == 0
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    local = _train_and_score([str(export)], tmp_path / "local", [])
    dask = _train_and_score([str(export)], tmp_path / "dask",
                            ["--engine", "dask", "--scheduler", scheduler])
    _same_scores(dask[0], local[0])
    assert local[1] and dask[1] == local[1]


@pytest.mark.slow
def test_the_dask_engine_tells_the_records_read_and_the_windows_as_it_goes(
        series: Path, scheduler: str) -> None:
    """What a terminal's progress line is drawn from on the engine: records read as each
    partition is mapped (up to the read's count, all partitions), then windows as each
    block is computed (from 0 as phase 2 begins, up to all blocks)."""
    from distributed import Client

    from analyzer.engine import DaskEngine
    from analyzer.pipeline import score_trail, train_trail

    steps: list = []
    with Client(scheduler) as client:
        engine = DaskEngine(client)
        trained = train_trail([str(series) + "*"], engine=engine, progress=steps.append)
        scored = score_trail([str(series) + "*"], trained.model, engine=engine,
                             progress=steps.append)
    parts = len(plan_partitions([str(series) + "*"]))
    assert parts > 1
    # train: one step per partition mapped, then the windows
    first = steps[:steps.index(next(s for s in steps if s.stage == "windows"))]
    records = [s.done for s in first]
    assert len(first) == parts and records == sorted(records)
    assert records[-1] == trained.reading.records and first[-1].share == 1.0
    assert sum(s.stage == "reading" for s in steps) == 2 * parts  # and score's
    windows = [s for s in steps if s.stage == "windows"]
    starts = [i for i, s in enumerate(windows) if s.done == 0 and s.share == 0.0]
    assert len(starts) == 2  # phase 2 of train, then of score
    of_score = windows[starts[1]:]
    assert [s.done for s in of_score] == sorted(s.done for s in of_score)
    assert of_score[-1].share == 1.0 and of_score[-1].done == len(scored.scores)


def test_without_the_extra_the_dask_engine_is_one_line(monkeypatch, capsys,
                                                       series: Path) -> None:
    import analyzer.engine
    from analyzer.cli import main

    monkeypatch.setattr(analyzer.engine, "dask_available", lambda: False)
    code = main(["score", str(series), "--model", "m.joblib", "--engine", "dask"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["audit-analyzer score: error: --engine dask needs the dask extra: "
                   "pip install 'audit-analyzer[dask]'"]


def test_an_encrypted_trail_needs_consent_to_decrypt_for_the_workers(
        capsys, series: Path, tmp_path: Path) -> None:
    from analyzer.cli import main

    key = tmp_path / "enc.key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    code = main(["train", str(series), "--model", str(tmp_path / "m.joblib"),
                 "--engine", "dask", "--encryption-key-file", str(key)])
    assert code == 2
    assert "--decrypt-on-workers" in capsys.readouterr().err


@pytest.mark.slow
def test_decrypt_on_workers_scores_an_encrypted_trail_as_the_local_engine(
        org, scheduler: str, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from analyzer.cli import main

    enc = tmp_path / "enc.key"
    enc.write_text("ab" * 32)
    enc.chmod(0o600)
    data = tmp_path / "input.csv"
    events = org.events[org.events["timestamp"] < org.events["timestamp"].min()
                        + pd.Timedelta(days=4)]
    events.assign(timestamp=events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(
        data, index=False)
    log = tmp_path / "audit.jsonl"
    keys = ["--encryption-key-file", str(enc)]
    assert main(["ingest", str(data), "--log", str(log), *keys]) == 0
    assert "alice" not in log.read_text()  # the trail is sealed
    from analyzer.crypto import RecordCipher

    unseal = RecordCipher(keys=(bytes.fromhex("ab" * 32),)).unseal
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    local = _train_and_score([str(log), *keys], tmp_path / "local", [], unseal)
    dask = _train_and_score([str(log), *keys], tmp_path / "dask",
                            ["--scheduler", scheduler, "--decrypt-on-workers"], unseal)
    _same_scores(dask[0], local[0])
    assert local[1] and dask[1] == local[1]
    assert local[1][0]["source"] or local[1][0]["user"]  # opened: who is in clear


def test_a_whole_file_partition_is_mapped_in_pieces_as_it_is_read_whole() -> None:
    """Phase 1 of a file without byte ranges (an sshd log) read in pieces: the worker holds
    one piece's arrays at a time, and the partition's slots, counts, accounting and merged
    statistics are those of the whole read."""
    from analyzer.engine.dask_engine import _phase1
    from analyzer.features import FeatureExtractor

    log = shared_data("loghub", "OpenSSH_2k.log")
    (part,) = plan_partitions([str(log)], format="sshd")
    assert part.kind == "file"
    spec = FeatureExtractor().stats_spec(fitting=True)
    options = {"year": 2024}
    whole = _phase1(part, options, None, None, spec, None)
    pieces = _phase1(part, options, None, None, spec, 300)
    assert len(whole[2]) == 1 and len(pieces[2]) > 3  # one array per piece
    np.testing.assert_array_equal(pieces[0].slots, whole[0].slots)
    np.testing.assert_array_equal(pieces[0].counts, whole[0].counts)
    assert pieces[0].accounting.used == whole[0].accounting.used > 1000
    assert pieces[0].accounting.records == whole[0].accounting.records
    assert pieces[0].accounting.rejected == whole[0].accounting.rejected
    assert sum(ev.n for ev in pieces[2]) == whole[2][0].n
    assert sum(ev.n for ev in pieces[3]) == whole[3][0].n > 0  # the failed logins


@pytest.mark.slow
def test_dask_engine_reads_an_sshd_log_in_pieces_as_the_local_engine_reads_it_whole(
        scheduler: str, tmp_path: Path) -> None:
    log = shared_data("loghub", "OpenSSH_2k.log")
    inputs = [str(log), "--year", "2024"]
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    local = _train_and_score(inputs, tmp_path / "local", ["--chunk-events", "0"])
    dask = _train_and_score(inputs, tmp_path / "dask",
                            ["--scheduler", scheduler, "--chunk-events", "300"])
    _same_scores(dask[0], local[0], at_least=10)  # a small log: fewer windows
    assert local[1] and dask[1] == local[1]  # the brute force alerts, on both


def test_a_jsonl_url_is_cut_into_byte_ranges_like_a_local_file(series: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    data = _files(series)[0].read_bytes()
    with fsspec.open("memory://trail/audit.jsonl", "wb") as handle:
        handle.write(data)
    # ranges of a fifth of the file (its size varies with the generated trail)
    parts = plan_partitions(["memory://trail/audit.jsonl*"], target_bytes=len(data) // 5)
    assert len(parts) > 3 and {p.kind for p in parts} == {"range"}
    frame, _ = _read_all(parts)
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    assert frame["event_id"].tolist() == read_events(_files(series)[0]).frame[
        "event_id"].tolist()


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], "tcp://10.0.0.5:8786", None),  # the variable alone never switches the engine on
    (["--engine", "dask"], "tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    (["--engine", "dask"], None, "local cluster"),
    (["--scheduler", "tcp://10.0.0.9:8786"], "tcp://10.0.0.5:8786", "tcp://10.0.0.9:8786"),
    (["--engine", "local"], "tcp://10.0.0.5:8786", None),
])
def test_the_scheduler_comes_from_the_flag_then_the_environment(monkeypatch, argv, env,
                                                                 expected) -> None:
    import analyzer.engine
    from analyzer.cli import _engine, build_parser

    asked = []

    class Engine:
        n_workers, dashboard_link = 2, None

        @classmethod
        def connect(cls, address):
            asked.append(address or "local cluster")
            return cls()

    monkeypatch.setattr(analyzer.engine, "DaskEngine", Engine)
    monkeypatch.setattr(analyzer.engine, "dask_available", lambda: True)
    monkeypatch.setattr(_engine, "_quiet_distributed", lambda: None)
    if env is None:
        monkeypatch.delenv(_engine.SCHEDULER_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(_engine.SCHEDULER_VARIABLE, env)
    args = build_parser().parse_args(["score", "x.jsonl", "--model", "m.joblib", *argv])
    engine = _engine.engine_from_args(args)
    assert (engine is None) == (expected is None)
    assert asked == ([] if expected is None else [expected])


# -- the README's commands: a scheduler and workers started as a user starts them ---------------

def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def dask_cli_cluster(tmp_path_factory: pytest.TempPathFactory):
    """``dask scheduler`` and ``dask worker ... --nworkers 2 --nthreads 1`` as separate
    processes (the README's "When one machine is not enough"), stopped afterwards."""
    import shutil
    import signal
    import subprocess

    distributed = pytest.importorskip("distributed")
    dask_cli = shutil.which("dask")
    if dask_cli is None:
        pytest.skip("the `dask` command (the dask extra's CLI) is not on PATH")
    address = f"tcp://127.0.0.1:{_free_port()}"
    logs = tmp_path_factory.mktemp("dask-cli")
    started = []
    try:
        for name, argv in [
                ("scheduler", ["scheduler", "--host", "127.0.0.1",
                               "--port", address.rsplit(":", 1)[1], "--dashboard-address", ":0"]),
                ("worker", ["worker", address, "--nworkers", "2", "--nthreads", "1",
                            "--dashboard-address", ":0"])]:
            with open(logs / f"{name}.log", "wb") as out:
                started.append(subprocess.Popen([dask_cli, *argv], stdout=out,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(started):  # the workers first, then the scheduler
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_the_readme_cluster_commands_score_as_the_local_engine(
        series: Path, dask_cli_cluster: str, tmp_path: Path) -> None:
    """The commands of the README, each a process: `train` through `--scheduler`, `score`
    through `AUDIT_DASK_SCHEDULER` and `--engine dask`; the scores and alerts are the local
    engine's."""
    import subprocess
    import sys

    inputs = [str(series) + "*"]
    (tmp_path / "local").mkdir()
    local = _train_and_score(inputs, tmp_path / "local", [])
    model, scores, alerts = (tmp_path / "model.joblib", tmp_path / "scores.csv",
                             tmp_path / "alerts.jsonl")
    command = [sys.executable, "-m", "analyzer"]
    env = {k: v for k, v in os.environ.items() if k != "AUDIT_DASK_SCHEDULER"}
    trained = subprocess.run([*command, "train", *inputs, "--model", str(model),
                              "--scheduler", dask_cli_cluster],
                             capture_output=True, text=True, env=env, check=False)
    assert trained.returncode == 0, trained.stderr
    scored = subprocess.run([*command, "score", *inputs, "--model", str(model),
                             "--scores", str(scores), "--audit-log", str(alerts),
                             "--engine", "dask"], capture_output=True, text=True,
                            env={**env, "AUDIT_DASK_SCHEDULER": dask_cli_cluster},
                            check=False)
    assert scored.returncode == 0, scored.stderr
    # the cluster named is the one used (not a local cluster started instead)
    assert dask_cli_cluster in trained.stderr + trained.stdout
    assert dask_cli_cluster in scored.stderr + scored.stdout
    _same_scores(pd.read_csv(scores, keep_default_na=False), local[0])
    assert local[1] and _alerts(alerts) == local[1]
