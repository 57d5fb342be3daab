"""Progress of an eval run: items done of total per phase and model, errors, cost so far, ETA.

The flow opens one tracker per run (``tracking``); ``generate`` tells it what each phase will
ask (``expect``) and the runner reports every answer as it lands (``record``, its ``on_result``).
Whoever watches is told after each change: the CLI's rich display (``console_display``), and the
Prefect progress artifact the flow keeps up to date, so the UI shows the same on a running flow.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

ARTIFACT_EVERY_S = 2.0  # the UI's progress artifact: one API call per interval at most, and at the end


@dataclass
class Line:
    """One phase × model: what it was asked, what came back."""

    phase: str
    model: str
    total: int = 0
    done: int = 0
    errors: int = 0
    cost_usd: float = 0.0


class EvalProgress:
    """The counts of one run; answers it was not told to expect, or already counted, are ignored."""

    def __init__(self, run_id: str):
        self.run_id, self.started = run_id, time.monotonic()
        self.lines: dict[tuple[str, str], Line] = {}
        self.pending: dict[tuple, tuple[str, str]] = {}
        self.watchers: list[Callable[[EvalProgress], None]] = []

    def expect(self, phase: str, requests: Iterable) -> None:
        for request in requests:
            key = (phase, request.model.label)
            self.lines.setdefault(key, Line(phase, request.model.label)).total += 1
            spec = request.model
            self.pending[(spec.label, spec.hosting, request.prompt_variant, request.item_id)] = key
        self._notify()

    def record(self, row) -> None:
        key = self.pending.pop((row.model, row.hosting, row.prompt_variant, row.item_id), None)
        if key is None:
            return
        line = self.lines[key]
        line.done += 1
        line.errors += row.error_type is not None
        line.cost_usd += row.cost_usd or 0.0
        self._notify()

    def settle(self, rows: Iterable) -> None:
        """Rows answered where no callback reached (the offline engine, Dask workers, served twins)."""
        for row in rows:
            self.record(row)

    @property
    def total(self) -> int:
        return sum(line.total for line in self.lines.values())

    @property
    def done(self) -> int:
        return sum(line.done for line in self.lines.values())

    @property
    def errors(self) -> int:
        return sum(line.errors for line in self.lines.values())

    @property
    def cost_usd(self) -> float:
        return sum(line.cost_usd for line in self.lines.values())

    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first answer); phases not yet expected
        are not in the total, so the estimate is for what has been asked."""
        done, total = self.done, self.total
        if not done:
            return None
        return (time.monotonic() - self.started) * (total - done) / done

    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0

    def summary(self) -> str:
        eta = self.eta_s()
        parts = [f"{line.phase} · {line.model}: {line.done}/{line.total}" for line in self.lines.values()]
        parts.append(f"errors {self.errors}, ${self.cost_usd:.4f} so far")
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {eta:.0f} s")
        return "; ".join(parts)

    def _notify(self) -> None:
        """Tell every watcher; one that fails is dropped with a warning: progress never stops a run."""
        for watch in list(self.watchers):
            try:
                watch(self)
            except Exception as error:
                self.watchers.remove(watch)
                logging.getLogger(__name__).warning("progress display stopped: %s", error)


class _Untracked:
    """What ``current_progress`` gives outside a tracked run: every call does nothing."""

    def expect(self, phase: str, requests: Iterable) -> None:
        pass

    def record(self, row) -> None:
        pass

    def settle(self, rows: Iterable) -> None:
        pass


_current: ContextVar[EvalProgress | None] = ContextVar("workhorse_eval_progress", default=None)
# Watchers of every run started while they are registered (the CLI's display).
_global_watchers: list[Callable[[EvalProgress], None]] = []


def artifact_key(use_case: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes."""
    return "eval-" + "".join(c if c.isalnum() else "-" for c in use_case.lower()) + "-progress"


def current_progress() -> EvalProgress | _Untracked:
    return _current.get() or _Untracked()


@contextmanager
def tracking(run_id: str, artifact_key: str | None = None) -> Iterator[EvalProgress]:
    """Track the run inside the block; with ``artifact_key`` also as a Prefect progress artifact."""
    progress = EvalProgress(run_id)
    progress.watchers.extend(_global_watchers)
    if artifact_key is not None:
        progress.watchers.append(ProgressArtifact(artifact_key, run_id))
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)
        for watch in progress.watchers:
            getattr(watch, "close", lambda _: None)(progress)


@contextmanager
def watching(watch: Callable[[EvalProgress], None]) -> Iterator[None]:
    """Call ``watch(progress)`` on every change of any run tracked inside the block."""
    _global_watchers.append(watch)
    try:
        yield
    finally:
        _global_watchers.remove(watch)


class ProgressArtifact:
    """The run's Prefect progress artifact: created on the first change, updated at most every
    ``ARTIFACT_EVERY_S`` and once more at the end, with the counts in its description."""

    def __init__(self, key: str, run_id: str):
        self.key, self.run_id, self.artifact_id, self.last = key, run_id, None, 0.0

    def __call__(self, progress: EvalProgress) -> None:
        if time.monotonic() - self.last >= ARTIFACT_EVERY_S:
            self._publish(progress)

    def close(self, progress: EvalProgress) -> None:
        try:
            self._publish(progress)
        except Exception as error:  # the run's outcome stands without its last progress update
            logging.getLogger(__name__).warning("progress artifact not updated: %s", error)

    def _publish(self, progress: EvalProgress) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        self.last = time.monotonic()
        description = f"Eval {self.run_id}: {progress.summary()}"
        # _sync: the callers run inside the flow's event loop, where these would return coroutines.
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(
                progress.percent(), key=self.key, description=description, _sync=True
            )
        else:
            update_progress_artifact(
                self.artifact_id, progress.percent(), description=description, _sync=True
            )


@contextmanager
def console_display(enabled: bool = True, console=None) -> Iterator[None]:
    """A rich progress display (on stderr unless ``console`` is given) for every run tracked inside
    the block: one bar per phase and model with errors and cost so far, and the ETA. Nothing when
    ``enabled`` is false or the console is not a terminal. Prefect's log lines print above the
    bars, never through them."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield
        return
    with _bars(console) as show, _logs_through(console), watching(show):
        yield


@contextmanager
def _bars(console) -> Iterator[Callable[[EvalProgress], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("errors {task.fields[errors]} · ${task.fields[cost]:.4f}"),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[tuple[str, str, str], int] = {}

    def show(progress: EvalProgress) -> None:
        for key, line in progress.lines.items():
            name = (progress.run_id, *key)
            if name not in tasks:
                label = f"{line.phase} · {line.model}"
                tasks[name] = bars.add_task(label, total=line.total, errors=0, cost=0.0)
            bars.update(
                tasks[name], total=line.total, completed=line.done, errors=line.errors, cost=line.cost_usd
            )

    with bars:
        yield show


@contextmanager
def _logs_through(console) -> Iterator[None]:
    """Point Prefect's console log handlers at the display's console while it is live."""
    import logging

    handlers = [
        handler
        for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")
        for handler in logging.getLogger(name).handlers
        if hasattr(handler, "console")
    ]
    saved = [handler.console for handler in handlers]
    for handler in handlers:
        handler.console = console
    try:
        yield
    finally:
        for handler, original in zip(handlers, saved):
            handler.console = original
