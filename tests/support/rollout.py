"""The rollout demo between two fake endpoints, with a policy sized for shared CI cores."""

from __future__ import annotations

from workhorse.flows.rollout import staged_rollout
from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.rollout.traffic_sim import run_rollout_demo

UC = "ticket-routing"
CANARY = "sk-canary-flow-91b2"
POLICY = {
    "steps": ["shadow", 5, 10, 25, 50, 100],
    "bake_time": 0,
    "min_requests": 12,
    # The fake endpoints share 2 CPU cores with the client: client-side latency of identical servers
    # differs by 100-200 ms under load, so the latency tolerances are sized to that noise.
    "guardrails": {
        "min_critical_requests": 8,
        "latency_critical_ratio": 2.5,
        "latency_p95_increase": 0.5,
        "latency_min_increase_ms": 250,
    },
}
REQUESTS = [[{"role": "user", "content": f"where is order {i}?"}] for i in range(50)]


def demo(ws, inc_server, cand_server, **options):
    """run_rollout_demo of UC with incumbent and candidate on the two servers (anything with a ``url``)."""
    prices = dict(input_cost_per_token=1e-7, output_cost_per_token=4e-7)
    incumbent = ModelSpec("openai/fake-incumbent", api_base=inc_server.url, api_key=CANARY, **prices)
    candidate = ModelSpec(
        "openai/fake-candidate", api_base=cand_server.url, api_key=CANARY, timeout_s=5, **prices
    )
    options.setdefault("control", control_loop_run)
    return run_rollout_demo(ws, UC, incumbent, candidate, REQUESTS, policy=POLICY, concurrency=8, **options)


def control_loop_run(use_case: str, workspace: str) -> dict:
    """One run of the rollout control loop (the staged_rollout flow)."""
    return staged_rollout(use_case, workspace=workspace)
