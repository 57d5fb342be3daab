"""The routing layer against real local HTTP servers (the fake OpenAI server, not mocks):
the in-process Router (sticky buckets, shadow, fallback, traffic rows without keys) and the
exported LiteLLM config loaded into litellm.Router (weighted split, fallback to the incumbent)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import yaml

from tests.support.routing import CANARY, UC, at_weight, specs
from workhorse.router import Router, bucket
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.rollout import state as routing
from workhorse.tasks.rollout.litellm_export import export_litellm_config

# Every router test runs on both state stores (SQLite file, real PostgreSQL).
pytestmark = pytest.mark.usefixtures("state_backend")

MESSAGES = [[{"role": "user", "content": f"my parcel {i} is late"}] for i in range(40)]


async def send(router: Router, n: int, keys=None) -> list:
    answers = await asyncio.gather(
        *(
            router.complete(MESSAGES[i % len(MESSAGES)], key=(keys or {}).get(i, f"user-{i}"))
            for i in range(n)
        )
    )
    await router.aclose()
    return answers


def no_canary_anywhere(ws):
    for path in ws.root.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_sticky_buckets_follow_the_weight_and_only_grow():
    keys = [f"user-{i}" for i in range(2000)]
    share = sum(bucket(UC, k) < 25 for k in keys) / len(keys)
    assert abs(share - 0.25) < 3.29 * math.sqrt(0.25 * 0.75 / len(keys))
    at_5 = {k for k in keys if bucket(UC, k) < 5}
    at_25 = {k for k in keys if bucket(UC, k) < 25}
    assert at_5 < at_25  # users already on the candidate stay on it as the weight grows
    assert bucket(UC, "user-1") == bucket(UC, "user-1") and bucket("other", "user-1") is not None


def test_weighted_calls_are_sticky_and_logged_without_keys(isolated_workspace, fake_openai_server):
    ws = isolated_workspace
    inc_server, cand_server = fake_openai_server(), fake_openai_server()
    at_weight(ws, 25)
    router = Router(ws, UC, *specs(inc_server, cand_server))
    answers = asyncio.run(send(router, 80))
    arms = [a.arm for a in answers]
    assert arms == ["candidate" if bucket(UC, f"user-{i}") < 25 else "incumbent" for i in range(80)]
    rows = read_traffic(ws, UC).to_pylist()
    assert sorted(r["arm"] for r in rows) == sorted(arms)
    assert {r["rollout_stage"] for r in rows} == {"25"} and all(r["status"] == "ok" for r in rows)
    assert all(r["cost_usd"] > 0 and r["prompt_tokens"] > 0 and r["latency_ms"] > 0 for r in rows)
    assert len(cand_server.records()) == arms.count("candidate")
    assert all(rec["auth"] == f"Bearer {CANARY}" for rec in cand_server.records())  # the key was used...
    no_canary_anywhere(ws)  # ...and stored nowhere


def test_shadow_answers_with_the_incumbent_and_pairs_both_rows(isolated_workspace, fake_openai_server):
    ws = isolated_workspace
    inc_server, cand_server = fake_openai_server(), fake_openai_server(latency=3.0)
    at_weight(ws, 0)
    router = Router(ws, UC, *specs(inc_server, cand_server))

    async def answers_and_shadows_in_flight():
        answers = await asyncio.gather(*(router.complete(MESSAGES[i], key=f"user-{i}") for i in range(20)))
        in_flight = sum(not task.done() for task in router._background)
        await router.aclose()
        return answers, in_flight

    answers, in_flight = asyncio.run(answers_and_shadows_in_flight())
    assert {a.arm for a in answers} == {"incumbent"}
    assert in_flight == 20  # every caller had its answer while its shadow call was still running
    rows = read_traffic(ws, UC).to_pylist()
    shadow = [r for r in rows if r["arm"] == "shadow"]
    by_id = {r["request_id"]: r for r in rows if r["arm"] == "incumbent"}
    assert len(shadow) == 20 and all(json.loads(r["metadata"])["shadow_of"] in by_id for r in shadow)


def test_a_failing_candidate_falls_back_to_the_incumbent(isolated_workspace, fake_openai_server):
    ws = isolated_workspace
    inc_server, cand_server = fake_openai_server(), fake_openai_server()
    cand_server.control(down=True)
    at_weight(ws, 50)
    router = Router(ws, UC, *specs(inc_server, cand_server))
    answers = asyncio.run(send(router, 40))
    on_candidate = [a for i, a in enumerate(answers) if bucket(UC, f"user-{i}") < 50]
    assert on_candidate and all(a.fallback and a.arm == "incumbent" and a.text for a in on_candidate)
    rows = read_traffic(ws, UC).to_pylist()
    errors = [r for r in rows if r["arm"] == "candidate"]
    # Requests that reached the down candidate are server errors; once its circuit opens, circuit_open.
    assert len(errors) == len(on_candidate) and "server_error" in {r["error_type"] for r in errors}
    assert {r["error_type"] for r in errors} <= {"server_error", "circuit_open"}
    assert len(inc_server.records()) == 40


def load_exported(ws, incumbent, candidate, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    path = export_litellm_config(ws, UC, incumbent, candidate)
    text = path.read_text()
    assert CANARY not in text and "os.environ/OPENAI_API_KEY" in text
    return yaml.safe_load(text)


def litellm_router(config):
    import litellm

    return litellm.Router(model_list=config["model_list"], **config["router_settings"])


async def through_litellm(router, n: int) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(i):
        async with limit:
            response = await router.acompletion(model=UC, messages=MESSAGES[i % len(MESSAGES)])
            return response._hidden_params.get("model_id")

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("percent", [25])
def test_exported_config_splits_traffic_by_the_weights(
    isolated_workspace, fake_openai_server, monkeypatch, percent
):
    ws = isolated_workspace
    inc_server, cand_server = fake_openai_server(), fake_openai_server()
    at_weight(ws, percent)
    config = load_exported(ws, *specs(inc_server, cand_server), monkeypatch)
    n = 400
    ids = asyncio.run(through_litellm(litellm_router(config), n))
    hits = len(cand_server.records())
    assert ids.count(f"{UC}/candidate") == hits
    expected, sd = n * percent / 100, math.sqrt(n * percent / 100 * (1 - percent / 100))
    z = (hits - expected) / sd
    print(f"LiteLLM split at {percent} %: {hits}/{n} on the candidate, z = {z:+.2f}")
    assert abs(z) < 3.29  # two-sided 0.1 % binomial bound
    assert all(rec["auth"] == f"Bearer {CANARY}" for rec in cand_server.records() + inc_server.records())


def test_exported_config_falls_back_to_the_incumbent(isolated_workspace, fake_openai_server, monkeypatch):
    ws = isolated_workspace
    inc_server, cand_server = fake_openai_server(), fake_openai_server()
    cand_server.control(down=True)
    at_weight(ws, 50)
    config = load_exported(ws, *specs(inc_server, cand_server), monkeypatch)
    ids = asyncio.run(through_litellm(litellm_router(config), 40))
    assert len(ids) == 40  # every request answered
    assert cand_server.records() and all(r["outcome"] == "down" for r in cand_server.records())
    assert len(inc_server.records()) == 40
    assert set(ids) <= {f"{UC}/incumbent", f"{UC}/incumbent-fallback"}


def test_exported_config_follows_the_state(isolated_workspace, fake_openai_server, monkeypatch):
    ws = isolated_workspace
    inc_server, cand_server = fake_openai_server(), fake_openai_server()
    at_weight(ws, 25)
    routing.revert(ws, UC, "test", {}, notify=lambda p: None)
    config = load_exported(ws, *specs(inc_server, cand_server), monkeypatch)
    group = [d for d in config["model_list"] if d["model_name"] == UC]
    assert [d["model_info"]["id"] for d in group] == [f"{UC}/incumbent"]
    assert group[0]["litellm_params"]["weight"] == 100
