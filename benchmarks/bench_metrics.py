"""Cost of Prometheus metrics to the logger (issue 18): ``log()`` throughput with
``AuditLogger(metrics=AuditMetrics())`` against without, in the same run.

    python benchmarks/bench_metrics.py --events 100000 --rounds 9

The two variants alternate round by round (the machine is shared and noisy); medians and
their ratio are reported. Target: metrics on >= 0.95x of metrics off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from analyzer.logger import AuditLogger
from analyzer.metrics import AuditMetrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_logger import USERS, machine


def run(path: Path, n: int, metrics: AuditMetrics | None) -> float:
    audit = AuditLogger(path, key=b"benchmark-key-0123456789abcdef", service="bench",
                        metrics=metrics)
    start = time.perf_counter()
    for i in range(n):
        audit.log("model.download", user=USERS[i % 50], resource="models/llm-7b",
                  source_ip="10.1.2.3", outcome="success" if i % 7 else "failure")
    audit.close()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for variant in order:
                path = Path(tmp) / f"{variant}-{r}.jsonl"
                rates[variant].append(run(path, args.events,
                                          AuditMetrics() if variant == "on" else None))
                path.unlink()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(machine())
    print(f"log(), {args.events:,} events x {args.rounds} rounds, median events/s:")
    print(f"  metrics off {off:,.0f}\n  metrics on  {on:,.0f}\n  ratio       {on / off:.3f}x")


if __name__ == "__main__":
    main()
