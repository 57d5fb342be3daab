"""The rollout simulator's traffic: each step draws user keys until the smaller arm has enough,
so a healthy step never stalls on a short random split (checked against ``bucket`` directly)."""

from __future__ import annotations

import math

import pytest

from workhorse.config import RolloutPolicy
from workhorse.router import Router, bucket
from workhorse.tasks.inference import ModelSpec
from workhorse.tasks.traffic_sim import keys_for_step

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
