"""``read_events`` and ``scan`` on a 1M-event audit log: this checkout against another one.

Reading speed moves by +-30 % between runs on a shared machine, so a change to the readers is
judged against a baseline read in the same run, alternating rounds. Each round runs in a fresh
interpreter importing ``analyzer`` from the tree it measures. Three reads are timed:
``read_events(log)``; ``scan`` with ``--user X`` (the literal pre-filter) and with ``--since``
before the first record (the raw time pre-filter, every line parsed). With ``--formats``, the
other readers too, whole (shared code included, unlike ``bench_sources.py --against``, which
swaps one module): sshd, CloudTrail and web access logs on ``bench_sources.py``'s 1M-line
files.

Usage::

    git worktree add /tmp/base <commit>
    python benchmarks/bench_read_compare.py --baseline /tmp/base [--events 1000000] [--rounds 5]
    python benchmarks/bench_read_compare.py --baseline /tmp/base --formats sshd cloudtrail weblog
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
cpu = time.process_time()
from analyzer.query import Filter, parse_time, scan
from analyzer.sources import read_events
start = time.perf_counter()
if {what!r} == "read_events":
    rows = len(read_events({log!r}).frame)
elif {what!r} in ("sshd", "cloudtrail", "weblog"):
    options = {{"year": 2024}} if {what!r} == "sshd" else {{}}
    rows = len(read_events({log!r}, format={what!r}, **options).frame)
else:
    flt = Filter(users=("user0",)) if {what!r} == "scan --user" else \
        Filter(since=parse_time("2000-01-01"))
    rows = sum(b.table.num_rows for b in scan({log!r}, flt))
print(rows, time.perf_counter() - start, time.process_time() - cpu)
"""
READS = ("read_events", "scan --user", "scan --since")
#: --formats: reader -> the bench_sources.py file it reads (made by that script)
FORMAT_FILES = {"sshd": "auth_{n}.log", "cloudtrail": "cloudtrail_{n}.jsonl",
                "weblog": "access_{n}.log"}


#: "wall" or "cpu": which time the figures are (``--cpu``: the process's CPU time, all its
#: threads, which other jobs on a shared machine disturb far less than the wall clock)
CLOCK = {"which": "wall"}


def seconds(tree: Path, log: Path, what: str) -> float:
    code = _TIMER.format(tree=str(tree), log=str(log), what=what)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[2] if CLOCK["which"] == "cpu" else out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare with")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--formats", nargs="+", choices=sorted(FORMAT_FILES), default=(),
                        help="time these readers instead (files from bench_sources.py)")
    parser.add_argument("--cpu", action="store_true",
                        help="compare CPU time (all threads) instead of wall time: steadier "
                             "on a shared machine")
    args = parser.parse_args()
    CLOCK["which"] = "cpu" if args.cpu else "wall"
    if args.formats:
        compare_formats(args)
        return
    log = DATA / f"read_{args.events}.jsonl"
    if not log.exists():
        sys.path.insert(0, str(HERE.parent))
        sys.path.insert(0, str(HERE))
        from bench_logger import make_log

        DATA.mkdir(exist_ok=True)
        make_log(log, args.events)
    trees = {"baseline": args.baseline.resolve(), "this checkout": HERE.parent}
    times: dict[tuple[str, str], list[float]] = {(w, t): [] for w in READS for t in trees}
    for _ in range(args.rounds):
        for what in READS:
            for name, tree in trees.items():
                times[what, name].append(seconds(tree, log, what))
    print(f"{args.events:,} events ({log.stat().st_size / 1e6:,.0f} MB), median "
          f"{CLOCK['which']} seconds of "
          f"{args.rounds} alternating rounds:")
    for what in READS:
        base = statistics.median(times[what, "baseline"])
        for name in trees:
            med = statistics.median(times[what, name])
            print(f"  {what:13s} {name:14s} {med:7.2f} s  ({med / base:.3f}x baseline; rounds "
                  f"{', '.join(f'{v:.2f}' for v in times[what, name])})")


def compare_formats(args: argparse.Namespace) -> None:
    files = {}
    for name in args.formats:
        path = DATA / FORMAT_FILES[name].format(n=args.events)
        if not path.exists():
            raise SystemExit(f"{path} is missing: run python benchmarks/bench_sources.py "
                             f"--lines {args.events} first (it writes the files)")
        files[name] = path
    trees = {"baseline": args.baseline.resolve(), "this checkout": HERE.parent}
    times: dict[tuple[str, str], list[float]] = {(w, t): [] for w in files for t in trees}
    for _ in range(args.rounds):
        for what, path in files.items():
            for name, tree in trees.items():
                times[what, name].append(seconds(tree, path, what))
    print(f"median {CLOCK['which']} seconds of {args.rounds} alternating rounds, "
          f"{args.events:,} lines:")
    for what in files:
        base = statistics.median(times[what, "baseline"])
        for name in trees:
            med = statistics.median(times[what, name])
            print(f"  {what:11s} {name:14s} {med:7.2f} s  ({med / base:.3f}x baseline)")


if __name__ == "__main__":
    main()
