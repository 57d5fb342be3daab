"""The eval's ``batch`` hosting of a provider model through the fake batch provider: answers come
from batches only (zero calls to the provider's chat endpoint), priced at the batch price, shown
in the summary; a run whose batches outlast its wait ends "waiting for batch" and the
batch-collector takes it to its verdict without submitting a line twice; with
``failed_lines: sync`` a failed line becomes exactly one synchronous call."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter

import pyarrow.parquet as pq
import pytest

from tests.support.eval_kit import evaluate, make_items, plan_file, scripted
from workhorse.tasks.golden.versions import write_version
from workhorse.testing.fake_batch import BatchProviderConfig, FakeBatchProcess

KEY = "sk-batch-canary-7e21"


@pytest.fixture
def golden(isolated_workspace):
    items = make_items(90)
    write_version(isolated_workspace, "routing", items, [{"kind": "test"}])
    return items


def batch_plan(tmp_path, provider, wait_s: float, **batch) -> str:
    return plan_file(
        tmp_path,
        [{"model": "openai/gpt-4o-mini", "api_base": provider.url, "hosting": ["batch"]}],
        min_items=10,
        eval={"batch": {"wait_s": wait_s, "poll_s": 0.05, **batch}},
    )


def test_batch_hosting_goes_through_the_batch_api_at_the_batch_price(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    import litellm

    incumbent = fake_openai_server(answers=scripted(golden, 0.9, seed=1))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    with FakeBatchProcess(BatchProviderConfig(seed=2, answers=scripted(golden, 0.9, seed=5))) as provider:
        summary = evaluate(
            isolated_workspace, batch_plan(tmp_path, provider, wait_s=60), variants=["zero-shot"]
        )
        log = provider.log()
        submitted = Counter(line["custom_id"] for line in log["lines"])

    assert log["calls"].get("chat", 0) == 0  # not one synchronous call for the batch hosting
    rows = [r for r in pq.read_table(summary["responses"]).to_pylist() if r["hosting"] == "batch"]
    assert len(rows) == len(golden) and all(r["error_type"] is None for r in rows)  # dev + test
    assert len(submitted) == len(golden) and set(submitted.values()) == {1}
    prices = litellm.model_cost["gpt-4o-mini"]
    batch_price = (prices["input_cost_per_token_batches"], prices["output_cost_per_token_batches"])
    for row in rows:
        expected = row["prompt_tokens"] * batch_price[0] + row["completion_tokens"] * batch_price[1]
        assert row["cost_usd"] == pytest.approx(expected)
    batches = summary["batches"]
    assert sum(b["lines"] for b in batches) == len(golden) and {b["status"] for b in batches} == {"completed"}
    tokens = sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)
    sync = tokens[0] * prices["input_cost_per_token"] + tokens[1] * prices["output_cost_per_token"]
    assert sum(b["sync_cost_usd"] for b in batches) == pytest.approx(sync)
    assert sum(b["batch_cost_usd"] for b in batches) == pytest.approx(sum(r["cost_usd"] for r in rows))
    run_dir = isolated_workspace.run_dir(summary["run_id"])
    report = (run_dir / "report.html").read_text()
    assert "Provider batches" in report and all(b["batch_id"] in report for b in batches)
    assert KEY not in (run_dir / "verdict.json").read_text() and KEY not in report
    assert all(KEY not in p.read_text() for p in (run_dir / "batch").glob("*.jsonl"))


def test_a_run_left_waiting_for_batch_is_completed_by_the_collector(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    from workhorse.flows.batch_collector import batch_collector

    incumbent = fake_openai_server(answers=scripted(golden, 0.9, seed=1))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    config = BatchProviderConfig(seed=2, hold=True, answers=scripted(golden, 0.9, seed=5))
    with FakeBatchProcess(config) as provider:
        plan = batch_plan(tmp_path, provider, wait_s=0.3)
        waiting = evaluate(isolated_workspace, plan, variants=["zero-shot"])
        assert waiting["status"] == "waiting for batch" and waiting["jobs"]
        run_dir = isolated_workspace.run_dir(waiting["run_id"])
        assert json.loads((run_dir / "waiting.json").read_text())["run_id"] == waiting["run_id"]
        assert not (run_dir / "verdict.json").exists()

        still = asyncio.run(batch_collector(workspace=str(isolated_workspace.root)))
        assert still == [{"run_id": waiting["run_id"], "status": "waiting for batch"}]
        provider.release()
        resumed = asyncio.run(batch_collector(workspace=str(isolated_workspace.root)))
        submitted = Counter(line["custom_id"] for line in provider.log()["lines"])

    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert resumed == [{"run_id": waiting["run_id"], "status": verdict["verdict"]["decision"]}]
    assert not (run_dir / "waiting.json").exists()
    assert len(submitted) == len(golden) and set(submitted.values()) == {1}
    assert {b["status"] for b in verdict["batches"]} == {"completed"}


def error_lines(provider) -> list[dict]:
    listing = json.loads(urllib.request.urlopen(f"{provider.url}/batches?limit=100", timeout=10).read())
    found = []
    for batch in listing["data"]:
        if batch["error_file_id"]:
            raw = urllib.request.urlopen(f"{provider.url}/files/{batch['error_file_id']}/content", timeout=10)
            found += [json.loads(line) for line in raw.read().splitlines() if line.strip()]
    return found


def test_failed_lines_fall_back_to_one_synchronous_call_each_when_the_plan_says_sync(
    prefect_server, golden, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    incumbent = fake_openai_server(answers=scripted(golden, 0.9, seed=1))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_BASE", incumbent.url)
    config = BatchProviderConfig(seed=6, failed_line_share=0.2, answers=scripted(golden, 0.9, seed=5))
    with FakeBatchProcess(config) as provider:
        plan = batch_plan(tmp_path, provider, wait_s=60, failed_lines="sync")
        summary = evaluate(isolated_workspace, plan, variants=["zero-shot"])
        log, failed = provider.log(), error_lines(provider)

    retryable = [line for line in failed if line["response"]["status_code"] != 400]
    assert retryable and len(failed) > len(retryable)  # the seed gives both kinds
    assert log["calls"]["chat"] == len(retryable)  # one synchronous call per retryable failed line
    assert set(Counter(line["custom_id"] for line in log["lines"]).values()) == {1}  # none resubmitted
    rows = [r for r in pq.read_table(summary["responses"]).to_pylist() if r["hosting"] == "batch"]
    assert len(rows) == len(golden)
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    sync_ids = {json.loads(line["custom_id"])[3] for line in retryable}
    for row in (r for r in rows if r["error_type"] is None):
        suffix = "" if row["item_id"] in sync_ids else "_batches"  # a synchronous answer: the list price
        expected = (
            row["prompt_tokens"] * prices[f"input_cost_per_token{suffix}"]
            + row["completion_tokens"] * prices[f"output_cost_per_token{suffix}"]
        )
        assert row["cost_usd"] == pytest.approx(expected)
    assert Counter(r["error_type"] for r in rows) == {
        None: len(golden) - len(failed) + len(retryable),
        "client_error": len(failed) - len(retryable),
    }
