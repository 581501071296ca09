"""Issue 4 figures: logging with in-process shipping on vs off, shipping throughput to a
local ``_bulk`` endpoint, and ``watch`` alert latency over several bursts.

    python benchmarks/bench_ship.py [--events 200000] [--bursts 5] [--interval 2]

The bulk endpoint runs in a separate process (like a real cluster would), accepts every
document and answers per-item 201s, so the figures measure this side only.
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import platform
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from analyzer.logger import AuditLogger
from analyzer.sinks.background import BackgroundShipper
from analyzer.sinks.elasticsearch import ElasticsearchSink
from analyzer.sinks.shipper import Shipper


def _serve(port_queue: multiprocessing.Queue) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            n = body.count(b"\n") // 2
            data = orjson.dumps({"errors": False,
                                 "items": [{"create": {"status": 201}}] * n})
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def start_endpoint() -> tuple[multiprocessing.Process, str]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
    proc.start()
    return proc, f"http://127.0.0.1:{queue.get(timeout=10)}"


def log_rate(path: Path, n: int, url: str | None) -> float:
    audit = AuditLogger(path, service="bench")
    shipping = None
    if url:
        shipping = BackgroundShipper(path, [ElasticsearchSink(url, index="audit")], audit=audit)
        shipping.start()
    t = time.perf_counter()
    for i in range(n):
        audit.log("model.download", user="alice", resource="models/m", outcome="success",
                  source_ip="10.0.0.1", message=f"call {i}")
    audit.flush()
    elapsed = time.perf_counter() - t
    if shipping is not None:
        shipping.stop(timeout=30)
    audit.close()
    return n / elapsed


def ship_rate(path: Path, url: str) -> tuple[float, int]:
    sink = ElasticsearchSink(url, index="audit-{yyyy.MM.dd}")
    t = time.perf_counter()
    stats = Shipper(path, sink, batch_records=1000, cursor_file=path.with_suffix(".c")).run()
    return stats.delivered / (time.perf_counter() - t), stats.delivered


def watch_latency(folder: Path, bursts: int, interval: float) -> list[float]:
    from analyzer.model import AuditModel
    from analyzer.synth import SynthConfig, generate
    from analyzer.watch import Watcher, model_scorer

    org = generate(SynthConfig(users=12, days=8, attack_days=1, scenarios=("brute_force",),
                               service_accounts=1))
    model = AuditModel(random_state=0).fit(org.train_events)
    latencies = []
    for b in range(bursts):
        log = folder / f"watch-{b}.jsonl"
        seen = threading.Event()
        watcher = Watcher(log, score_windows=model_scorer(model),
                          on_alert=lambda rows, seen=seen: seen.set(), interval=interval,
                          poll_interval=0.2, state_file=False)
        with AuditLogger(log) as audit:
            audit.log("dataset.read", user="alice", outcome="success", source_ip="10.0.0.5",
                      timestamp=datetime.now(UTC) - timedelta(seconds=30))
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        time.sleep(interval * (0.3 + 0.5 * b / max(1, bursts - 1)))  # bursts at varied phases
        with AuditLogger(log, durability="flush") as audit:
            for i in range(300):
                audit.log("login", user=f"admin{i % 25}", outcome="failure",
                          source_ip="198.51.100.77", message="bad password")
        t = time.monotonic()
        seen.wait(120)
        latencies.append(time.monotonic() - t if seen.is_set() else float("nan"))
        watcher.stop()
        thread.join(30)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{multiprocessing.cpu_count()} cores, Python {platform.python_version()}, "
          f"{socket.gethostname()}")
    proc, url = start_endpoint()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        off, on = [], []
        for r in range(args.rounds):  # interleaved, so drift affects both sides alike
            off.append(log_rate(folder / f"off-{r}.jsonl", args.events, None))
            on.append(log_rate(folder / f"on-{r}.jsonl", args.events, url))
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(f"log() throughput, shipping off: {m_off:,.0f} events/s (median of {args.rounds})")
        print(f"log() throughput, shipping on : {m_on:,.0f} events/s -> {m_on / m_off:.2f}x")
        rate, n = ship_rate(folder / "off-0.jsonl", url)
        print(f"shipping throughput to a local _bulk endpoint: {rate:,.0f} events/s ({n:,})")
        lat = watch_latency(folder, args.bursts, args.interval)
        print(f"watch alert latency (interval {args.interval:g} s, {args.bursts} bursts): "
              f"median {statistics.median(lat):.1f} s, max {max(lat):.1f} s "
              f"({', '.join(f'{x:.1f}' for x in lat)})")
    proc.terminate()


if __name__ == "__main__":
    main()
