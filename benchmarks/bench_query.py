"""Benchmark for issue 8: ``query`` against ``grep`` and its peak memory on a large trail.

Figures:

1. ``query TRAIL --user X --since 1d`` over a 1M-event trail against ``grep -c X`` over the
   same file (target: at most twice grep's time), warm page cache, median of ``--repeat``
   runs; measured in-process (the library call) and as a command (a fresh Python process).
2. Peak resident memory of the query command over a ~3 GB trail (the 1M trail repeated).

The trail is a synthetic organisation (:mod:`analyzer.synth`, twelve weeks) written through
the real logger. ``--since 1d`` is given as the absolute time one day before the trail's last
record, so that the figure does not depend on the day the benchmark runs (the data in
``benchmarks/.data/``, git-ignored, is reused between runs).

Run: ``python benchmarks/bench_query.py [--events 1000000] [--big-gb 3] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"
sys.path.insert(0, str(ROOT))

from analyzer.query import Filter, ScanStats, parse_time, scan  # noqa: E402


def build_trail(events: int) -> Path:
    from analyzer.synth import benchmark_config, generate, write_audit_log

    path = DATA / f"query-{events // 1000}k.jsonl"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    days = 84
    base = benchmark_config(events)
    users = max(4, round(events / (days * 28.5)))
    start = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)).normalize()
    config = dataclasses.replace(base, users=users, days=days, start=start,
                                 instances_per_scenario=max(3, users // 100))
    t = time.perf_counter()
    org = generate(config)
    print(f"generated {len(org.events):,} events in {time.perf_counter() - t:.1f}s",
          file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    write_audit_log(org.events, tmp)
    tmp.rename(path)
    return path


def build_big(trail: Path, gigabytes: float) -> Path:
    path = DATA / f"query-{gigabytes:g}gb.jsonl"
    target = int(gigabytes * 1e9)
    if path.exists() and path.stat().st_size >= target:
        return path
    size = trail.stat().st_size
    with path.open("wb") as out:
        for _ in range(max(1, -(-target // size))):
            with trail.open("rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    return path


def last_timestamp(trail: Path) -> datetime:
    with trail.open("rb") as handle:
        handle.seek(max(0, trail.stat().st_size - (1 << 20)))
        last = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return parse_time(orjson.loads(last)["@timestamp"])


def pick_user(trail: Path) -> str:
    """A typical user: the median by number of events."""
    from analyzer.sources import read_events

    counts = read_events(trail).frame["user"].value_counts()
    counts = counts[counts.index != ""]
    return str(counts.index[len(counts) // 2])


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def run(cmd: list[str], stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, check=False)


_QUERY_CMD = (
    "import sys\n"
    "from analyzer.cli.query import register\n"
    "import argparse\n"
    "p = argparse.ArgumentParser(); s = p.add_subparsers(dest='command'); register(s)\n"
    "a = p.parse_args(['query', *sys.argv[1:]]); sys.exit(a.func(a))\n"
)


def query_cmd(*args: str) -> list[str]:
    """The query command in a fresh interpreter (registered directly, so the figure does
    not depend on which other commands the CLI imports)."""
    return [sys.executable, "-c", _QUERY_CMD, *args]


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of a child process."""
    code = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--big-gb", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.chdir(ROOT)

    trail = build_trail(args.events)
    user = pick_user(trail)
    lines = sum(1 for _ in trail.open("rb"))
    size = trail.stat().st_size
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print(f"trail: {trail.name}, {lines:,} events, {size / 1e6:,.0f} MB; user {user!r}")
    run(["cat", str(trail)])  # warm the page cache

    rows = []
    grep_s, grep_out = timed(lambda: run(["grep", "-c", user, str(trail)],
                                         stdout=subprocess.PIPE).stdout, args.repeat)
    rows.append(("grep -c USER TRAIL", grep_s, int(grep_out)))

    since = last_timestamp(trail) - timedelta(days=1)
    since_text = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"--since 1d is {since_text} (one day before the last record)")
    flt = Filter(users=(user,), since=since)
    lib_s, lib_n = timed(lambda: sum(b.table.num_rows for b in scan(trail, flt)), args.repeat)
    rows.append(("library: scan(--user USER --since 1d)", lib_s, lib_n))
    cmd_s, _ = timed(lambda: run(query_cmd(str(trail), "--user", user, "--since", since_text,
                                           "--format", "json")), args.repeat)
    rows.append(("command: query TRAIL --user USER --since 1d --format json", cmd_s, lib_n))
    start_s, _ = timed(lambda: run([sys.executable, "-c", "import analyzer.cli.query"]),
                       args.repeat)
    rows.append(("  of which: interpreter start + imports", start_s, None))

    for label, other in (("--user USER (all time)", Filter(users=(user,))),
                         ("--text denied (every line parsed)", Filter(text="denied")),
                         ("--since 1d (no literal)", Filter(since=since)),
                         ("--action 'permission.*' (full parse)",
                          Filter(actions=("permission.*",)))):
        t, n = timed(lambda f=other: sum(b.table.num_rows for b in scan(trail, f)),
                     max(1, args.repeat // 2))
        rows.append((f"library: scan({label})", t, n))

    print("\n| what | median s | matches | vs grep |\n|---|---:|---:|---:|")
    for what, seconds, n in rows:
        ratio = f"{seconds / grep_s:.2f}x" if grep_s else ""
        print(f"| {what} | {seconds:.3f} | {'' if n is None else f'{n:,}'} | {ratio} |")

    big = build_big(trail, args.big_gb)
    run(["cat", str(big)])
    print(f"\nbig trail: {big.name}, {big.stat().st_size / 1e9:.2f} GB")
    print("| command | seconds | peak RSS MB |\n|---|---:|---:|")
    for label, extra in (("--user USER --since 1d --count",
                          ["--user", user, "--since", since_text]),
                         ("--action 'permission.*' --count", ["--action", "permission.*"]),
                         ("--since 1d --count", ["--since", since_text]),
                         ("--text denied --count (every line parsed)", ["--text", "denied"])):
        seconds, rss = peak_rss_mb(query_cmd(str(big), *extra, "--count"))
        print(f"| query BIG {label} | {seconds:.2f} | {rss:,.0f} |")
    stats = ScanStats()
    sum(b.table.num_rows for b in scan(big, Filter(users=(user,)), stats=stats))
    print(f"\n(own process peak so far: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")


if __name__ == "__main__":
    main()
