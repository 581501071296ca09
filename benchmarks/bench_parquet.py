"""Export a 1M-event trail to Parquet, and read it back against reading the JSONL.

Each step runs in a fresh interpreter, so its peak memory (ru_maxrss) is its own:

    python benchmarks/bench_parquet.py --events 1000000 --rounds 3

The trail (keyed chain, 30 days, ``benchmarks/.data/``) is generated once and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
KEY = b"benchmark-integrity-key-0123456789"
USERS = [f"user{i}" for i in range(50)]

_STEP = """
import json, resource, sys, time
from datetime import datetime, UTC
sys.path.insert(0, {root!r})
step, log, out, key = sys.argv[1:5]
start = time.perf_counter()
if step == "export":
    from analyzer.export import export_parquet
    rows = export_parquet(log, out, key=key.encode()).records
else:
    from analyzer.sources import read_events
    since = datetime(2026, 1, 24, tzinfo=UTC) if step == "parquet-last-week" else None
    rows = len(read_events(log if step == "jsonl" else out, since=since).frame)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"rows": rows, "seconds": seconds, "peak_mb": peak}}))
"""


def make_trail(path: Path, n: int) -> None:
    from analyzer.logger import AuditLogger

    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=30) / n
    with AuditLogger(path, key=KEY, service="bench") as audit:
        for i in range(n):
            audit.log("dataset.read" if i % 3 else "login", user=USERS[i % 50],
                      resource=f"datasets/d{i % 40}", source_ip=f"10.0.{i % 7}.{i % 200}",
                      outcome="failure" if i % 13 == 0 else "success", bytes=i % 5000,
                      timestamp=start + step * i)


def run(step: str, log: Path, out: Path) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", _STEP.format(root=root), step, str(log),
                           str(out), KEY.decode()], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    log = DATA / f"parquet-{args.events}.jsonl"
    if not log.exists():
        make_trail(log, args.events)
    out = DATA / f"parquet-{args.events}-export"
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        shutil.rmtree(out, ignore_errors=True)
        for step in ("export", "jsonl", "parquet", "parquet-last-week"):
            results.setdefault(step, []).append(run(step, log, out))
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    print(f"trail {log.stat().st_size / 1e6:,.0f} MB, export {size / 1e6:,.0f} MB "
          f"({len(list(out.glob('dt=*')))} days), {args.rounds} rounds, medians:")
    base = statistics.median(r["seconds"] for r in results["jsonl"])
    for step, rounds in results.items():
        seconds = statistics.median(r["seconds"] for r in rounds)
        peak = statistics.median(r["peak_mb"] for r in rounds)
        print(f"  {step:18} {rounds[0]['rows']:>9,} rows  {seconds:6.2f} s  "
              f"({seconds / base:4.2f}x the JSONL read)  peak {peak:,.0f} MB")


if __name__ == "__main__":
    main()
