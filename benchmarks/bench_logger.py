"""Logger and reader throughput against baselines measured in the same run (issue 2).

    python benchmarks/bench_logger.py                 # full run (1M-event read test)
    python benchmarks/bench_logger.py --events 20000 --read-events 100000   # quick

Writes: events per second of
  * the seed's original ``setup_audit_logger`` + ``log_audit_event`` (stdlib logging, text),
  * stdlib logging with python-json-logger,
  * ``AuditLogger.log`` with the keyed chain and the default (batch) durability;
and rows per second of ``read_events`` on a generated log against ``pyarrow.json.read_json``
of the same file. Variants are interleaved over several rounds and the medians reported, since
this machine is shared and noisy; ratios are what to compare.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.json as pj

from analyzer.logger import AuditLogger
from analyzer.sources import read_events

USERS = [f"user{i}" for i in range(50)]
DETAILS = {"user": "bob", "resource": "models/llm-7b", "ip": "10.1.2.3", "outcome": "success"}


# -- the seed's original API, reproduced as it was (plain text through stdlib logging) --------

def seed_setup_audit_logger(log_file: str) -> logging.Logger:
    logger = logging.getLogger(f"seed_audit_logger.{log_file}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    logger.addHandler(handler)
    return logger


def seed_log_audit_event(logger: logging.Logger, event_type: str, details: dict) -> None:
    logger.info(f"Event: {event_type}, Details: {details}")


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def run_seed(path: Path, n: int) -> float:
    logger = seed_setup_audit_logger(str(path))
    start = time.perf_counter()
    for i in range(n):
        seed_log_audit_event(logger, "model.download", {**DETAILS, "user": USERS[i % 50]})
    close_logger(logger)
    return n / (time.perf_counter() - start)


def run_json_logger(path: Path, n: int) -> float:
    from pythonjsonlogger.json import JsonFormatter

    logger = logging.getLogger(f"jsonlogger.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    start = time.perf_counter()
    for i in range(n):
        logger.info("model.download", extra={**DETAILS, "user": USERS[i % 50]})
    close_logger(logger)
    return n / (time.perf_counter() - start)


def run_audit_logger(path: Path, n: int) -> float:
    audit = AuditLogger(path, key=b"benchmark-key-0123456789abcdef", service="bench")
    start = time.perf_counter()
    for i in range(n):
        audit.log("model.download", user=USERS[i % 50], resource="models/llm-7b",
                  source_ip="10.1.2.3", outcome="success")
    audit.close()  # the final flush and checkpoint count: a closed log is a durable log
    return n / (time.perf_counter() - start)


def make_log(path: Path, n: int) -> None:
    with AuditLogger(path, key=b"benchmark-integrity-key-0123456789", service="bench") as audit:
        for i in range(n):
            audit.log("dataset.read" if i % 3 else "login", user=USERS[i % 50],
                      resource=f"datasets/d{i % 40}", source_ip=f"10.0.{i % 7}.{i % 200}",
                      outcome="failure" if i % 13 == 0 else "success", bytes=i % 5000)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per logger round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--read-events", type=int, default=1_000_000)
    parser.add_argument("--read-rounds", type=int, default=3)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        rates: dict[str, list[float]] = {"seed": [], "json-logger": [], "AuditLogger": []}
        runners = {"seed": run_seed, "json-logger": run_json_logger,
                   "AuditLogger": run_audit_logger}
        for r in range(args.rounds):
            for name, runner in runners.items():
                path = tmpdir / f"{name}-{r}.log"
                rates[name].append(runner(path, args.events))
                path.unlink()
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\nlogging, {args.events:,} events x {args.rounds} rounds (median events/s):")
        for name, value in med.items():
            print(f"  {name:12s} {value:12,.0f}  ({value / med['seed']:.2f}x seed)")

        log = tmpdir / "read.jsonl"
        make_log(log, args.read_events)
        size = log.stat().st_size
        arrow, ours = [], []
        for _ in range(args.read_rounds):
            start = time.perf_counter()
            table = pj.read_json(log)
            arrow.append(table.num_rows / (time.perf_counter() - start))
            del table
            start = time.perf_counter()
            result = read_events(log)
            ours.append(len(result.frame) / (time.perf_counter() - start))
            del result
        a, o = statistics.median(arrow), statistics.median(ours)
        print(f"\nreading {args.read_events:,} events ({size / 1e6:,.0f} MB), "
              f"median of {args.read_rounds} (rows/s):")
        print(f"  pyarrow.json.read_json {a:12,.0f}")
        print(f"  read_events            {o:12,.0f}  ({o / a:.2f}x pyarrow)")


if __name__ == "__main__":
    sys.exit(main())
