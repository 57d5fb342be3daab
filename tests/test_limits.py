"""Limits per endpoint: the plan's figures reach the server (counted there, from its own records),
defaults fill what the plan leaves out, and a 429 halves the window that the answers widen again."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from tests.support.inference import FAST_RETRY, requests_for
from workhorse.config import parse_plan
from workhorse.errors import ConfigError
from workhorse.tasks.common.limits import (
    EndpointLimiter,
    Limits,
    TokenBucket,
    expected_tokens,
    resolve_limits,
)
from workhorse.tasks.common.runner import Runner
from workhorse.testing.fake_openai import Faults


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(workspace, requests, run_id="limits", **options):
    runner = Runner(workspace, run_id, retry=FAST_RETRY, use_cache=False, **options)
    return runner, asyncio.run(runner.run(requests))


def with_limits(requests, **limits):
    spec = replace(requests[0].model, **limits)
    return [replace(r, model=spec) for r in requests]


# --------------------------------------------------------------------------- from the plan


def test_a_candidates_figures_win_over_the_plans_limits_by_model_then_by_provider():
    plan = parse_plan(
        {
            "incumbent": "openai/gpt-4o-mini",
            "candidates": [{"model": "together_ai/qwen", "max_concurrency": 64}],
            "limits": {
                "together_ai": {"rpm": 3000, "max_concurrency": 8},
                "openai/gpt-4o-mini": {"tpm": 1e6},
            },
        }
    )
    candidate = plan.limits_for("together_ai/qwen", plan.candidates[0])
    assert (candidate.max_concurrency, candidate.rpm, candidate.tpm) == (64, 3000, None)
    incumbent = plan.limits_for("openai/gpt-4o-mini")
    assert (incumbent.max_concurrency, incumbent.rpm, incumbent.tpm) == (None, None, 1e6)


@pytest.mark.parametrize("bad", [{"max_concurrency": 0}, {"rpm": -1}, {"tpm": 0}, {"max_concurency": 4}])
def test_a_limit_that_cannot_be_is_refused_with_its_path(bad):
    with pytest.raises(ConfigError, match="candidates"):
        parse_plan({"candidates": [{"model": "openai/x", **bad}]})


@pytest.mark.parametrize(
    "model, api_base, given, expected",
    [
        ("openai/gpt-4o-mini", None, {}, Limits(16, 500, 200_000)),
        ("gpt-4o-mini", None, {"rpm": 10_000}, Limits(16, 10_000, 200_000)),
        ("anthropic/claude-3-5-haiku", None, {"max_concurrency": 2}, Limits(2, 50, 40_000)),
        # A server of its own (a proxy, vLLM) gets no provider's tier.
        ("openai/gpt-4o-mini", "http://proxy/v1", {}, Limits(16, None, None)),
        ("hosted_vllm/smollm2", "http://vllm/v1", {}, Limits(64, None, None)),
        ("somewhere/model", None, {"tpm": 5}, Limits(16, None, 5)),
    ],
)
def test_defaults_fill_only_what_the_plan_leaves_out(model, api_base, given, expected):
    assert resolve_limits(model, api_base, **given) == expected


def test_the_plans_concurrency_reaches_the_spec_the_runner_uses(isolated_workspace):
    from workhorse.tasks.evaluate.run import contenders_from_plan

    plan = parse_plan(
        {
            "candidates": [
                {
                    "model": "hosted_vllm/a",
                    "api_base": "http://127.0.0.1:9/v1",
                    "max_concurrency": 48,
                    "rpm": 600,
                },
                {"model": "hosted_vllm/b", "api_base": "http://127.0.0.1:9/v1"},
            ],
            "limits": {"gpt-4o-mini": {"max_concurrency": 3}},
        }
    )
    incumbent, candidates, _ = contenders_from_plan(plan, "any", None, ["api"], None, isolated_workspace.root)
    assert [(c.spec.max_concurrency, c.spec.rpm) for c in candidates] == [(48, 600), (64, None)]
    assert incumbent.spec.max_concurrency == 3


# --------------------------------------------------------------------------- buckets and windows


def test_a_bucket_holds_one_seconds_worth_and_refills_at_its_rate():
    clock = Clock()
    bucket = TokenBucket(per_minute=600, clock=clock)  # 10 a second
    for _ in range(10):
        assert bucket.wait_s(1) == 0
        bucket.take(1)
    assert bucket.wait_s(1) == pytest.approx(0.1)
    clock.now += 0.35
    assert bucket.wait_s(3) == 0 and bucket.wait_s(4) == pytest.approx(0.05)


def test_a_request_bigger_than_the_bucket_waits_for_a_full_one_and_leaves_a_debt():
    clock = Clock()
    bucket = TokenBucket(per_minute=60, clock=clock)  # 1 a second, capacity 1
    assert bucket.wait_s(500) == 0
    bucket.take(500)
    assert bucket.wait_s(1) == pytest.approx(500)  # the debt is paid before anything else goes


def test_the_expected_tokens_are_the_prompt_and_the_completions_ceiling():
    messages = [{"role": "user", "content": "x" * 400}]
    assert expected_tokens(messages, {"max_tokens": 10}) == 100 + 4 + 10
    assert expected_tokens(messages, {}) == 100 + 4 + 256


def test_a_429_halves_the_window_once_per_congestion_and_answers_widen_it_back():
    clock = Clock()
    limiter = EndpointLimiter("e", Limits(8), clock=clock)

    async def scenario():
        early = [await limiter.acquire(1) for _ in range(4)]
        clock.now += 1
        limiter.release(early[0], "rate_limited")
        limiter.release(early[1], "rate_limited")  # sent before that halving: the same congestion
        assert limiter.window == 4 and limiter.halvings == 1
        late = await limiter.acquire(1)
        clock.now += 1
        limiter.release(late, "rate_limited")
        assert limiter.window == 2 and limiter.halvings == 2
        for ticket in early[2:]:
            limiter.release(ticket, None)
        answered = 0
        while limiter.window < 8:
            limiter.release(await limiter.acquire(1), None)
            answered += 1
        return answered

    answered = asyncio.run(scenario())
    # Additive increase of 1/window per answer: from 2 to 8 takes about 2+3+...+7 answers.
    assert 20 <= answered + 2 <= 30
    assert limiter.in_flight == 0 and limiter.windows[:3] == [8.0, 4.0, 2.0]


# --------------------------------------------------------------------------- counted at the server


@pytest.mark.parametrize("concurrency", [5, 40])
def test_the_concurrency_at_the_server_is_the_plans(fake_openai_server, isolated_workspace, concurrency):
    server = fake_openai_server(latency=0.1)
    requests = with_limits(requests_for(server, 160), max_concurrency=concurrency)
    _, rows = run(isolated_workspace, requests)
    assert all(r.error_type is None for r in rows)
    assert max(r["in_flight"] for r in server.records()) == concurrency


def test_requests_per_minute_hold_in_every_window_the_server_saw(fake_openai_server, isolated_workspace):
    rpm, count = 1200, 70  # 20 a second, a bucket of 20
    server = fake_openai_server()
    requests = with_limits(requests_for(server, count), max_concurrency=64, rpm=rpm)
    _, rows = run(isolated_workspace, requests)
    assert all(r.error_type is None for r in rows)
    times = sorted(r["t"] for r in server.records())
    assert len(times) == count
    rate, burst = rpm / 60, rpm / 60
    # In any span [t_i, t_j] the server got at most a full bucket plus what refilled meanwhile
    # (one request of slack for the gap between the client's send and the server's clock).
    worst = max(
        (j - i + 1) - (burst + rate * (times[j] - times[i])) for i in range(count) for j in range(i, count)
    )
    assert worst <= 1


def test_a_429_storm_shrinks_the_window_seen_at_the_server_and_it_recovers_after(
    fake_openai_server, isolated_workspace
):
    ceiling = 16
    stormy = fake_openai_server(latency=0.02, faults=Faults(rate_limit=0.5, retry_after_s=0.01))
    calm = fake_openai_server(latency=0.05)
    limiter = EndpointLimiter("shared", Limits(ceiling))
    # One limiter under both addresses: the calm server sees what the storm left of the window.
    shared = {stormy.url: limiter, calm.url: limiter}
    run(isolated_workspace, with_limits(requests_for(stormy, 60), max_concurrency=ceiling), limits=shared)
    left = limiter.admitted
    assert limiter.halvings >= 1 and left < ceiling
    _, rows = run(
        isolated_workspace, requests_for(calm, 400, concurrency=ceiling), run_id="calm", limits=shared
    )
    assert all(r.error_type is None for r in rows)
    seen = sorted(calm.records(), key=lambda r: r["t"])
    assert max(r["in_flight"] for r in seen[:left]) <= left
    assert max(r["in_flight"] for r in seen) == ceiling and limiter.window == ceiling
