"""Cost of Prometheus metrics to the logger (issue 18): ``log()`` throughput with
``AuditLogger(metrics=AuditMetrics())`` against without, in the same run.

    PYTHONPATH=. python benchmarks/bench_metrics.py --events 100000 --rounds 15

The machine is shared and noisy, so the two variants are interleaved finely: each round opens
one logger of each kind and feeds them alternately in chunks of ``--chunk`` events (ABBA
order), timing every chunk; a round's ratio is its metrics-on rate over its metrics-off rate,
measured over the same seconds. Reported: the median rates, the median of the per-round ratios
and its quartiles. Target: metrics on >= 0.95x of metrics off.
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


def feed(audit: AuditLogger, start: int, n: int) -> float:
    """Seconds to log ``n`` events (numbered from ``start``)."""
    begin = time.perf_counter()
    for i in range(start, start + n):
        audit.log("model.download", user=USERS[i % 50], resource="models/llm-7b",
                  source_ip="10.1.2.3", outcome="success" if i % 7 else "failure")
    return time.perf_counter() - begin


def one_round(folder: Path, n: int, chunk: int, control: bool = False) -> dict[str, float]:
    """Events per second of each variant, fed alternately chunk by chunk (``control``: both
    without metrics, to see the harness' own bias and noise)."""
    key = b"benchmark-key-0123456789abcdef"
    loggers = {"off": AuditLogger(folder / "off.jsonl", key=key, service="bench"),
               "on": AuditLogger(folder / "on.jsonl", key=key, service="bench",
                                 metrics=None if control else AuditMetrics())}
    spent = {"off": 0.0, "on": 0.0}
    for k, start in enumerate(range(0, n, chunk)):
        order = ("off", "on") if k % 4 in (0, 3) else ("on", "off")
        for variant in order:
            spent[variant] += feed(loggers[variant], start, min(chunk, n - start))
    for variant, audit in loggers.items():
        begin = time.perf_counter()
        audit.close()  # the last batch's write counts too
        spent[variant] += time.perf_counter() - begin
        (folder / f"{variant}.jsonl").unlink()
    return {variant: n / seconds for variant, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--control", action="store_true",
                        help="A/A run: the 'on' logger without metrics too")
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            rounds.append(one_round(Path(tmp), args.events, args.chunk, args.control))
    off = statistics.median(r["off"] for r in rounds)
    on = statistics.median(r["on"] for r in rounds)
    ratios = sorted(r["on"] / r["off"] for r in rounds)
    q = len(ratios) // 4
    print(machine())
    print(f"log(), {args.events:,} events x {args.rounds} rounds, interleaved in chunks of "
          f"{args.chunk:,}, median events/s:")
    print(f"  metrics off {off:,.0f}\n  metrics on  {on:,.0f}"
          + ("  (control: without metrics too)" if args.control else ""))
    print(f"  per-round ratio on/off: median {statistics.median(ratios):.3f}x, "
          f"quartiles {ratios[q]:.3f}-{ratios[-1 - q]:.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f}")


if __name__ == "__main__":
    main()
