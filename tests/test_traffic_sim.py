"""The rollout simulator's traffic: each step draws user keys until the smaller arm has enough,
so a healthy step never stalls on a short random split (checked against ``bucket`` directly);
the candidate never has more calls in flight than its pace, shadow calls included (counted by the
fake engine itself); and the probe picks the pace where a slot-bound engine saturates."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest

from workhorse.config import RolloutPolicy
from workhorse.router import Router, bucket
from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.rollout.traffic_sim import MAX_PACE, calibrate, keys_for_step, simulate

UC = "ticket-routing"
POLICY = RolloutPolicy.model_validate({"steps": ["shadow", 5, 50, 100], "min_requests": 12})


@pytest.mark.parametrize("candidate", [5, 50, 95])
def test_every_arm_gets_the_margin_over_the_minimum(isolated_workspace, candidate):
    router = Router(isolated_workspace, UC, ModelSpec("openai/a"), ModelSpec("openai/b"))
    weights = {"candidate": candidate, "incumbent": 100 - candidate, "shadow": False, "stage": str(candidate)}
    for _ in range(20):  # many draws: a fixed call count falls short in some of them
        keys = keys_for_step(router, POLICY, weights)
        on_candidate = sum(bucket(UC, k) < candidate for k in keys)
        assert min(on_candidate, len(keys) - on_candidate) == math.ceil(12 * 1.5)


def test_shadow_sends_the_margin_once_since_both_arms_see_every_call(isolated_workspace):
    router = Router(isolated_workspace, UC, ModelSpec("openai/a"), ModelSpec("openai/b"))
    weights = {"candidate": 0, "incumbent": 100, "shadow": True, "stage": "shadow"}
    keys = keys_for_step(router, POLICY, weights)
    assert len(keys) == 18 and len(set(keys)) == 18


REQUESTS = [[{"role": "user", "content": f"where is order {i}?"}] for i in range(40)]


@pytest.mark.parametrize("candidate", [0, 50])  # 0: shadow, every call also reaches the candidate
def test_the_candidate_never_has_more_calls_in_flight_than_its_pace(
    isolated_workspace, fake_openai_server, candidate
):
    inc_server, cand_server = fake_openai_server(latency=0.3), fake_openai_server(latency=0.3)
    router = Router(
        isolated_workspace,
        UC,
        ModelSpec("openai/a", api_base=inc_server.url, api_key="k"),
        ModelSpec("openai/b", api_base=cand_server.url, api_key="k"),
    )
    weights = {
        "candidate": candidate,
        "incumbent": 100 - candidate,
        "shadow": not candidate,
        "stage": str(candidate),
    }
    router.weights = lambda: weights  # a fixed step, without a rollout in the state store

    keys = (
        keys_in_pattern([i % 2 == 0 for i in range(24)], 50)
        if candidate
        else [uuid.uuid4().hex for _ in range(24)]
    )

    async def step():
        try:
            return await simulate(router, REQUESTS, keys, concurrency=8, candidate_concurrency=2)
        finally:
            await router.aclose()

    stats = asyncio.run(step())
    records = cand_server.records()
    assert len(records) == (24 if not candidate else stats.by_arm["candidate"]) and stats.answered == 24
    assert max(r["in_flight"] for r in records) <= 2
    if (
        candidate
    ):  # beside a step's candidate calls the incumbent's are not held back (in shadow the waves are)
        assert max(r["in_flight"] for r in inc_server.records()) > 2


def keys_in_pattern(on_candidate: list[bool], candidate: int) -> list[str]:
    """User keys routed as the pattern says (True: the candidate) at a ``candidate`` % split."""
    pools: dict[bool, list[str]] = {True: [], False: []}
    while any(len(pools[arm]) < on_candidate.count(arm) for arm in pools):
        key = uuid.uuid4().hex
        pools[bucket(UC, key) < candidate].append(key)
    drawn = {arm: iter(pool) for arm, pool in pools.items()}
    return [next(drawn[arm]) for arm in on_candidate]


def test_calls_reach_both_arms_in_arrival_order(isolated_workspace, fake_openai_server):
    # Every fourth key goes to the candidate: its calls must be spread over the step like the keys,
    # not all sent first beside a full incumbent load (which biased the latency guardrail).
    inc_server, cand_server = fake_openai_server(latency=0.05), fake_openai_server(latency=0.05)
    router = Router(
        isolated_workspace,
        UC,
        ModelSpec("openai/a", api_base=inc_server.url, api_key="k"),
        ModelSpec("openai/b", api_base=cand_server.url, api_key="k"),
    )
    weights = {"candidate": 25, "incumbent": 75, "shadow": False, "stage": "25"}
    router.weights = lambda: weights
    keys = keys_in_pattern([i % 4 == 3 for i in range(40)], 25)

    async def step():
        try:
            return await simulate(router, REQUESTS, keys, concurrency=4, candidate_concurrency=4)
        finally:
            await router.aclose()

    asyncio.run(step())
    answered = sorted(
        [(r["t"], "candidate") for r in cand_server.records()]
        + [(r["t"], "incumbent") for r in inc_server.records()]
    )
    arms = [arm for _, arm in answered]
    assert arms[:20].count("candidate") in (4, 5, 6) and arms[20:].count("candidate") in (4, 5, 6)


@pytest.mark.parametrize("slots, pace", [(2, 2), (None, MAX_PACE)])
def test_the_probe_paces_the_traffic_where_the_engine_saturates(fake_openai_server, slots, pace):
    # A second per answer: the client's own overhead on a loaded 2-core box (up to ~0.2 s) stays noise.
    engine = fake_openai_server(latency=1.0, slots=slots)
    found = asyncio.run(calibrate(ModelSpec("openai/engine", api_base=engine.url, api_key="k"), REQUESTS))
    print("probe:", found.describe())
    assert found.pace == pace
    assert found.paced_latency_s < 1.5 * found.latency_s[1]  # at its pace nothing waits inside the engine
    assert max(r["in_flight"] for r in engine.records()) == (
        4 if slots else MAX_PACE
    )  # it stopped at saturation
