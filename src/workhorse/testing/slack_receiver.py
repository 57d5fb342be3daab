"""A local stand-in for a Slack incoming webhook: records every POSTed JSON body.

Slack itself cannot be reached from tests or the demo, and ``SlackWebhook`` refuses non-Slack
hosts, so delivery is checked against this server on 127.0.0.1. ``fail_next(n, status)``
makes the next n requests fail (500 for an outage, 429 with Retry-After for throttling).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlackReceiver:
    """``with SlackReceiver() as slack: post to slack.url; slack.messages``."""

    def __init__(self, path: str = "/services/T000/B000/canary-secret-token"):
        self.path = path
        self.messages: list[dict] = []
        self.requests = 0
        self._failures: list[tuple[int, dict]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def fail_next(self, count: int, status: int = 500, headers: dict | None = None) -> None:
        with self._lock:
            self._failures.extend([(status, headers or {})] * count)

    def __enter__(self) -> "SlackReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, body: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
            if self._failures:
                return self._failures.pop(0)
            self.messages.append(json.loads(body))
            return 200, {}

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                status, headers = receiver._answer(self.rfile.read(length))
                if self.path != receiver.path:
                    status, headers = 404, {}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            def log_message(self, *args):  # the path is the secret: never print it
                pass

        return Handler
