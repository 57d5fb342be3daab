"""`workhorse ui`: a local Prefect server (API + UI) on 127.0.0.1, for run history, artifacts and logs.

`local_prefect_server()` is the reusable part: it starts `prefect server start` as a child
process on a free (or given) port, waits until `/api/health` answers, yields the API URL and
stops the server on exit. Binding to 127.0.0.1 keeps an unauthenticated API off the network.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from workhorse.children import popen

HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The Prefect server exited or did not answer its health check in time."""


@dataclass(frozen=True)
class LocalServer:
    api_url: str
    ui_url: str
    process: subprocess.Popen
    log: Path


def free_port(host: str = HOST) -> int:
    """A port the OS says is free now (a tiny race with other starters is acceptable for a local tool)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_command(port: int, host: str = HOST) -> list[str]:
    """`prefect server start` through this interpreter, so the venv's Prefect is the one that runs."""
    return [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
        "--analytics-off",
    ]


def server_env(home: Path | None, port: int, host: str = HOST) -> dict[str, str]:
    """The child's environment: analytics off (they lock SQLite), no inherited API URL, optional
    PREFECT_HOME, and the UI pointed at this server's own API.

    The UI's JavaScript asks `/ui-settings` where the API is; Prefect answers from
    PREFECT_UI_API_URL, else from PREFECT_SERVER_API_HOST/PORT (default 4200), never from the
    `--port` the server was started with: without these the browser shows "Can't connect to
    Server API at http://127.0.0.1:4200/api" on any other port."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_API_HOST"], env["PREFECT_SERVER_API_PORT"] = host, str(port)
    env["PREFECT_UI_API_URL"] = f"http://{host}:{port}/api"
    env["PREFECT_UI_URL"] = f"http://{host}:{port}"  # links the server writes (automations, notifications)
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    return env


def wait_healthy(api_url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll `<api>/health` until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"prefect server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.3)
    raise ServerStartError(
        f"prefect server did not answer {api_url}/health within {timeout_s:.0f} s; see {log}"
    )


def stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group (uvicorn and services), then SIGKILL past the grace period."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def local_prefect_server(
    port: int | None = None, home: Path | None = None, log: Path | None = None, timeout_s: float = 90.0
) -> Iterator[LocalServer]:
    """Run a Prefect server on 127.0.0.1 for the duration of the block; yields its URLs."""
    port = port or free_port()
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"workhorse-prefect-server-{port}.log"
    with log.open("ab") as sink:
        process = popen(  # dies with this process, even on kill -9
            server_command(port),
            env=server_env(home, port),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LocalServer(f"http://{HOST}:{port}/api", f"http://{HOST}:{port}", process, log)
    try:
        wait_healthy(server.api_url, process, log, timeout_s)
        yield server
    finally:
        stop(process)
