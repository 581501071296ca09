"""``read_events`` on a 1M-event audit log: this checkout against another one, same run.

Reading speed moves by +-30 % between runs on a shared machine, so a change to the readers is
judged against a baseline read in the same run, alternating rounds. Each round runs in a fresh
interpreter importing ``analyzer`` from the tree it measures.

Usage::

    git worktree add /tmp/base <commit>
    python benchmarks/bench_read_compare.py --baseline /tmp/base [--events 1000000] [--rounds 5]
    git worktree remove /tmp/base

The log (written once through the real logger, under benchmarks/.data/, which git ignores) is
the one ``bench_logger.py`` reads.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"

_TIMER = """
import sys, time
sys.path.insert(0, {tree!r})
from analyzer.sources import read_events
start = time.perf_counter()
result = read_events({log!r})
print(len(result.frame), time.perf_counter() - start)
"""


def rate(tree: Path, log: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _TIMER.format(tree=str(tree), log=str(log))],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]) / float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare with")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    log = DATA / f"read_{args.events}.jsonl"
    if not log.exists():
        sys.path.insert(0, str(HERE.parent))
        sys.path.insert(0, str(HERE))
        from bench_logger import make_log

        DATA.mkdir(exist_ok=True)
        make_log(log, args.events)
    trees = {"baseline": args.baseline.resolve(), "this checkout": HERE.parent}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rates[name].append(rate(tree, log))
    base = statistics.median(rates["baseline"])
    print(f"read_events, {args.events:,} events ({log.stat().st_size / 1e6:,.0f} MB), "
          f"median of {args.rounds} alternating rounds (rows/s):")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"  {name:14s} {med:12,.0f}  ({med / base:.3f}x baseline; "
              f"rounds {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
