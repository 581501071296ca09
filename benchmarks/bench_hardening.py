"""Hardening costs, each against its baseline in the same run (issue 9).

    python benchmarks/bench_hardening.py --events 50000 --rounds 5

  * logger throughput with encryption at rest on vs off (target: at least 0.6x);
  * with the ``fsync`` durability policy vs the default ``batch`` (recorded);
  * aggregate throughput of 8 writer processes appending to one log vs one process.
Rounds are interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from analyzer.integrity import verify_log
from analyzer.logger import AuditLogger

KEY = b"benchmark-integrity-key-0123456789"
ENC = bytes(range(32))


def rate(path: Path, n: int, **options) -> float:
    audit = AuditLogger(path, key=KEY, service="bench", **options)
    start = time.perf_counter()
    for i in range(n):
        audit.log("dataset.read", user=f"user{i % 50}", resource=f"datasets/d{i % 40}",
                  source_ip="10.1.2.3", outcome="success", message="read a dataset")
    audit.close()
    return n / (time.perf_counter() - start)


def writers(path: Path, processes: int, per_process: int) -> float:
    """Events per second appended to one log by ``processes`` forked writers together."""
    start = time.perf_counter()
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                rate(path, per_process)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    report = verify_log(path, key=KEY)
    if not report.ok or report.records != processes * per_process:
        raise SystemExit(f"chain broken by concurrent writers: {report.summary()}")
    return processes * per_process / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--fsync-events", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_logger import machine

    print(f"machine: {machine()}")
    results: dict[str, list[float]] = {"plain": [], "encrypted": [], "batch": [], "fsync": [],
                                       "1 writer": [], "8 writers": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.rounds):
            results["plain"].append(rate(folder / f"p{r}.jsonl", args.events))
            results["encrypted"].append(rate(folder / f"e{r}.jsonl", args.events,
                                             encryption_key=ENC))
            results["batch"].append(rate(folder / f"b{r}.jsonl", args.fsync_events))
            results["fsync"].append(rate(folder / f"f{r}.jsonl", args.fsync_events,
                                         durability="fsync"))
            results["1 writer"].append(writers(folder / f"w1-{r}.jsonl", 1, args.events))
            results["8 writers"].append(writers(folder / f"w8-{r}.jsonl", 8,
                                                args.events // 8))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedian of {args.rounds} rounds (events/s):")
    for base, other in (("plain", "encrypted"), ("batch", "fsync"), ("1 writer", "8 writers")):
        print(f"  {base:10s} {med[base]:10,.0f}   {other:10s} {med[other]:10,.0f}   "
              f"ratio {med[other] / med[base]:.2f}x")


if __name__ == "__main__":
    main()
