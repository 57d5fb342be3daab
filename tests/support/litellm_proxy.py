"""A real LiteLLM proxy (``litellm --config``) in a child process, with the workhorse gateway plugin,
and a TCP relay whose link a test can cut: the proxy's view of the state store goes down while
the control loop, on a direct link, keeps working.

    with LiteLLMProxy(config, settings, tmp) as proxy:
        openai.OpenAI(base_url=proxy.url, api_key=proxy.master_key)
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from workhorse.tasks.common.engines import free_port
from workhorse.tasks.rollout.gateway import SETTINGS_ENV, GatewaySettings, write_settings


class LiteLLMProxy:
    """Start on ``__enter__`` (15-40 s on two shared cores), SIGTERM on ``__exit__``."""

    def __init__(self, config: dict, settings: GatewaySettings, folder: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.master_key = "sk-" + secrets.token_hex(24)  # the proxy refuses a weak master key
        self.folder = folder
        self.config_path = folder / "litellm.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.settings_path = write_settings(settings, folder / "gateway.yaml")
        self.log_path = folder / "proxy.log"
        self.env = {
            **os.environ,
            "LITELLM_MASTER_KEY": self.master_key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            SETTINGS_ENV: str(self.settings_path),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> "LiteLLMProxy":
        command = [str(Path(sys.executable).parent / "litellm"), "--config", str(self.config_path)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the LiteLLM proxy exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the LiteLLM proxy did not start in {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "LiteLLMProxy":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class CuttableRelay:
    """A TCP relay to ``host:port`` on a free local port. ``cut()`` drops every open connection and
    refuses new ones (accepted, then closed at once) until ``restore()``: a store outage."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.down = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _accept_forever(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self._lock:
            self._open.discard(end)
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            ends = list(self._open)
        for end in ends:
            self._close(end)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()
