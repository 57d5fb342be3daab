"""One headless Chromium tab driven page by page: navigate, wait for a condition the page's own
script makes true, read values, screenshot. For single-page apps (the Prefect UI, the per-item
viewer) whose content appears after the load event, which `browser.render_report` stops at.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tests.support.browser import CHROMIUM, DevTools, console_errors, headless_chromium


class BrowserPage:
    """A tab over CDP; every console error of every page it showed stays in ``errors()``."""

    def __init__(self, tools: DevTools):
        self.tools = tools

    def open(self, url: str, timeout_s: float = 30.0) -> None:
        self.tools.events = [e for e in self.tools.events if not _is_load(e)]
        self.tools.send("Page.navigate", url=url)
        self.tools.wait_for("Page.loadEventFired", timeout_s)

    def evaluate(self, expression: str) -> Any:
        result = self.tools.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}…: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout_s: float = 30.0, what: str = "") -> Any:
        """Poll a JS expression until it is truthy; fail with the page's text when it never is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.2)
        text = self.evaluate("document.body ? document.body.innerText : ''") or ""
        raise AssertionError(
            f"waited {timeout_s:.0f} s for {what or expression}; the page shows:\n{text[:2000]}"
        )

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.tools.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def errors(self) -> list[str]:
        return console_errors(self.tools.events)


def _is_load(event: dict) -> bool:
    return event.get("method") == "Page.loadEventFired"


@contextmanager
def browser_page(size: tuple[int, int] = (1400, 1000), binary: str = CHROMIUM) -> Iterator[BrowserPage]:
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
            yield BrowserPage(tools)
