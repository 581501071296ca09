"""The Dask engine against the single-process streaming path (issue 17): wall time and the
CPU seconds of the whole process tree, alternating, on one generated trail.

    python benchmarks/bench_dask_speed.py --cache /tmp/scale --events 5000000 --rounds 2

Each of ``train`` and ``score`` (the commands of ``bench_scale.py``: the streaming path
through the library, the Dask engine through ``audit-analyzer --engine dask`` with a
``LocalCluster`` of one worker process per core) runs in a fresh process tree. The tree's
CPU (user + sys) is summed over its processes, sampled from /proc every 0.5 s, so the
cluster's workers count; the load average at the start is printed beside it. On a busy
machine, compare the CPU seconds: the wall times then say how the scheduler shared the
cores, not what the engine does. The ratio the issue asks for is streaming's wall over the
engine's, on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import ROOT, commands, generated_trail  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Add the CPU seconds so far of ``root`` and its descendants to ``seen`` (by pid)."""
    parent: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parent.setdefault(int(fields[1]), []).append(int(name))
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(parent.get(pid, []))
        if pid in cpu:
            seen[pid] = max(seen.get(pid, 0.0), cpu[pid])


def measure(command: list[str]) -> dict[str, float]:
    """``command`` in a fresh process tree: wall seconds, the tree's CPU seconds, load."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    seen: dict[int, float] = {}
    while child.poll() is None:
        _tree_cpu(child.pid, seen)
        time.sleep(0.5)
    err = child.stderr.read() if child.stderr else b""
    if child.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{err.decode(errors='replace')}")
    return {"wall": round(time.perf_counter() - started, 1),
            "cpu": round(sum(seen.values()), 1), "load": round(load, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True,
                        help="folder of bench_scale.py's generated trails")
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--paths", nargs="+", default=["streaming", "dask"],
                        choices=["streaming", "dask"])
    args = parser.parse_args()
    trail = generated_trail(args.events, args.cache)
    print(f"# {os.cpu_count()} cores, {args.events:,} events, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for round_ in range(args.rounds):
        for name in args.paths:
            work = args.cache / f"work-speed-{name}-{args.events}"
            work.mkdir(exist_ok=True)
            train, score = commands(trail, work)[name]
            fit, scored = measure(train), measure(score)
            print(json.dumps({"round": round_, "path": name, "train": fit, "score": scored,
                              "wall": round(fit["wall"] + scored["wall"], 1),
                              "cpu": round(fit["cpu"] + scored["cpu"], 1)}), flush=True)


if __name__ == "__main__":
    main()
