"""Real PostgreSQL and Prometheus servers for the tests and for ``dashboards/render.py``.

Plain context managers (no pytest here, so the dashboard renderer can start the same services
the integration tests use): each raises :class:`Unavailable` with how to install what is
missing, and the test fixtures turn that into a skip.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Unavailable(Exception):
    """A server's binaries or client library are not installed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder on a free loopback port; yields the URL of
    its empty ``audit`` database. The server refuses to run as root, so as root it runs as
    the ``postgres`` account (or ``nobody``)."""
    try:
        import psycopg
    except ImportError:
        raise Unavailable("psycopg 3 is the optional [postgres] extra") from None
    bindir = _pg_bindir()
    if bindir is None:
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                          "install them with: apt-get install -y postgresql")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="audit-pg-"))
    if os.geteuid() == 0:
        user = "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = "nobody"
        prefix = ["runuser", "-u", user, "--"]
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = free_port()
    run = lambda *cmd: subprocess.run([*prefix, *map(str, cmd)], check=True,  # noqa: E731
                                      capture_output=True, timeout=120)
    try:
        run(bindir / "initdb", "-D", data, "-U", "audit", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c full_page_writes=off", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(
            f"could not start PostgreSQL: {detail.decode(errors='replace')[-500:]}") from None
    try:
        with psycopg.connect(f"postgresql://audit@127.0.0.1:{port}/postgres",
                             autocommit=True) as con:
            con.execute("CREATE DATABASE audit")
        yield f"postgresql://audit@127.0.0.1:{port}/audit"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait(what: str, check: Callable[[], Any], *, timeout: float = 90.0,
         procs: tuple[subprocess.Popen, ...] = ()) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` (and the stderr
    of any of ``procs`` that exited) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[:4]} exited: "
                                     f"{proc.stderr.read().decode()[-2000:]}")
        try:
            last = check()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Prom:
    """Prometheus' HTTP query API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query_range(self, expr: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        body = get_json(f"{self.base}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start, "end": end, "step": step}))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus(folder: Path, targets: list[str], rules: Path) -> Iterator[Prom]:
    """Debian's ``prometheus`` with its config and data in ``folder`` (created), scraping
    ``targets`` every second and evaluating ``rules`` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise Unavailable("prometheus not found; install it with: apt-get install -y prometheus")
    folder.mkdir()
    shutil.copy(rules, folder / rules.name)
    jobs = "\n".join(f"  - job_name: audit-{n}\n    static_configs:\n"
                     f"      - targets: ['{t}']" for n, t in enumerate(targets))
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules.name}\nscrape_configs:\n{jobs}\n")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        prom = Prom(f"http://127.0.0.1:{port}")
        wait("prometheus to start", lambda: urllib.request.urlopen(
            f"{prom.base}/-/ready", timeout=5).status == 200, procs=(proc,), timeout=60)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class EchoingRefuser:
    """A webhook on loopback that refuses every request with 400 and echoes the request
    (headers and body) in its answer, as careless destinations do: what a shipper must never
    copy into its errors, dead letters or the trail. ``url``; ``shutdown()`` when done."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                data = str(self.headers).encode() + body
                self.send_response(400)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def shutdown(self) -> None:
        self.server.shutdown()
