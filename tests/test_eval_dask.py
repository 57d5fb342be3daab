"""parallel_eval with its shards on a Dask LocalCluster (2 worker processes) against the fake
OpenAI server: the same responses, scores and verdict as the thread runner, every item
accounted for under faults, and no API key in what is shipped to the workers."""

from __future__ import annotations

import asyncio
import csv
import pickle
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from workhorse.testing.fake_openai import Faults
from workhorse.workspace import Workspace

INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked"]
PER_INTENT = 8
BLOCK_KEY = "sk-dask-block-canary-41c7e2"
ENV_KEY = "sk-dask-env-canary-9d03aa"
# What identifies a response and what the model answered; latency and the cached flag may differ.
SAME = (
    "item_id",
    "model",
    "prompt_variant",
    "output",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)


def golden_workspace(root: Path, shared_datasets: Path, plan: dict) -> Workspace:
    """A BANKING77 golden set (40 items, split dev/test by hash) and the plan, in a fresh workspace."""
    from workhorse.tasks.golden.refresh import SourceSpec, refresh_golden
    from workhorse.tasks.golden.sources import GoldenSpec

    rows = list(csv.DictReader((shared_datasets / "banking77" / "test.csv").open()))
    chosen = [row for intent in INTENTS for row in [r for r in rows if r["category"] == intent][:PER_INTENT]]
    root.mkdir(parents=True)
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(chosen)
    workspace = Workspace.resolve(root)
    refresh_golden(
        workspace,
        GoldenSpec("banking", "classification", labels=INTENTS),
        [SourceSpec("labels", str(labels), {"input": "text", "reference": "category"})],
    )
    (root / "workhorse.yaml").write_text(yaml.safe_dump(plan))
    return workspace


def plan_for(env_server, block_server) -> dict:
    """The incumbent keyed by the environment, a self-hosted candidate (whose `choice` constraint
    the fake answers with a label, so some answers are right), and a candidate keyed by a block."""
    return {
        "incumbent": "openai/incumbent",
        "use_cases": {"banking": {"task_type": "classification", "labels": INTENTS}},
        "candidates": [
            {"model": "hosted_vllm/candidate-local", "api_base": env_server.url, "hosting": ["self_hosted"]},
            {"model": "openai/candidate-block", "endpoint": "dask-test-endpoint"},
        ],
        "quality_policy": {"min_items": 5},
    }


@pytest.fixture
def servers(prefect_server, fake_openai_server, monkeypatch):
    """Two fake servers; the second one's key lives only in a ModelEndpoint block."""
    from workhorse.blocks.endpoints import ModelEndpoint

    def start(faults: Faults | None = None):
        env_server, block_server = (
            fake_openai_server(faults=faults, seed=3),
            fake_openai_server(faults=faults, seed=4),
        )
        monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
        monkeypatch.setenv("OPENAI_API_BASE", env_server.url)  # the incumbent answers there too
        ModelEndpoint(model="openai/candidate-block", api_base=block_server.url, api_key=BLOCK_KEY).save(
            "dask-test-endpoint", overwrite=True
        )
        return env_server, block_server

    return start


def evaluate(workspace: Workspace, shard_size: int = 10, **execution) -> dict:
    """Small shards, so that each arm is split and both workers get some."""
    from workhorse.flows.evaluate import parallel_eval

    return asyncio.run(
        parallel_eval(
            use_case="banking",
            workspace=str(workspace.root),
            variants=["zero-shot", "constrained"],
            shard_size=shard_size,
            replay=False,
            run_id="eval-dask-test",
            **execution,
        )
    )


def splits(workspace: Workspace) -> tuple[set[str], set[str]]:
    golden = pq.read_table(next((workspace.root / "golden" / "banking").glob("v*.parquet"))).to_pylist()
    return {g["item_id"] for g in golden if g["split"] == "dev"}, {
        g["item_id"] for g in golden if g["split"] == "test"
    }


def stored(summary: dict, name: str, columns: tuple[str, ...]) -> list[tuple]:
    return sorted(tuple(row[c] for c in columns) for row in pq.read_table(summary[name]).to_pylist())


def test_dask_gives_the_thread_runners_responses_scores_and_verdict(servers, shared_datasets, tmp_path):
    env_server, block_server = servers()
    plan = plan_for(env_server, block_server)
    workspace = golden_workspace(tmp_path / "threads", shared_datasets, plan)
    threads = evaluate(workspace)
    dask = evaluate(
        golden_workspace(tmp_path / "dask", shared_datasets, plan), task_runner="dask", dask_workers=2
    )

    responses = stored(threads, "responses", SAME)
    assert responses == stored(dask, "responses", SAME)
    dev, test = splits(workspace)
    assert len(responses) == len(dev) * 2 * 2 + len(test) * 3  # dev: 2 candidates x 2 variants; test: 3 arms
    assert all(r[SAME.index("error_type")] is None for r in responses)
    score_columns = ("item_id", "model", "prompt_variant", "split", "prediction", "correct", "value")
    assert stored(threads, "scores", score_columns) == stored(dask, "scores", score_columns)
    assert threads["verdict"] == dask["verdict"] and threads["chosen_variants"] == dask["chosen_variants"]
    assert 0 < sum(r[SAME.index("output")] in INTENTS for r in responses) < len(responses)
    # The block's key reached its server only through the worker's own lookup of the block.
    assert {r["auth"] for r in block_server.records()} == {f"Bearer {BLOCK_KEY}"}
    assert f"Bearer {ENV_KEY}" in {
        r["auth"] for r in env_server.records()
    }  # the incumbent's, from the environment
    checkpoints = list((Path(dask["responses"]).parent).glob("checkpoint-*.jsonl"))
    assert len(checkpoints) > 2 and sum(len(p.read_text().splitlines()) for p in checkpoints) == len(
        responses
    )


def test_every_item_is_accounted_for_under_faults_on_dask(servers, shared_datasets, tmp_path):
    faults = Faults(server_error=0.08, rate_limit=0.06, malformed=0.03, reset=0.03, retry_after_s=0.05)
    env_server, block_server = servers(faults)
    workspace = golden_workspace(tmp_path / "faults", shared_datasets, plan_for(env_server, block_server))
    # One shard per arm: a shard waits for its slowest retry chain, and a worker runs its shards in turn.
    summary = evaluate(workspace, shard_size=20, task_runner="dask", dask_workers=2)

    responses = pq.read_table(summary["responses"]).to_pylist()
    dev, test = splits(workspace)
    arms: dict[tuple, set] = {}
    for row in responses:
        arms.setdefault((row["model"], row["prompt_variant"]), set()).add(row["item_id"])
    for (model, variant), items in arms.items():
        assert items in (dev, test, dev | test), (model, variant)  # no item lost, none twice (ids are a set)
    assert len(responses) == len({(r["model"], r["prompt_variant"], r["item_id"]) for r in responses})
    faulted = [r for r in env_server.records() + block_server.records() if r["outcome"] != "ok"]
    assert faulted, "the faults never fired: this test would prove nothing"
    assert all(r["error_type"] is None or r["error_message"] for r in responses)


def test_shard_jobs_carry_no_api_key(tmp_path):
    """What is pickled to the scheduler and workers holds no key; a key from nowhere is refused."""
    from workhorse.errors import ConfigError
    from workhorse.tasks.common.runner import ModelRequest, ModelSpec
    from workhorse.tasks.evaluate.run import ShardJob, sealed

    spec = ModelSpec(model="openai/candidate-block", api_key=BLOCK_KEY)
    requests = [ModelRequest(str(i), spec, [{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    job = ShardJob(Workspace.resolve(tmp_path), "run", sealed(requests, {"openai/candidate-block": "b"}), {})
    assert BLOCK_KEY.encode() not in pickle.dumps(job)
    assert [r.cache_key for r in job.requests] == [r.cache_key for r in requests]
    with pytest.raises(ConfigError, match="candidate-block"):
        sealed(requests, {})


@pytest.mark.parametrize(
    "plan_eval, parameters, expected",
    [
        ({}, {}, ("threads", None, 2)),
        ({"task_runner": "dask", "dask_workers": 3}, {}, ("dask", None, 3)),
        (
            {"task_runner": "dask", "dask_address": "tcp://plan:8786"},
            {"task_runner": "threads"},
            ("threads", "tcp://plan:8786", 2),
        ),
        ({"task_runner": "threads"}, {"task_runner": "dask", "dask_workers": 4}, ("dask", None, 4)),
    ],
)
def test_task_runner_comes_from_the_flow_parameter_then_the_plan(plan_eval, parameters, expected):
    from workhorse.config import parse_plan
    from workhorse.tasks.evaluate.run import execution_from

    execution = execution_from(parse_plan({"eval": plan_eval}), **parameters)
    assert (execution.task_runner, execution.dask_address, execution.dask_workers) == expected


@pytest.mark.parametrize("plan_eval", [{"task_runner": "ray"}, {"dask_workers": 0}])
def test_a_wrong_eval_section_names_the_key(plan_eval):
    from workhorse.config import parse_plan
    from workhorse.errors import ConfigError

    with pytest.raises(ConfigError, match=f"eval.{next(iter(plan_eval))}"):
        parse_plan({"eval": plan_eval})


def test_a_worker_killed_mid_shard_costs_no_item_and_no_second_payment(
    prefect_server, fake_openai_server, shared_datasets, tmp_path, monkeypatch
):
    """Dask reruns the lost shard elsewhere; the shard resumes from its checkpoint, so the answers
    its first attempt got are not paid for again, and every item still gets exactly one row."""
    import os
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    server = fake_openai_server(latency=0.01, pause_after_successes=12)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_API_BASE", server.url)
    plan = {
        "incumbent": "openai/incumbent",
        "quality_policy": {"min_items": 5},
        "use_cases": {"banking": {"task_type": "classification", "labels": INTENTS}},
        "candidates": [
            {"model": "hosted_vllm/candidate-local", "api_base": server.url, "hosting": ["self_hosted"]}
        ],
    }
    workspace = golden_workspace(tmp_path / "killed", shared_datasets, plan)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        outcome: dict = {}
        flow = threading.Thread(
            target=lambda: outcome.update(
                summary=evaluate(workspace, task_runner="dask", dask_address=cluster.scheduler_address)
            )
        )
        flow.start()
        victim = _worker_holding_a_shard(client, server)
        os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
        time.sleep(1.0)  # the scheduler notices the loss and hands the shard to a worker
        server.release()
        flow.join(timeout=240)
    assert "summary" in outcome, "the flow did not finish after losing a worker"

    records = server.records()
    assert any(r["outcome"] == "client_gone" for r in records), (
        "no answer was lost with the worker: not mid-shard"
    )
    paid = [r for r in records if r["outcome"] == "ok"]
    responses = pq.read_table(outcome["summary"]["responses"]).to_pylist()
    dev, test = splits(workspace)
    assert len(responses) == len({(r["model"], r["prompt_variant"], r["item_id"]) for r in responses})
    assert len(responses) == len(dev) * 2 + len(test) * 2  # dev: 1 candidate x 2 variants; test: 2 arms
    assert all(r["error_type"] is None for r in responses)
    # Each row is a distinct request (the server's key is model + messages, which the two prompt
    # variants share, so it cannot tell them apart): one paid answer per row, none paid twice.
    assert len(paid) == len(responses), "an answer the first attempt got was paid for again"


def _worker_holding_a_shard(client, server, timeout_s: float = 60.0) -> str:
    """The address of a worker running a shard once the fake server holds its requests."""
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        successes = json.loads(urllib.request.urlopen(f"{server.base}/_records", timeout=10).read())[
            "successes"
        ]
        busy = [address for address, keys in client.processing().items() if keys]
        if successes >= 12 and busy:
            time.sleep(0.5)  # the rest of the shard's requests arrive and are held
            return busy[0]
        time.sleep(0.05)
    raise AssertionError("the fake server never paused with a shard in flight")
