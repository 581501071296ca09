"""`score` and `train` end to end on a generated 1M-event log, against pyarrow's parse (issue 3).

    python benchmarks/bench_score.py                  # 1M events, 3 rounds
    python benchmarks/bench_score.py --events 200000 --rounds 2

Each measurement runs in a fresh process so that its peak memory (max RSS) is its own:
  * ``pyarrow.json.read_json`` of the log (the floor: parsing only),
  * ``audit-analyzer train`` on the log,
  * ``audit-analyzer score`` of the log with that model (read, features, scoring, scores file,
    alerts written back into a copy of the log).
Target: score at most 3x the parse time. Medians over the rounds; the machine is shared, so
the ratio, measured in the same run, is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"

PARSE = "import sys, pyarrow.json as pj; pj.read_json(sys.argv[1])"


def generated_log(events: int) -> Path:
    """A chained audit log of about ``events`` events from the synthetic organisation."""
    path = DATA / f"score-{events}.jsonl"
    if not path.exists():
        from analyzer.synth import benchmark_config, generate, write_audit_log

        DATA.mkdir(exist_ok=True)
        org = generate(benchmark_config(events))
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
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_logger import machine

    log = generated_log(args.events)
    lines = sum(1 for _ in log.open("rb"))
    print(f"machine: {machine()}")
    print(f"log: {lines:,} events, {log.stat().st_size / 1e6:,.0f} MB ({log})")
    cli = [sys.executable, "-m", "analyzer.cli"]
    results: dict[str, list[tuple[float, float]]] = {"parse": [], "train": [], "score": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.joblib"
        for _ in range(args.rounds):
            results["parse"].append(timed([sys.executable, "-c", PARSE, str(log)]))
            results["train"].append(timed([*cli, "train", str(log), "--model", str(model)]))
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
