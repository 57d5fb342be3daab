"""Open an HTML report in headless Chromium and report what rendered, over the DevTools protocol.

Why CDP and not `--dump-dom`: the DOM says an <svg> exists, only layout says it has a size,
and console errors (failed resources, script exceptions) arrive as protocol events, not in the
DOM. The client is the `websockets` package Prefect already installs: no Playwright, no driver.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]

# Runs in the page: every SVG's laid-out size and shape count, every table's rows.
INSPECT_JS = """JSON.stringify({
  svgs: [...document.querySelectorAll('svg')].map(s => {const r = s.getBoundingClientRect();
    return {id: s.id || null, width: r.width, height: r.height,
            shapes: s.querySelectorAll('circle,rect,path,line,polyline,polygon').length}}),
  tables: [...document.querySelectorAll('table')].map(t => {const r = t.getBoundingClientRect();
    return {id: t.id || null, rows: t.querySelectorAll('tr').length, width: r.width, height: r.height}}),
  title: document.title})"""


@dataclass
class PageReport:
    """What a page rendered, and every console error or exception it raised."""

    svgs: list[dict]
    tables: list[dict]
    title: str
    errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    def svg(self, element_id: str) -> dict:
        return next(s for s in self.svgs if s["id"] == element_id)

    def table(self, element_id: str) -> dict:
        return next(t for t in self.tables if t["id"] == element_id)


class DevTools:
    """The smallest CDP client: numbered commands, events kept in arrival order."""

    def __init__(self, websocket):
        self.ws, self.next_id, self.events = websocket, 0, []

    def send(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout_s: float = 30.0) -> dict:
        if (seen := next((e for e in self.events if e.get("method") == method), None)) is not None:
            return seen
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == method:
                return message


def console_errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (e.g. a resource that failed to load)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip())
    return errors


@contextmanager
def headless_chromium(binary: str = CHROMIUM, timeout_s: float = 30.0) -> Iterator[str]:
    """A headless Chromium with a fresh profile; yields the DevTools HTTP endpoint, kills it on exit."""
    # Chromium's helpers (zygote, renderers, crashpad) outlive a killed parent for a moment and keep
    # writing the profile: kill the whole process group, and tolerate a file appearing during cleanup.
    with tempfile.TemporaryDirectory(prefix="workhorse-chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield f"http://127.0.0.1:{_devtools_port(Path(profile), process, timeout_s)}"
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _devtools_port(profile: Path, process: subprocess.Popen, timeout_s: float) -> int:
    """Chromium writes the port it chose to DevToolsActivePort once the endpoint listens."""
    marker, deadline = profile / "DevToolsActivePort", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before DevTools was up")
        if marker.exists() and (text := marker.read_text().split()):
            return int(text[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium's DevTools did not start within {timeout_s:.0f} s")


def render_report(
    page: Path, screenshot: Path | None = None, size: tuple[int, int] = (1200, 1600), binary: str = CHROMIUM
) -> PageReport:
    """Load ``page`` as file://, wait for load, measure SVGs and tables, collect errors, screenshot."""
    from websockets.sync.client import connect

    with headless_chromium(binary) as endpoint:
        with urllib.request.urlopen(f"{endpoint}/json/list", timeout=10) as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            tools = DevTools(ws)
            for domain in ("Page", "Runtime", "Log"):
                tools.send(f"{domain}.enable")
            tools.send(
                "Emulation.setDeviceMetricsOverride",
                width=size[0],
                height=size[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            tools.send("Page.navigate", url=page.resolve().as_uri())
            tools.wait_for("Page.loadEventFired")
            found = json.loads(
                tools.send("Runtime.evaluate", expression=INSPECT_JS, returnByValue=True)["result"]["value"]
            )
            report = PageReport(found["svgs"], found["tables"], found["title"], console_errors(tools.events))
            if screenshot is not None:
                png = tools.send("Page.captureScreenshot", format="png")["data"]
                screenshot.write_bytes(base64.b64decode(png))
                report.screenshot = screenshot
    return report
