"""Live traffic for the demo's rollout and monitoring steps, with the real embedded model.

The demo has no OpenAI key, so the incumbent arm replays gpt-4o-mini's logged answers (and its
logged median latency) from a local OpenAI-compatible server; the candidate arm is SmolLM2 on
vLLM behind a fault-injecting pass-through, so one rollout can watch its endpoint break.

Before each rollout a short probe measures both arms (``traffic_sim.calibrate``): how the
engine's latency grows with load sets the pace of the simulated traffic, and the engine's
measured latency against the replayed one sets the latency guardrail. Both come from the machine
the demo runs on: a CPU engine without AVX-512 is several times slower than one with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from workhorse.config import Guardrails, Plan
from workhorse.tasks.common.engines import EMBEDDED_MODEL
from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.golden.item import GoldenItem
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig
from workhorse.workspace import Workspace

if TYPE_CHECKING:  # the simulator imports the router and LiteLLM: only where a rollout runs
    from workhorse.tasks.rollout.traffic_sim import Calibration

# The demo's rollout policy differs from Acme's plan only where a 2-core demo must: seconds of
# traffic instead of hours, and no shadow-agreement gate, which a 135M model cannot pass (its
# agreement with gpt-4o-mini is printed so nobody mistakes this for a verdict).
DEMO_POLICY_OVERRIDES = {
    "bake_time": 0,
    "min_requests": 12,
    "guardrails": {"min_agreement": 0.0, "min_critical_requests": 8},
}

# The demo compares a CPU engine with an API's logged latency, which the engine is slower than by
# design, so the latency tolerances come from the engine's measured latency: a step fails when the
# candidate's p95 passes this multiple of it. Headroom, because the probe is a handful of calls and
# during a step the engine shares the CPU with the client, the replay server and the control loop.
LATENCY_HEADROOM = 2.0


@dataclass
class Scenario:
    use_case: str
    fault_at_stage: str | None  # None: the promote path


def replayed_answers(items: list[GoldenItem]) -> dict[str, str]:
    """The incumbent's logged answer to each logged request, keyed as the replay server looks it up."""
    return {
        item.input[-1]["content"]: item.metadata.get("incumbent_output", item.reference or "")
        for item in items
        if item.label_origin in ("incumbent", "human")
    }


def logged_median_latency_s(workspace: Workspace, use_case: str) -> float:
    import duckdb

    path = workspace.root / "usage" / "usage_log.parquet"
    if not path.exists():
        return 0.5
    value = duckdb.execute(
        "SELECT median(latency_ms) FROM read_parquet($path) WHERE use_case = $uc AND status = 'ok'",
        {"path": str(path), "uc": use_case},
    ).fetchone()[0]
    return float(value or 500) / 1000


def demo_policy(plan: Plan, latency: dict | None = None) -> dict:
    """The plan's rollout policy with the demo's overrides (a plan that asks fewer requests per step
    keeps its number); ``latency`` (from ``latency_guardrails``) replaces the latency tolerances."""
    policy = plan.rollout.model_dump() if hasattr(plan.rollout, "model_dump") else dict(plan.rollout)
    guardrails = {**policy.get("guardrails", {}), **DEMO_POLICY_OVERRIDES["guardrails"], **(latency or {})}
    min_requests = min(
        policy.get("min_requests", DEMO_POLICY_OVERRIDES["min_requests"]),
        DEMO_POLICY_OVERRIDES["min_requests"],
    )
    return {**policy, **DEMO_POLICY_OVERRIDES, "min_requests": min_requests, "guardrails": guardrails}


def latency_guardrails(
    guardrails: dict, engine_s: float | None, incumbent_s: float | None
) -> tuple[dict, str]:
    """Latency tolerances from the measured latencies, and the sentence that says so.

    With r = engine_s / incumbent_s, a step fails when the candidate's p95 passes
    max(1 + the plan's increase, LATENCY_HEADROOM × r) × the incumbent's, and reverts at once past
    max(1, r) × the plan's critical ratio (the plan's ratio, applied to the engine's own latency);
    a p95 excess smaller than one engine answer is never a breach."""
    plan = Guardrails.model_validate(guardrails)
    if not engine_s or not incumbent_s:
        return {}, "latency guardrail: the plan's (the engine probe got no answer)"
    ratio = engine_s / incumbent_s
    fail = max(1 + plan.latency_p95_increase, LATENCY_HEADROOM * ratio)
    critical = plan.latency_critical_ratio * max(1.0, ratio)
    derived = {
        "latency_p95_increase": round(fail - 1, 3),
        "latency_critical_ratio": round(critical, 3),
        "latency_min_increase_ms": max(plan.latency_min_increase_ms, round(engine_s * 1000)),
    }
    text = (
        f"latency guardrail: candidate p95 may reach {fail * incumbent_s:.1f} s, {fail:.1f}× the replayed "
        f"incumbent's {incumbent_s:.2f} s ({LATENCY_HEADROOM:g}× the engine's measured {engine_s:.2f} s: CPU "
        f"engine vs logged API latency); {critical * incumbent_s:.1f} s ({critical:.1f}×) reverts at once"
    )
    return derived, text


async def probe_arms(
    candidate: ModelSpec, incumbent: ModelSpec, requests: list[list[dict]], params: dict | None
) -> tuple[Calibration, Calibration]:
    """The engine's latency as its load grows, then the replayed incumbent's (one call at a time)."""
    from workhorse.tasks.rollout.traffic_sim import calibrate

    return await calibrate(candidate, requests, params), await calibrate(incumbent, requests, params, most=1)


def run_scenario(
    workspace: Workspace,
    plan: Plan,
    scenario: Scenario,
    items: list[GoldenItem],
    engine_api_base: str,
    control,
) -> dict:
    """One rollout driven to its end by simulated traffic, paced and guarded by a probe of the
    engine, ``control(use_case, workspace)`` running the control loop once; returns what happened,
    step by step, and the guardrail it was held to."""
    from workhorse.tasks.rollout.traffic_sim import run_rollout_demo

    labels = list(items[0].labels or [])
    params = {"max_tokens": 16, "extra_body": {"structured_outputs": {"choice": labels}}} if labels else None
    requests = [item.input for item in items]
    replay = ServerConfig(
        latency_s=logged_median_latency_s(workspace, scenario.use_case), answers=replayed_answers(items)
    )
    with (
        FakeServerProcess(replay) as incumbent_server,
        FakeServerProcess(ServerConfig(upstream=engine_api_base)) as candidate_gate,
    ):
        incumbent = ModelSpec(
            model=f"openai/{plan.incumbent}",
            name=plan.incumbent,
            api_base=incumbent_server.url,
            api_key="replay-no-key",
        )
        candidate = ModelSpec(
            model=f"hosted_vllm/{EMBEDDED_MODEL}",
            name=EMBEDDED_MODEL,
            api_base=candidate_gate.url,
            hosting="self_hosted",
            timeout_s=60,
        )
        engine, replayed = asyncio.run(probe_arms(candidate, incumbent, requests, params))
        latency, guardrail = latency_guardrails(
            demo_policy(plan)["guardrails"], engine.paced_latency_s, replayed.paced_latency_s
        )
        result = run_rollout_demo(
            workspace,
            scenario.use_case,
            incumbent,
            replace(candidate, max_concurrency=engine.pace),
            requests,
            policy=demo_policy(plan, latency),
            concurrency=4,
            candidate_concurrency=engine.pace,
            params=params,
            fault=(lambda: candidate_gate.control(down=True)) if scenario.fault_at_stage else None,
            fault_at_stage=scenario.fault_at_stage,
            control=control,
        )
    fault = None
    if scenario.fault_at_stage:
        fault = f"candidate endpoint down from stage {scenario.fault_at_stage}" + (
            "" if result.fault_stage else " (never reached)"
        )
    return {
        "use_case": scenario.use_case,
        "final_stage": result.final_stage,
        "control_runs": result.control_runs,
        "runs_from_fault_to_revert": result.runs_from_fault_to_revert,
        "requests_per_step": result.requests_per_step,
        "steps": result.steps,
        "fault": fault,
        "latency_guardrail": guardrail,
        "pace": engine.pace,
        "probe": {"engine": engine.describe(), "incumbent": replayed.describe()},
    }
