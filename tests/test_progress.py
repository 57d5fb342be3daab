"""Eval progress: the tracker's counts per phase and model, and the rich display a terminal shows
(nothing off a terminal or with --quiet). The counts of a real flow run are checked against its
stored responses in test_prefect_ui.py, where the same run also feeds the Prefect progress artifact."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console

from workhorse.tasks.common.runner import EvalResponse, ModelRequest, ModelSpec
from workhorse.tasks.evaluate.progress import EvalProgress, console_display, current_progress, tracking

MODELS = ["openai/incumbent", "openai/cand"]


def requests(model: str, count: int) -> list[ModelRequest]:
    spec, messages = ModelSpec(model), [{"role": "user", "content": "q"}]
    return [ModelRequest(f"item-{i}", spec, messages, prompt_variant="zero-shot") for i in range(count)]


def row(request: ModelRequest, error: str | None = None, cost: float = 0.001) -> EvalResponse:
    return EvalResponse(
        "run-p", request.item_id, request.model.label, request.model.hosting, request.prompt_variant,
        None if error else "ok", 10.0, 5, 1, None if error else cost, error, False,
    )  # fmt: skip


def replace_item(request: ModelRequest, prefix: str) -> ModelRequest:
    return replace(request, item_id=prefix + request.item_id)


def test_counts_per_phase_and_model_ignore_unexpected_and_repeated_rows():
    progress = EvalProgress("run-p")
    dev, test = requests(MODELS[1], 4), requests(MODELS[0], 3) + requests(MODELS[1], 3)
    progress.expect("dev", dev)
    progress.expect("test", [replace_item(r, "t") for r in test])
    for request in dev[:3]:
        progress.record(row(request, error="timeout" if request.item_id == "item-1" else None))
    progress.record(row(dev[0]))  # counted once
    progress.record(row(requests("openai/unknown", 1)[0]))  # never expected
    progress.settle([row(replace_item(r, "t")) for r in test])

    lines = {(line.phase, line.model): line for line in progress.lines.values()}
    assert (lines["dev", MODELS[1]].done, lines["dev", MODELS[1]].total, lines["dev", MODELS[1]].errors) == (
        3,
        4,
        1,
    )
    assert lines["dev", MODELS[1]].cost_usd == pytest.approx(0.002)
    assert all(lines["test", m].done == lines["test", m].total == 3 for m in MODELS)
    assert (progress.done, progress.total, progress.errors) == (9, 10, 1)
    assert progress.eta_s() is not None and progress.percent() == pytest.approx(90.0)


def test_a_terminal_shows_bars_with_counts_errors_and_cost():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    with console_display(True, console):
        with tracking("run-p") as progress:
            asked = requests(MODELS[1], 5)
            progress.expect("test", asked)
            for i, request in enumerate(asked):
                progress.record(row(request, error="server_error" if i == 4 else None, cost=0.01))
            assert current_progress() is progress
    shown = out.getvalue()
    assert "test · openai/cand" in shown and "5/5" in shown
    assert "errors 1" in shown and "$0.0400" in shown


@pytest.mark.parametrize("enabled, terminal", [(False, True), (True, False)])
def test_quiet_or_off_a_terminal_nothing_is_drawn(enabled, terminal):
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=140)
    with console_display(enabled, console):
        with tracking("run-p") as progress:
            asked = requests(MODELS[0], 3)
            progress.expect("test", asked)
            progress.settle([row(r) for r in asked])
    assert out.getvalue() == ""
    assert not hasattr(current_progress(), "lines")  # outside a run: the no-op tracker


def test_a_failing_watcher_is_dropped_and_the_counting_goes_on():
    progress, seen = EvalProgress("run-p"), []

    def broken(_):
        raise ConnectionError("API down")

    progress.watchers += [broken, lambda tracker: seen.append(tracker.done)]
    asked = requests(MODELS[0], 3)
    progress.expect("test", asked)
    progress.settle([row(r) for r in asked])
    assert progress.done == 3 and seen == [0, 1, 2, 3] and broken not in progress.watchers
