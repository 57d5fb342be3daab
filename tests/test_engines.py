"""The real embedded model through real vLLM: server (via LiteLLM and the runner) and offline batch."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from workhorse.errors import EngineError
from workhorse.tasks.common.engines import (
    BatchParams,
    OfflineEngine,
    VLLMServer,
    prepare_embedded_model,
    run_offline_batch,
)
from workhorse.tasks.common.runner import ModelRequest, ModelSpec, Runner
from workhorse.tasks.evaluate.prompts import PromptTask, render

pytestmark = pytest.mark.integration

SENTIMENT = [
    ("I loved every minute of it, wonderful!", "positive"),
    ("Terrible, it broke on day one.", "negative"),
    ("Fantastic quality, highly recommended.", "positive"),
    ("Awful service, never again.", "negative"),
]


def sentiment_task(text: str) -> PromptTask:
    return PromptTask("classification", text, labels=("positive", "negative"))


def test_prepare_is_idempotent(embedded_model_dir):
    before = (embedded_model_dir / "model.safetensors").stat().st_mtime_ns
    assert prepare_embedded_model(embedded_model_dir.parent) == embedded_model_dir
    assert (embedded_model_dir / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in embedded_model_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_server_answers_through_litellm_with_a_choice_constraint(vllm_server, isolated_workspace):
    spec = ModelSpec(
        model=vllm_server.litellm_model,
        api_base=vllm_server.api_base,
        hosting="self_hosted",
        max_concurrency=4,
        timeout_s=120,
    )
    requests = []
    for index, (text, _) in enumerate(SENTIMENT):
        messages, params = render("constrained", sentiment_task(text), "self_hosted")
        requests.append(
            ModelRequest(f"s{index}", spec, messages, {"max_tokens": 5, "temperature": 0, **params})
        )
    rows = asyncio.run(Runner(isolated_workspace, "server-run").run(requests))
    assert all(r.error_type is None for r in rows)
    assert {r.output for r in rows} <= {"positive", "negative"}  # the constraint held on the real server
    assert all(r.prompt_tokens > 10 and r.completion_tokens >= 1 for r in rows)


def test_one_offline_engine_answers_several_batches(embedded_model_dir, tmp_path):
    """Started once, the engine answers every batch handed to it (a demo's use cases pay one start)."""
    conversations = [render("constrained", sentiment_task(text), "batch")[0] for text, _ in SENTIMENT]
    schema = {"type": "object", "properties": {"sentiment": {"type": "string"}}, "required": ["sentiment"]}
    with OfflineEngine(embedded_model_dir, tmp_path) as engine:
        pid = engine.process.pid
        result = run_offline_batch(
            embedded_model_dir,
            conversations,
            BatchParams(max_tokens=5, choice=["positive", "negative"]),
            engine=str(engine.folder),
        )
        mixed = run_offline_batch(
            embedded_model_dir,
            conversations[:2],
            [BatchParams(max_tokens=24, json_schema=schema), BatchParams(max_tokens=5, choice=["yes", "no"])],
            engine=str(engine.folder),
        )
        assert engine.process.pid == pid and engine.process.poll() is None  # the same engine, still up
    assert len(result.outputs) == len(SENTIMENT)
    assert set(result.outputs) <= {"positive", "negative"}
    assert result.tokens_per_s > 0 and result.generate_s < result.wall_s
    assert "sentiment" in json.loads(mixed.outputs[0])  # each conversation kept its own constraint
    assert mixed.outputs[1] in ("yes", "no")
    assert _live_group_members(pid, wait_s=10) == []


def test_a_batch_without_an_engine_starts_its_own(embedded_model_dir, tmp_path):
    conversations = [render("constrained", sentiment_task(text), "batch")[0] for text, _ in SENTIMENT[:2]]
    result = run_offline_batch(
        embedded_model_dir,
        conversations,
        BatchParams(max_tokens=5, choice=["positive", "negative"]),
        cache_root=tmp_path,
    )
    assert set(result.outputs) <= {"positive", "negative"} and len(result.outputs) == 2
    assert result.wall_s > result.generate_s > 0  # the engine's start is in the wall time, not the generation


def test_start_failure_quotes_the_server_log(tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    server = VLLMServer(broken, cache_root=tmp_path, start_timeout_s=120)
    with pytest.raises(EngineError) as raised:
        server.start()
    assert "exited with code" in str(raised.value)
    assert str(broken) in str(raised.value) or "config" in str(raised.value).lower()


def test_stop_leaves_no_process_behind(embedded_model_dir, tmp_path):
    with VLLMServer(embedded_model_dir, cache_root=tmp_path) as server:
        pid = server.process.pid
    assert _live_group_members(pid, wait_s=10) == []


def _live_group_members(group: int, wait_s: float) -> list[str]:
    """Processes of the group that are not zombies, after waiting up to wait_s for them to go."""
    deadline = time.monotonic() + wait_s
    while True:
        listing = subprocess.run(
            ["ps", "-e", "-o", "pgid=,stat=,pid="], capture_output=True, text=True
        ).stdout
        live = [
            pid
            for pgid, stat, pid in (line.split() for line in listing.splitlines())
            if pgid == str(group) and not stat.startswith("Z")
        ]
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.2)
