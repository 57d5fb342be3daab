"""Processes the product starts die with it, even when it is killed with SIGKILL.

Linux's PR_SET_PDEATHSIG sends a child a signal when the *thread* that started it ends, so every
child is started from one launcher thread that lives as long as the process. Prefect's temporary
server (started by Prefect itself when no ``PREFECT_API_URL`` is set) goes through it too: a hook
on the import of ``prefect.server.api.server`` routes that module's ``subprocess.Popen`` here, so a
``kill -9`` of ``workhorse eval`` no longer leaves a uvicorn process holding 300 MB behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.machinery
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1
PREFECT_SERVER_MODULE = "prefect.server.api.server"


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM when its parent thread ends."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Launcher:
    """One daemon thread that starts every child and never ends before the process does."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        if sys.platform != "linux":
            return subprocess.Popen(*args, **kwargs)
        self._ensure_thread()
        done: Future = Future()
        self._jobs.put((args, kwargs, done))
        return done.result()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="workhorse-children", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            args, kwargs, done = self._jobs.get()
            try:
                done.set_result(
                    subprocess.Popen(*args, preexec_fn=_chained(kwargs.pop("preexec_fn", None)), **kwargs)
                )
            except BaseException as error:  # the caller gets it, as if it had called Popen itself
                done.set_exception(error)


def _chained(preexec_fn):
    if preexec_fn is None:
        return die_with_parent

    def both() -> None:
        preexec_fn()
        die_with_parent()

    return both


_launcher = _Launcher()


def popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` for a child that must not outlive this process."""
    return _launcher.popen(*args, **kwargs)


class _TiedSubprocess:
    """The ``subprocess`` module as Prefect's server module sees it: Popen goes through the launcher."""

    Popen = staticmethod(popen)

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def _tie(module) -> None:
    module.subprocess = _TiedSubprocess()


class _TieOnImport(importlib.abc.MetaPathFinder):
    """Ties Prefect's server module the moment it is imported (importing it costs ~2 s: only
    the commands that start a temporary server pay for it, and they pay nothing more)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != PREFECT_SERVER_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            _tie(module)

        loader.exec_module = exec_module
        return spec


def tie_prefect_server() -> None:
    """Make Prefect's temporary server a child that dies with this process (idempotent)."""
    module = sys.modules.get(PREFECT_SERVER_MODULE)
    if module is not None:
        _tie(module)
    elif not any(isinstance(finder, _TieOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TieOnImport())
