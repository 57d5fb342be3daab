"""Live traffic for the demo's rollout and monitoring steps, with the real embedded model.

The demo has no OpenAI key, so the incumbent arm replays gpt-4o-mini's logged answers (and its
logged median latency) from a local OpenAI-compatible server; the candidate arm is SmolLM2 on
vLLM behind a fault-injecting pass-through, so one rollout can watch its endpoint break.
"""

from __future__ import annotations

from dataclasses import dataclass

from workhorse.config import Plan
from workhorse.tasks.engines import EMBEDDED_MODEL
from workhorse.tasks.golden_item import GoldenItem
from workhorse.tasks.inference import ModelSpec
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig
from workhorse.workspace import Workspace

# The demo's rollout policy differs from Acme's plan only where a 2-core demo must: seconds of
# traffic instead of hours, and no shadow-agreement gate, which a 135M model cannot pass (its
# agreement with gpt-4o-mini is printed so nobody mistakes this for a verdict).
DEMO_POLICY_OVERRIDES = {"bake_time": 0, "min_requests": 12,
                         "guardrails": {"min_agreement": 0.0, "min_critical_requests": 8}}


@dataclass
class Scenario:
    use_case: str
    fault_at_stage: str | None  # None: the promote path


def replayed_answers(items: list[GoldenItem]) -> dict[str, str]:
    """The incumbent's logged answer to each logged request, keyed as the replay server looks it up."""
    return {item.input[-1]["content"]: item.metadata.get("incumbent_output", item.reference or "")
            for item in items if item.label_origin in ("incumbent", "human")}


def logged_median_latency_s(workspace: Workspace, use_case: str) -> float:
    import duckdb

    path = workspace.root / "usage" / "usage_log.parquet"
    if not path.exists():
        return 0.5
    value = duckdb.execute("SELECT median(latency_ms) FROM read_parquet($path) WHERE use_case = $uc AND status = 'ok'",
                           {"path": str(path), "uc": use_case}).fetchone()[0]
    return float(value or 500) / 1000


def demo_policy(plan: Plan) -> dict:
    policy = plan.rollout.model_dump() if hasattr(plan.rollout, "model_dump") else dict(plan.rollout)
    guardrails = {**policy.get("guardrails", {}), **DEMO_POLICY_OVERRIDES["guardrails"]}
    return {**policy, **DEMO_POLICY_OVERRIDES, "guardrails": guardrails}


def run_scenario(workspace: Workspace, plan: Plan, scenario: Scenario, items: list[GoldenItem],
                 engine_api_base: str) -> dict:
    """One rollout driven to its end by simulated traffic; returns what happened, step by step."""
    from workhorse.tasks.traffic_sim import run_rollout_demo

    labels = list(items[0].labels or [])
    replay = ServerConfig(latency_s=logged_median_latency_s(workspace, scenario.use_case),
                          answers=replayed_answers(items))
    with FakeServerProcess(replay) as incumbent_server, \
            FakeServerProcess(ServerConfig(upstream=engine_api_base)) as candidate_gate:
        incumbent = ModelSpec(model=f"openai/{plan.incumbent}", name=plan.incumbent, api_base=incumbent_server.url,
                              api_key="replay-no-key")
        candidate = ModelSpec(model=f"hosted_vllm/{EMBEDDED_MODEL}", name=EMBEDDED_MODEL,
                              api_base=candidate_gate.url, hosting="self_hosted", max_concurrency=4, timeout_s=60)
        result = run_rollout_demo(
            workspace, scenario.use_case, incumbent, candidate, [item.input for item in items],
            policy=demo_policy(plan), concurrency=4,
            params={"max_tokens": 16, "extra_body": {"structured_outputs": {"choice": labels}}} if labels else None,
            fault=(lambda: candidate_gate.control(down=True)) if scenario.fault_at_stage else None,
            fault_at_stage=scenario.fault_at_stage)
    return {"use_case": scenario.use_case, "final_stage": result.final_stage, "control_runs": result.control_runs,
            "runs_from_fault_to_revert": result.runs_from_fault_to_revert,
            "requests_per_step": result.requests_per_step, "steps": result.steps,
            "fault": f"candidate endpoint down from stage {scenario.fault_at_stage}" if scenario.fault_at_stage else None}


