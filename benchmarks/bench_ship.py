"""Issue 4 figures: logging with in-process shipping on vs off, shipping throughput to a
local ``_bulk`` endpoint, and ``watch`` alert latency over several bursts.

    python benchmarks/bench_ship.py [--events 200000] [--rounds 9] [--bursts 5] [--interval 15]
                                    [--parts log,ship,watch]

The bulk endpoint runs in a separate process (like a real cluster would), accepts every
document and answers per-item 201s, so the figures measure this side only. Logging rounds
with shipping off and on alternate, so a machine that gets busier or quieter during the run
affects both sides alike; medians are reported with every round's figure.
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import os
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
        # Headers and body go out in two writes: without TCP_NODELAY the second waits for
        # the client's delayed ACK (40 ms per request), and the figure would measure that.
        disable_nagle_algorithm = True

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


def log_rate(path: Path, n: int, url: str | None) -> tuple[float, float, float]:
    """log() events per second; with shipping, also the share of the events delivered when
    the last log() returned and the seconds the shipper then took to catch up."""
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
    shipped, catch_up = 0.0, 0.0
    if shipping is not None:
        shipped = shipping.stats()[0].delivered / n
        while shipping.stats()[0].delivered < n and time.perf_counter() - t < 600:
            time.sleep(0.05)
        catch_up = time.perf_counter() - t - elapsed
        shipping.stop(timeout=30)
    audit.close()
    return n / elapsed, shipped, catch_up


def ship_rate(path: Path, url: str) -> tuple[float, float, int]:
    """Events per second, and this process's CPU microseconds per event (the server's own
    work runs in its process and is not counted)."""
    sink = ElasticsearchSink(url, index="audit-{yyyy.MM.dd}")
    t, cpu = time.perf_counter(), time.process_time()
    stats = Shipper(path, sink, batch_records=1000, cursor_file=path.with_suffix(".c")).run()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return stats.delivered / wall, cpu / stats.delivered * 1e6, stats.delivered


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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--parts", default="log,ship,watch",
                        help="comma-separated figures to measure: log, ship, watch")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{multiprocessing.cpu_count()} cores, Python {platform.python_version()}, "
          f"{socket.gethostname()}, load average {os.getloadavg()[0]:.1f}")
    proc, url = start_endpoint()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log_rate(folder / "warm.jsonl", min(args.events, 20_000), url)  # imports, caches
        if "log" in parts or "ship" in parts:
            off, on, shipped, catch_up = [], [], [], []
            for r in range(args.rounds):  # interleaved, so drift affects both sides alike
                first, second = (None, url) if r % 2 == 0 else (url, None)
                for target in (first, second):
                    rate, done, wait = log_rate(
                        folder / f"{'on' if target else 'off'}-{r}.jsonl", args.events, target)
                    (on if target else off).append(rate)
                    if target:
                        shipped.append(done)
                        catch_up.append(wait)
                print(f"  round {r + 1}: off {off[-1]:,.0f}/s, on {on[-1]:,.0f}/s "
                      f"({on[-1] / off[-1]:.2f}x); {shipped[-1]:.0%} delivered when logging "
                      f"ended, the rest {catch_up[-1]:.1f} s later", flush=True)
            m_off, m_on = statistics.median(off), statistics.median(on)
            ratios = [b / a for a, b in zip(off, on, strict=True)]
            print(f"log() throughput, shipping off: {m_off:,.0f} events/s "
                  f"(median of {args.rounds})")
            print(f"log() throughput, shipping on : {m_on:,.0f} events/s -> "
                  f"{m_on / m_off:.2f}x (median of per-round ratios "
                  f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-"
                  f"{max(ratios):.2f}x)")
            print(f"delivered by the end of logging: median {statistics.median(shipped):.0%}; "
                  f"all delivered a median {statistics.median(catch_up):.1f} s later")
        if "ship" in parts:
            rate, cpu, n = ship_rate(folder / "off-0.jsonl", url)
            print(f"shipping throughput to a local _bulk endpoint: {rate:,.0f} events/s "
                  f"({n:,}; {cpu:.1f} us of CPU per event in the shipping process)")
        if "watch" in parts:
            lat = watch_latency(folder, args.bursts, args.interval)
            print(f"watch alert latency (interval {args.interval:g} s, {args.bursts} bursts): "
                  f"median {statistics.median(lat):.1f} s, max {max(lat):.1f} s "
                  f"({', '.join(f'{x:.1f}' for x in lat)})")
    proc.terminate()


if __name__ == "__main__":
    main()
