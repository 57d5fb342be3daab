"""Provider batch hosting on the fake batch provider (a real HTTP process): answers equal to the
synchronous ones at the batch price, expiry and failed lines resubmitted exactly, SIGKILLs at every
kind of point without a line submitted twice or lost."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import urllib.request
from collections import Counter
from dataclasses import replace

import pytest

from tests.support.batch_kit import BATCH_PRICE, answer_in_child, banking_items, banking_requests, batch_spec
from workhorse.tasks.common.runner import RETRYABLE, RetryPolicy, Runner
from workhorse.tasks.evaluate.batch import BatchClient, BatchSettings, identity_of, read_jobs
from workhorse.testing.fake_batch import BatchProviderConfig, FakeBatchProcess

FAST = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)


def answer(workspace, run_id, requests, settings, wait_s=30):
    client = BatchClient(workspace, run_id, settings, FAST)
    try:
        return asyncio.run(client.answer(requests, wait_s=wait_s))
    finally:
        client.close()


def words(text: str) -> int:
    return len(str(text).split())


def test_banking77_through_batch_equals_sync_at_the_batch_price(
    isolated_workspace, shared_datasets, fake_openai_server
):
    items = banking_items(shared_datasets, 120)
    with FakeBatchProcess(BatchProviderConfig(seed=3)) as provider:
        requests = banking_requests(items, batch_spec(provider.url))
        outcome = answer(isolated_workspace, "b77", requests, BatchSettings(max_lines=50, poll_s=0.02))
        submitted = Counter(line["custom_id"] for line in provider.log()["lines"])
    sync_server = fake_openai_server()
    sync_requests = [
        replace(r, model=replace(r.model, api_base=sync_server.url, hosting="api")) for r in requests
    ]
    sync_rows = asyncio.run(Runner(isolated_workspace, "sync", use_cache=False).run(sync_requests))

    assert not outcome.waiting and len(outcome.rows) == len(items)
    assert sorted(submitted.values()) == [1] * len(items)  # every item submitted once, in 3 batches
    truth = {item_id: category for item_id, _, category in items}
    by_item = {identity[2]: row for identity, row in outcome.rows.items()}
    assert all(row.error_type is None for row in by_item.values())
    batch_correct = {i: by_item[i].output == truth[i] for i in truth}
    sync_correct = {row.item_id: row.output == truth[row.item_id] for row in sync_rows}
    assert batch_correct == sync_correct and {r.item_id: r.output for r in sync_rows} == {
        i: r.output for i, r in by_item.items()
    }
    # The fake counts words: the cost follows from the prompts alone, priced per token at batch rates.
    expected = sum(
        sum(words(m["content"]) for m in r.messages) * BATCH_PRICE[0]
        + words(by_item[r.item_id].output) * BATCH_PRICE[1]
        for r in requests
    )
    assert sum(r.cost_usd for r in by_item.values()) == pytest.approx(expected)
    jobs = read_jobs(isolated_workspace, "b77")
    assert [j["lines"] for j in jobs] == [50, 50, 20] and {j["status"] for j in jobs} == {"completed"}
    assert sum(j["cost_usd"] for j in jobs) == pytest.approx(expected)


def fetch_lines(provider, file_id):
    if not file_id:
        return []
    raw = urllib.request.urlopen(f"{provider.url}/files/{file_id}/content", timeout=10).read()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def batch_object(provider, batch_id):
    return json.loads(urllib.request.urlopen(f"{provider.url}/batches/{batch_id}", timeout=10).read())


def test_expired_half_output_and_failed_lines_resubmit_exactly_the_missing(isolated_workspace):
    faults = {"server_error": 0.2, "rate_limit": 0.2}  # 503 and 429 + Retry-After on every endpoint
    config = BatchProviderConfig(
        seed=5,
        expire_first=1,
        expire_output_share=0.5,
        failed_line_share=0.05,
        endpoint_faults={name: faults for name in ("upload", "create", "retrieve", "list", "content")},
        lost_create_reply=0.5,
    )
    items = [(f"item-{i:03d}", f"a message about topic {i}", "x") for i in range(200)]
    with FakeBatchProcess(config) as provider:
        requests = banking_requests(items, batch_spec(provider.url))
        outcome = answer(isolated_workspace, "exp", requests, BatchSettings(poll_s=0.02, max_attempts=3))
        log, provider_calls = provider.log()["lines"], provider.log()["calls"]
        provider.control(endpoint_faults={})  # the test's own reads below must not meet a fault
        by_batch: dict[str, list[str]] = {}
        for line in log:
            by_batch.setdefault(line["batch_id"], []).append(line["custom_id"])
        first_id, second_id = sorted(by_batch)[:2]
        first = batch_object(provider, first_id)
        output = fetch_lines(provider, first["output_file_id"])
        errors = fetch_lines(provider, first["error_file_id"])

    assert first["status"] == "expired" and len(output) + len(errors) == 100
    assert errors, "the seed must give failed lines in the expired batch"
    settled = {r["custom_id"] for r in output} | {
        r["custom_id"] for r in errors if r["response"]["status_code"] == 400
    }  # a 400 is a client error: not retried
    assert sorted(by_batch[second_id]) == sorted(set(by_batch[first_id]) - settled)
    # Every item ends answered or with its error class; none answered twice, none dropped.
    assert len(outcome.rows) == 200 and not outcome.waiting
    assert {r.error_type for r in outcome.rows.values()} <= {None} | RETRYABLE | {"client_error"}
    assert sum(r.error_type == "client_error" for r in outcome.rows.values()) >= 1
    assert all(r.output is not None for r in outcome.rows.values() if r.error_type is None)
    assert max(Counter(line["custom_id"] for line in log).values()) <= 3  # max_attempts submissions
    # The faults were met and retried: more creates than batches, and lists to find lost ones.
    assert provider_calls["create"] > len(by_batch) and provider_calls["list"] >= 1


def run_child(context, workspace, provider, run_id: str, kill_at: int | None, events) -> int:
    args = (str(workspace.root), provider.url, run_id, 24, kill_at, str(events))
    child = context.Process(target=answer_in_child, args=args)
    child.start()
    child.join(120)
    return child.exitcode


# The points of a job's life where a kill tests exactly-once (issue 19): before anything is
# submitted, between upload and create, after create before its id is written, during collect.
KILL_POINTS = (
    ("before", "_call:acreate_file"),
    ("after", "_call:acreate_file"),
    ("before", "mark:submitted"),  # the batch exists (created, or found after a lost reply)
    ("after", "settle_lines:"),
)


def test_sigkill_at_every_point_never_submits_twice_nor_loses_a_line(isolated_workspace, tmp_path):
    """12 seeded SIGKILLs (3 per point of KILL_POINTS, at a seeded one of the run's 3 jobs), each of
    a child answering 24 requests (3 batches of 8) in a run of its own, then that run again to its
    end; 30 % of creates answer 500 after creating the batch."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["litellm", "workhorse.tasks.evaluate.batch", "tests.support.batch_kit"])
    rng = random.Random(19)
    kills = [(*point, rng.randint(1, 3)) for point in KILL_POINTS for _ in range(3)]
    outcomes = []
    with FakeBatchProcess(BatchProviderConfig(seed=7, lost_create_reply=0.3)) as provider:
        for n, kill_at in enumerate(kills):
            events = tmp_path / f"kill-{n}.log"
            killed = run_child(context, isolated_workspace, provider, f"kill-{n}", kill_at, events)
            last = events.read_text().splitlines()[-1]
            finished = run_child(context, isolated_workspace, provider, f"kill-{n}", None, events)
            outcomes.append((killed, last, finished, events.read_text().splitlines()[-1]))
        submitted = Counter(line["custom_id"] for line in provider.log()["lines"])

    expected = [(-9, f"{when} {name}", 0, "done 24") for when, name, _ in kills]
    assert outcomes == expected
    assert len(submitted) == 12 * 24 and set(submitted.values()) == {1}  # each line submitted once
    for n in range(12):
        items = {identity_of(i)[2] for i in submitted if json.loads(i)[0] == f"kill-{n}"}
        assert items == {f"item-{i:03d}" for i in range(24)}


def test_cli_cancel_then_resume_resubmits_the_cancelled_lines_once(isolated_workspace, monkeypatch):
    from typer.testing import CliRunner

    from workhorse.cli import app

    monkeypatch.setenv(
        "OPENAI_API_KEY", "sk-test-not-a-secret"
    )  # outside its run, the key is the environment's
    items = [(f"item-{i:03d}", f"cancel me {i}", "x") for i in range(30)]
    with FakeBatchProcess(BatchProviderConfig(seed=4, hold=True)) as provider:
        requests = banking_requests(items, batch_spec(provider.url))
        settings = BatchSettings(max_lines=20, poll_s=0.02)
        waiting = answer(isolated_workspace, "cx", requests, settings, wait_s=0.2)
        workspace = ["-w", str(isolated_workspace.root)]
        cancelled = CliRunner().invoke(app, ["batch", "cancel", "--run", "cx", *workspace])
        provider.release()
        done = answer(isolated_workspace, "cx", requests, settings, wait_s=30)
        status = CliRunner().invoke(app, ["batch", "status", "--run", "cx", *workspace])
        submitted = Counter(line["custom_id"] for line in provider.log()["lines"])

    assert waiting.waiting and len(waiting.pending_jobs) == 2 and not waiting.rows
    assert cancelled.exit_code == 0 and cancelled.output.count(": cancelled") == 2, cancelled.output
    assert not done.waiting and all(r.error_type is None for r in done.rows.values()) and len(done.rows) == 30
    assert set(submitted.values()) == {2} and len(submitted) == 30  # once cancelled, once answered
    assert (
        status.exit_code == 0 and status.output.count("cancelled") == 2 and "4 batch job(s)" in status.output
    )
