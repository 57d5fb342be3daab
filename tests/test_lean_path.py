"""The lean path for OpenAI-compatible endpoints gives the same rows as LiteLLM's, faults included."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.support.inference import requests_for
from workhorse.tasks.common.http_path import request_body, takes
from workhorse.tasks.common.runner import RetryPolicy, Runner
from workhorse.testing.fake_openai import Faults

FAULTS = Faults(
    server_error=0.05, rate_limit=0.05, malformed=0.03, reset=0.03, hang=0.005, retry_after_s=0.01, hang_s=8
)
# No circuit breaker here: whether it opens depends on timing, and each path must see the same faults.
RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, breaker_threshold=10**9)
COMPARED = (
    "item_id",
    "output",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "error_type",
    "attempts",
    "cached",
)


def answer(workspace, server, count, lean, run_id):
    requests = [replace(r, model=replace(r.model, timeout_s=3.0)) for r in requests_for(server, count)]
    runner = Runner(workspace, run_id, retry=RETRY, use_cache=False, lean=lean)
    return asyncio.run(runner.run(requests))


def test_both_paths_agree_row_for_row_under_faults(fake_openai_server, isolated_workspace):
    # Faults follow (seed, request, attempt): two servers of one seed fault each request alike.
    lean_server, litellm_server = (fake_openai_server(faults=FAULTS, seed=7) for _ in range(2))
    # LiteLLM's first calls import its clients (seconds on a busy machine, counted in the timeout):
    # one call beforehand, so both paths meet only the faults.
    answer(isolated_workspace, fake_openai_server(), 1, False, "warm-up")
    lean = answer(isolated_workspace, lean_server, 1000, True, "lean")
    slow = answer(isolated_workspace, litellm_server, 1000, False, "litellm")
    assert [tuple(getattr(r, k) for k in COMPARED) for r in lean] == [
        tuple(getattr(r, k) for k in COMPARED) for r in slow
    ]
    assert sum(r.attempts > 1 for r in lean) > 50  # the faults were met, and retried
    outcomes = {r["outcome"] for r in lean_server.records()}
    assert {"ok", "server_error", "rate_limit", "malformed", "reset", "hang"} <= outcomes
    assert sorted((r["key"], r["attempt"]) for r in lean_server.records()) == sorted(
        (r["key"], r["attempt"]) for r in litellm_server.records()
    )


@pytest.mark.parametrize(
    "model, api_base, params, lean",
    [
        ("hosted_vllm/smollm2", "http://127.0.0.1:8000/v1", {"extra_body": {"structured_outputs": {}}}, True),
        ("openai/gpt-4o-mini", "http://proxy/v1", {"max_tokens": 5, "temperature": 0}, True),
        ("openai/gpt-4o-mini", None, {}, False),  # OpenAI itself: LiteLLM knows its quirks
        ("anthropic/claude-3-5-haiku", "http://proxy/v1", {}, False),  # needs a translation
        ("openai/gpt-4o-mini", "http://proxy/v1", {"thinking": {"type": "enabled"}}, False),
    ],
)
def test_the_lean_path_takes_only_what_needs_no_translation(model, api_base, params, lean):
    assert takes(model, api_base, params) is lean


def test_the_body_names_the_served_model_and_merges_extra_body():
    body = json.loads(
        request_body(
            "hosted_vllm/org/model", [{"role": "user", "content": "hi"}], {"extra_body": {"a": 1}, "n": 1}
        )
    )
    assert body == {"model": "org/model", "messages": [{"role": "user", "content": "hi"}], "n": 1, "a": 1}


def test_the_lean_path_never_imports_litellm(fake_openai_server, tmp_path):
    server = fake_openai_server()
    script = f"""
import asyncio, sys
from tests.support.inference import requests_for
from workhorse.tasks.common.runner import Runner
from workhorse.workspace import Workspace

class Server:
    url = {server.url!r}

rows = asyncio.run(Runner(Workspace.resolve({str(tmp_path)!r}), "r").run(requests_for(Server, 3)))
assert all(r.error_type is None and r.cost_usd for r in rows), rows
print("litellm" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_the_meter_counts_every_paid_call_and_its_tokens(fake_openai_server, isolated_workspace):
    from workhorse.tasks.common.throughput import metering

    server = fake_openai_server(latency=0.05)
    requests = requests_for(server, 200, concurrency=16)
    with metering() as meter:
        rows = asyncio.run(Runner(isolated_workspace, "metered", retry=RETRY).run(requests))
        again = asyncio.run(Runner(isolated_workspace, "cached", retry=RETRY).run(requests))
    assert all(r.cached for r in again)  # answered from the cache: nothing paid, nothing counted
    figures = meter.summary()
    assert figures["requests"] == 200 == len(server.records())
    assert meter.tokens == sum(r.prompt_tokens + r.completion_tokens for r in rows)
    assert 0 < figures["mean_in_flight"] <= 16
    assert figures["client_share"] + figures["endpoint_share"] == pytest.approx(1)
