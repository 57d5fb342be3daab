"""Helpers for the provider batch tests: BANKING77 requests, and a child process that answers them
through the batch client and SIGKILLs itself at a chosen event (a provider call or a state write,
just before or just after it)."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
from collections import Counter
from pathlib import Path

from workhorse.tasks.common.runner import ModelRequest, ModelSpec, RetryPolicy
from workhorse.tasks.evaluate.prompts import PromptTask, render

BATCH_PRICE = (0.5e-6, 1.0e-6)  # $ per input token, per output token (a batch price)


def banking_items(datasets: Path, count: int, labels: int = 5) -> list[tuple[str, str, str]]:
    """(item id, text, category) for the first ``count`` test rows of ``labels`` categories."""
    with (datasets / "banking77" / "test.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    chosen = sorted({row["category"] for row in rows})[:labels]
    picked = [row for row in rows if row["category"] in chosen][:count]
    return [(f"b77-{i:04d}", row["text"], row["category"]) for i, row in enumerate(picked)]


def banking_requests(items, spec: ModelSpec) -> list[ModelRequest]:
    """The constrained prompt of each item (a ``choice`` over the categories), as the eval builds it."""
    labels = tuple(sorted({category for _, _, category in items}))
    requests = []
    for item_id, text, _ in items:
        messages, params = render("constrained", PromptTask("classification", text, labels), "batch")
        requests.append(ModelRequest(item_id, spec, messages, params, "constrained"))
    return requests


def batch_spec(api_base: str) -> ModelSpec:
    return ModelSpec(
        "openai/fake-model",
        name="fake-model (batch)",
        api_base=api_base,
        api_key="sk-test-not-a-secret",
        hosting="batch",
        input_cost_per_token=BATCH_PRICE[0],
        output_cost_per_token=BATCH_PRICE[1],
    )


def answer_in_child(
    workspace_root: str, api_base: str, run_id: str, count: int, kill_at: tuple | None, events: str
) -> None:
    """Answer ``count`` requests through the batch client; with ``kill_at`` = (when, event, n),
    SIGKILL this process at the n-th such event ("before"/"after" the wrapped call). Each event is
    appended to ``events``."""
    from workhorse.tasks.evaluate import batch
    from workhorse.workspace import Workspace

    seen: Counter[tuple] = Counter()
    log = open(events, "a", encoding="utf-8")

    def event(name: str, when: str) -> None:
        seen[(when, name)] += 1
        log.write(f"{when} {name}\n")
        log.flush()
        if kill_at is not None and (when, name, seen[(when, name)]) == tuple(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner, name: str) -> None:
        original = getattr(owner, name)

        if asyncio.iscoroutinefunction(original):

            async def wrapped(self, *args, **kwargs):
                event(f"{name}:{args[0]}", "before")
                result = await original(self, *args, **kwargs)
                event(f"{name}:{args[0]}", "after")
                return result
        else:

            def wrapped(self, *args, **kwargs):
                detail = kwargs.get("stage") or ",".join(kwargs)
                event(f"{name}:{detail}", "before")
                result = original(self, *args, **kwargs)
                event(f"{name}:{detail}", "after")
                return result

        setattr(owner, name, wrapped)

    wrap(batch.ProviderCalls, "_call")
    for name in ("mark", "add_job", "settle_lines"):
        wrap(batch.BatchStore, name)
    items = [(f"item-{i:03d}", f"message number {i}", "x") for i in range(count)]
    spec = batch_spec(api_base)
    requests = banking_requests(items, spec)
    settings = batch.BatchSettings(max_lines=8, poll_s=0.02)
    client = batch.BatchClient(
        Workspace.resolve(workspace_root), run_id, settings, RetryPolicy(base_delay_s=0.01)
    )
    try:
        outcome = asyncio.run(client.answer(requests, wait_s=60))
    finally:
        client.close()
    answered = sum(row.error_type is None for row in outcome.rows.values())
    log.write(f"done {answered}\n")
    log.close()
