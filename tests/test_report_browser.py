"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

Only the standard library talks to the browser (a minimal websocket client below), so the
test downloads nothing. It opens the report from a file URL, records console messages,
exceptions, dialogs and network requests, checks that the alerts table and every chart are
visible, that hostile strings from the log show literally and run nothing, and saves a
screenshot under the test's temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_report import IMG, SCRIPT, TEMPLATE, scores_for, write_log

from analyzer.report import write_reports

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")


class _WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: masked text frames out, frames in."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text: str) -> None:
        data = text.encode()
        header = bytearray([0x81])
        if len(data) < 126:
            header.append(0x80 | len(data))
        elif len(data) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        mask = os.urandom(4)
        self.sock.sendall(bytes(header) + mask + bytes(b ^ mask[i % 4]
                                                       for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            opcode = first & 0x0F
            if opcode in (0x1, 0x0, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()
            elif opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")

    def close(self) -> None:
        self.sock.close()


class Chromium:
    """A headless Chromium with one page, and every event the page produced."""

    def __init__(self, executable: str, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one names a dead port
        self.log = (profile / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"], stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group, so close() ends every child
        try:
            self._connect(profile)
        except BaseException:
            self.close()
            raise

    def _connect(self, profile: Path) -> None:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start; see {profile / 'chromium.log'}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = _WebSocket(int(port), path)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.receive())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = json.loads(self.ws.receive())
            self.events.append(event)
            if event.get("method") == method:
                return event

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def problems(self) -> list[str]:
        """Console errors and warnings, exceptions, CSP reports and dialogs, as text."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                               "warning"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error",
                                                                                 "warning"):
                out.append(f"log: {params['entry'].get('text')}")
            elif method == "Page.javascriptDialogOpening":
                out.append(f"dialog: {params.get('message')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280,
                  height=min(int(height), 16000), deviceScaleFactor=1, mobile=False)
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
            self.ws = None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(_browser(), tmp_path / "profile")
    yield chromium
    chromium.close()


VISIBLE = """(sel => Array.from(document.querySelectorAll(sel)).map(el => {
  const r = el.getBoundingClientRect(), s = getComputedStyle(el);
  return r.width > 50 && r.height > 20 && s.display !== 'none' && s.visibility !== 'hidden';
}))"""


def test_report_in_the_browser(tmp_path, browser):
    log = write_log(tmp_path / "audit.jsonl", hostile=True)
    html = tmp_path / "report.html"
    write_reports(log, scores=scores_for(hostile=True), html_path=html)
    url = html.as_uri()
    browser.open(url)

    assert browser.problems() == []
    assert browser.requests() == [url], "the report must not fetch anything"

    # the alerts table and every chart are there and visible
    assert browser.evaluate(VISIBLE + "('#alerts-table')") == [True]
    assert browser.evaluate("document.querySelectorAll('#alerts-table tbody.alert').length") == 2
    charts = browser.evaluate("Array.from(document.querySelectorAll('svg.chart'))"
                              ".map(s => s.dataset.chart)")
    assert {"activity-level", "activity-outcome", "categories", "scores"} <= set(charts)
    top_level = "svg.chart:not(tr.alert-detail svg)"
    assert all(browser.evaluate(VISIBLE + f"('{top_level}')"))

    # an alert expands to its context chart and evidence
    assert browser.evaluate(VISIBLE + "('#alert-1 svg.chart')") == [False]
    browser.evaluate("document.querySelector('#alert-1 button.toggle').click()")
    assert browser.evaluate(VISIBLE + "('#alert-1 svg.chart')") == [True]

    # sorting: a click on "Risk" orders alerts by risk ascending, another descending
    risk = ("Array.from(document.querySelectorAll('#alerts-table tbody.alert'))"
            ".map(b => b.rows[0].cells[3].textContent.trim())")
    header = "document.querySelectorAll('#alerts-table thead th')[3]"
    browser.evaluate(f"{header}.click()")
    assert browser.evaluate(risk) == ["60", "100"]
    browser.evaluate(f"{header}.click()")
    assert browser.evaluate(risk) == ["100", "60"]

    # hostile strings show literally and nothing ran
    browser.evaluate("document.querySelectorAll('tbody.alert:not(.open) button.toggle')"
                     ".forEach(b => b.click())")
    text = browser.evaluate("document.body.innerText")
    assert SCRIPT in text and IMG in text and TEMPLATE in text
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert browser.evaluate("document.scripts.length") == 1
    assert browser.problems() == []

    browser.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_reads_without_javascript_and_in_german(tmp_path, browser):
    log = write_log(tmp_path / "audit.jsonl")
    html = tmp_path / "report.html"
    write_reports(log, scores=scores_for(), html_path=html, lang="de")
    browser.call("Emulation.setScriptExecutionDisabled", session=True, value=True)
    browser.open(html.as_uri())
    # without the script every alert's details are open, so nothing is out of reach
    assert browser.evaluate(VISIBLE + "('tr.alert-detail svg.chart')") == [True, True]
    assert "Prüfbericht" in browser.evaluate("document.body.innerText")
    assert browser.problems() == []
    browser.screenshot(tmp_path / "report-de-nojs.png")
