"""The model runner against the real fake OpenAI-compatible HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.inference import CANARY_KEY, FAST_RETRY, requests_for
from workhorse.tasks.common.runner import (
    ERROR_TYPES,
    ModelRequest,
    ModelSpec,
    RetryPolicy,
    Runner,
    call_cost,
    classify,
    responses_table,
)
from workhorse.testing.fake_openai import Faults, request_key


def run(workspace, requests, run_id="run-1", **options):
    runner = Runner(workspace, run_id, **{"retry": FAST_RETRY, **options})
    return runner, asyncio.run(runner.run(requests))


def successful_keys(server) -> Counter:
    return Counter(r["key"] for r in server.records() if r["outcome"] == "ok")


def test_fault_matrix_accounts_for_every_request(fake_openai_server, isolated_workspace):
    faults = Faults(
        server_error=0.10,
        rate_limit=0.05,
        hang=0.02,
        malformed=0.01,
        reset=0.01,
        retry_after_s=0.05,
        hang_s=5,
    )
    server = fake_openai_server(faults=faults, seed=7)
    requests = requests_for(server, 1000, timeout_s=1.0)
    runner, rows = run(isolated_workspace, requests)

    assert [r.item_id for r in rows] == [r.item_id for r in requests]  # none lost, none duplicated
    answered = [r for r in rows if r.error_type is None]
    failed = [r for r in rows if r.error_type is not None]
    assert all(r.output and r.output.startswith("echo: question number") for r in answered)
    assert all(r.error_type in ERROR_TYPES for r in failed)
    assert len(answered) + len(failed) == 1000
    # A request fails for good only if all six attempts fail (≈ 0.19^6): practically all are answered.
    assert len(answered) >= 995
    # Every injected fault kind was seen and classified as what it is.
    seen = runner.stats.errors_by_type
    assert {"server_error", "rate_limited", "timeout", "bad_response", "connection"} <= set(seen)
    served = Counter(r["outcome"] for r in server.records())
    assert seen["rate_limited"] == served["rate_limit"]
    assert seen["bad_response"] == served["malformed"]
    # The checkpoint holds exactly one row per request.
    lines = (isolated_workspace.run_dir("run-1") / "checkpoint.jsonl").read_text().splitlines()
    assert Counter((json.loads(l)["item_id"]) for l in lines) == Counter(r.item_id for r in requests)


def test_retries_wait_at_least_retry_after(fake_openai_server, isolated_workspace):
    server = fake_openai_server(faults=Faults(rate_limit=0.5, retry_after_s=0.4), seed=3)
    runner, rows = run(isolated_workspace, requests_for(server, 40))
    assert all(r.error_type is None for r in rows)
    by_key: dict[str, list[dict]] = {}
    for record in server.records():
        by_key.setdefault(record["key"], []).append(record)
    gaps = [
        later["t"] - earlier["t"]
        for attempts in by_key.values()
        for earlier, later in zip(attempts, attempts[1:])
        if earlier["outcome"] == "rate_limit"
    ]
    assert gaps, "the seed must produce some 429s"
    assert min(gaps) >= 0.4 - 0.01  # never sooner than the server asked (backoff alone is ≤ 0.05 s)


@pytest.mark.usefixtures("state_backend")  # the SQLite file and a real PostgreSQL
def test_identical_rerun_makes_zero_calls(fake_openai_server, isolated_workspace):
    server = fake_openai_server()
    requests = requests_for(server, 200)
    _, first = run(isolated_workspace, requests, run_id="first")
    calls_before = len(server.records())
    runner, second = run(isolated_workspace, requests, run_id="second")
    assert len(server.records()) == calls_before
    assert runner.stats.calls == 0 and runner.stats.cached == 200
    assert [r.output for r in second] == [r.output for r in first]
    assert all(r.cached for r in second)


def test_duplicate_requests_in_one_run_are_paid_once(fake_openai_server, isolated_workspace):
    server = fake_openai_server()
    spec = requests_for(server, 1)[0].model
    same = [{"role": "user", "content": "same question"}]
    requests = [ModelRequest(item_id=f"dup-{i}", model=spec, messages=same) for i in range(5)]
    _, rows = run(isolated_workspace, requests)
    assert len(server.records()) == 1
    assert len(rows) == 5 and len({r.output for r in rows}) == 1


def test_non_retryable_errors_are_not_retried(isolated_workspace):
    spec = ModelSpec(model="openai/fake", api_base="http://127.0.0.1:9/v1", api_key="x", timeout_s=2)
    runner, rows = run(
        isolated_workspace,
        [ModelRequest(item_id="a", model=spec, messages=[{"role": "user", "content": "x"}])],
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02),
    )
    # Port 9 (discard) refuses connections: retried to the bound, then recorded, not raised.
    assert rows[0].error_type == "connection" and rows[0].attempts == 3


KILL_SCRIPT = """
import asyncio, sys
import workhorse
from tests.support.inference import FAST_RETRY, requests_for
from workhorse.tasks.common.runner import Runner
from workhorse.workspace import Workspace
class Server: url = sys.argv[1]
rows = asyncio.run(Runner(Workspace.resolve(sys.argv[2]), "killed-run", retry=FAST_RETRY).run(requests_for(Server, 400)))
print(sum(r.error_type is None for r in rows))
"""  # noqa: E501


@pytest.mark.usefixtures("state_backend")  # the SQLite file and a real PostgreSQL
def test_killed_run_resumes_without_paying_twice(fake_openai_server, isolated_workspace, tmp_path):
    # The server holds every request after 150 successes, so the kill lands at a quiet point
    # where each success the server sent has been received (requests in flight at a real kill
    # can be paid twice: at most the concurrency limit).
    server = fake_openai_server(latency=0.01, pause_after_successes=150)
    script = tmp_path / "runner_child.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, str(script), server.url, str(isolated_workspace.root)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    checkpoint = isolated_workspace.run_dir("killed-run") / "checkpoint.jsonl"
    _wait_for_lines(checkpoint, 150)
    child.send_signal(signal.SIGKILL)
    child.wait()
    server.release()

    completed = subprocess.run(
        [sys.executable, str(script), server.url, str(isolated_workspace.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "400"
    successes = successful_keys(server)
    assert len(successes) == 400
    assert max(successes.values()) == 1, "a request that had succeeded was sent again"


def _wait_for_lines(path: Path, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {count} lines")


def test_no_api_key_in_any_written_file(fake_openai_server, isolated_workspace):
    server = fake_openai_server(faults=Faults(server_error=0.2, malformed=0.1), seed=5)
    _, rows = run(isolated_workspace, requests_for(server, 100))
    # The key did reach the server (so the test would notice if it were dropped) ...
    assert all(r["auth"] == f"Bearer {CANARY_KEY}" for r in server.records())
    # ... but no file the runner wrote holds it, nor any row.
    out = isolated_workspace.run_dir("run-1") / "responses.parquet"
    import pyarrow.parquet as pq

    pq.write_table(responses_table(rows), out)
    written = [p for p in isolated_workspace.root.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in written) and any(p.name == "checkpoint.jsonl" for p in written)
    for path in written:
        assert CANARY_KEY.encode() not in path.read_bytes(), path
    assert all(CANARY_KEY not in repr(r) for r in rows)


def test_cost_uses_explicit_prices_then_the_price_map():
    import litellm

    explicit = ModelSpec(model="hosted_vllm/x", input_cost_per_token=2e-7, output_cost_per_token=4e-7)
    assert call_cost(explicit, 1000, 500) == pytest.approx(1000 * 2e-7 + 500 * 4e-7)
    mapped = ModelSpec(model="gpt-4o-mini")
    prices = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * prices["input_cost_per_token"] + 500 * prices["output_cost_per_token"]
    assert call_cost(mapped, 1000, 500) == pytest.approx(expected)
    assert call_cost(ModelSpec(model="hosted_vllm/unknown-model"), 1000, 500) is None  # unpriced, not $0


@pytest.mark.parametrize(
    "error, expected",
    [
        (asyncio.TimeoutError(), "timeout"),
        (ConnectionResetError("reset by peer"), "connection"),
        (ValueError("Expecting value: line 1 column 1"), "bad_response"),
    ],
)
def test_classify_plain_exceptions(error, expected):
    assert classify(error).error_type == expected


def test_request_key_ignores_endpoint_but_not_params():
    a = ModelRequest(
        "1", ModelSpec(model="m", api_base="http://127.0.0.1:1/v1"), [{"role": "user", "content": "x"}]
    )
    b = ModelRequest(
        "1", ModelSpec(model="m", api_base="http://127.0.0.1:2/v1"), [{"role": "user", "content": "x"}]
    )
    c = ModelRequest("1", ModelSpec(model="m"), [{"role": "user", "content": "x"}], params={"temperature": 1})
    assert a.cache_key == b.cache_key != c.cache_key
    assert request_key({"model": "m", "messages": [1]}) != request_key({"model": "m", "messages": [2]})


def test_a_batch_for_an_engine_that_is_gone_fails_at_once(tmp_path):
    """A job folder whose engine died (or never started) is an error, not a half-hour wait."""
    from workhorse.errors import EngineError
    from workhorse.tasks.common.engines import OfflineEngine

    (tmp_path / "ready").write_text("999999999")  # a pid no process has
    started = time.monotonic()
    with pytest.raises(EngineError, match="no answer"):
        OfflineEngine.submit(tmp_path, {"conversations": [], "params": []}, timeout_s=600)
    assert time.monotonic() - started < 5
