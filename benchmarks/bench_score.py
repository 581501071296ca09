"""`score` and `train` end to end on a generated 1M-event log, against pyarrow's parse (issue 3).

    python benchmarks/bench_score.py                  # 1M events, 3 rounds
    python benchmarks/bench_score.py --events 200000 --rounds 2
    python benchmarks/bench_score.py --days 32 --train-days 2   # last week's model, a month

Each measurement runs in a fresh process so that its peak memory (max RSS) is its own:
  * ``pyarrow.json.read_json`` of the log (the floor: parsing only),
  * ``audit-analyzer train`` on the log,
  * ``audit-analyzer score`` of the log with that model (read, features, scoring, scores file,
    alerts written back into a copy of the log).
With ``--train-days N`` the model is trained on the log's first N days only (``train
--until``) and scores the whole log (issue 15 item 11: a model trained on 2 days scoring a
32-day log, where most windows are new to it). Target: score at most 3x the parse time.
Medians over the rounds; the machine is shared, so the ratio, measured in the same run, is
the figure to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from analyzer.synth import SynthConfig, benchmark_config

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"

PARSE = "import sys, pyarrow.json as pj; pj.read_json(sys.argv[1])"


def log_config(events: int, days: int | None) -> SynthConfig:
    """The synthetic organisation of about ``events`` events over ``days`` days (default:
    :func:`~analyzer.synth.benchmark_config`'s three weeks)."""
    if days is None:
        return benchmark_config(events)
    # benchmark_config sizes the staff for three weeks; scale so the log keeps ~events
    return dataclasses.replace(benchmark_config(round(events * 21 / days)), days=days)


def generated_log(events: int, days: int | None = None) -> Path:
    """A chained audit log of about ``events`` events from the synthetic organisation."""
    path = DATA / (f"score-{events}.jsonl" if days is None else f"score-{events}-{days}d.jsonl")
    if not path.exists():
        from analyzer.synth import generate, write_audit_log

        DATA.mkdir(exist_ok=True)
        org = generate(log_config(events, days))
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        write_audit_log(org.events, tmp)
        tmp.rename(path)
    return path


def timed(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:]); dt = time.perf_counter() - t; "
               "m = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
               "print(dt, m); sys.exit(r.returncode)")
    out = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True,
                         text=True, check=True)
    seconds, peak = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=None,
                        help="days the log spans (default: benchmark_config's 21)")
    parser.add_argument("--train-days", type=int, default=None,
                        help="train on the first N days only, then score the whole log")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_logger import machine

    log = generated_log(args.events, args.days)
    lines = sum(1 for _ in log.open("rb"))
    print(f"machine: {machine()}")
    print(f"log: {lines:,} events, {log.stat().st_size / 1e6:,.0f} MB ({log})")
    cli = [sys.executable, "-m", "analyzer.cli"]
    until = []
    if args.train_days is not None:
        start = log_config(args.events, args.days).start
        end = start + pd.Timedelta(days=args.train_days)
        until = ["--until", end.strftime("%Y-%m-%dT%H:%M:%SZ")]
        print(f"train: {start:%Y-%m-%d} to {end:%Y-%m-%d} ({args.train_days} days); "
              "score: the whole log")
    results: dict[str, list[tuple[float, float]]] = {"parse": [], "train": [], "score": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.joblib"
        for _ in range(args.rounds):
            results["parse"].append(timed([sys.executable, "-c", PARSE, str(log)]))
            results["train"].append(timed([*cli, "train", str(log), *until,
                                                "--model", str(model)]))
            copy = Path(tmp) / "scored.jsonl"
            shutil.copyfile(log, copy)
            results["score"].append(timed([*cli, "score", str(copy), "--model", str(model),
                                           "--trust-unsigned-model",
                                           "--scores", str(Path(tmp) / "scores.csv")]))
            copy.unlink()
    parse = statistics.median(t for t, _ in results["parse"])
    print(f"\nmedian of {args.rounds} rounds:")
    print(f"  {'step':8s} {'seconds':>8s} {'x parse':>8s} {'peak MB':>8s}")
    for name, runs in results.items():
        seconds = statistics.median(t for t, _ in runs)
        peak = max(m for _, m in runs)
        print(f"  {name:8s} {seconds:8.2f} {seconds / parse:8.2f} {peak:8.0f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    started = time.perf_counter()
    main()
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")
