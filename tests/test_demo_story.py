"""The rollout and monitoring part of `make demo`, against a slow, load-bound fake engine.

The demo's engine is SmolLM2 on a CPU, seconds per answer and slower the more requests it holds;
its incumbent replays logged API latencies of a fraction of a second. The story must still be the
intended one: review-sentiment promoted one step per control-loop run, ticket-routing reverted in
the loop run after its endpoint breaks at 25 %, monitoring opens the error-rate incident and posts
it to the local Slack receiver, and the summary says so without a ``None``. Unpaced shadow calls
queue inside such an engine and revert the rollout at shadow on latency, which is what this test
exists to catch. The latency guardrail's derivation is checked on its own, as a table.
"""

from __future__ import annotations

import io
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from examples.acme.demo import print_monitoring, print_rollouts
from examples.acme.demo_traffic import demo_policy, latency_guardrails
from examples.acme.playbook import ROLLOUT_SCENARIOS, rollout_with_live_traffic, watch_demo_traffic
from workhorse.config import RolloutPolicy, load_plan
from workhorse.tasks.golden.sources import GoldenSpec
from workhorse.tasks.golden.versions import write_version
from workhorse.tasks.rollout.guardrails import error_rate_check, latency_check
from workhorse.testing import traffic as T

ACME = Path(__file__).resolve().parents[1] / "examples" / "acme" / "workhorse.yaml"
USE_CASES = ("review-sentiment", "ticket-routing")
REPLAYED_MS = 200.0  # the incumbent's logged latency, which the replay server answers with
ENGINE = {"latency": 2.0, "slots": 2, "latency_spread": 0.25}  # seconds per answer, like a slow CPU engine


def story_plan(workspace) -> Path:
    """Acme's plan with the two classification use cases the demo rolls out, and fewer requests
    per step (6, so 9 per arm with the simulator's margin) to keep the test short."""
    raw = yaml.safe_load(ACME.read_text())
    raw["use_cases"] = {name: raw["use_cases"][name] for name in USE_CASES}
    raw["rollout"]["min_requests"] = 6
    path = workspace.root / "workhorse.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def write_logged_use_cases(workspace, plan) -> None:
    """Golden sets whose references are the incumbent's logged answers, and a usage log that
    gives the replay its median latency."""
    usage = []
    for name in USE_CASES:
        labels = list(plan.use_cases[name].labels)
        spec = GoldenSpec(name, "classification", labels=labels)
        items = [
            spec.item(
                [{"role": "user", "content": f"{name} message {i}: {' '.join(T.WORDS[i % 7 : i % 7 + 12])}"}],
                labels[i % len(labels)],
                source="log",
                label_origin="incumbent",
            )
            for i in range(40)
        ]
        write_version(workspace, name, items, [{"kind": "test"}])
        usage += T.stream(
            name,
            "gpt-4o-mini",
            datetime(2026, 11, 2, tzinfo=timezone.utc),
            60,
            40,
            latency_ms=REPLAYED_MS,
            jitter=0.0,
        )
    import pyarrow.parquet as pq

    workspace.subdir("usage")
    pq.write_table(T.table(usage), workspace.root / "usage" / "usage_log.parquet")


def test_a_slow_engine_tells_the_intended_story(isolated_workspace, prefect_server, fake_openai_server):
    ws = isolated_workspace
    plan_file = story_plan(ws)
    plan = load_plan(plan_file)
    write_logged_use_cases(ws, plan)
    engine = fake_openai_server(**ENGINE)  # answers one of the offered labels, like constrained decoding
    started = time.monotonic()
    rollouts = [
        rollout_with_live_traffic.fn(ws, plan, scenario, engine.url) for scenario in ROLLOUT_SCENARIOS
    ]
    monitoring = watch_demo_traffic.fn(ws, str(plan_file))
    console = Console(record=True, width=400, file=io.StringIO())
    print_rollouts(console, rollouts)
    print_monitoring(console, monitoring)
    summary = console.export_text()
    print(summary, f"\nrollouts and monitoring took {time.monotonic() - started:.0f} s")

    promoted, reverted = (next(r for r in rollouts if r["use_case"] == name) for name in USE_CASES)
    assert promoted["final_stage"] == "promoted", promoted["steps"][-1]["reason"]
    assert [s["stage"] for s in promoted["steps"]] == ["shadow", "5", "10", "25", "50"]
    assert reverted["final_stage"] == "reverted" and reverted["runs_from_fault_to_revert"] == 1
    assert [s["stage"] for s in reverted["steps"]] == ["shadow", "5", "10", "25"]
    assert reverted["steps"][-1]["outcome"] == "critical" and "error_rate" in reverted["steps"][-1]["reason"]
    assert all(r["pace"] < 8 and "latency guardrail" in r["latency_guardrail"] for r in rollouts)

    opened = [c["key"] for c in monitoring["incidents"] if c["change"] == "opened"]
    assert any(key.startswith("ticket-routing|") and key.endswith("|error_rate") for key in opened), opened
    assert monitoring["messages"] and any("error_rate" in str(m) for m in monitoring["messages"])
    assert (
        "None" not in summary
        and "not the intended story" not in summary
        and "no incident opened" not in summary
    )
    assert "reverted 1 control-loop run(s) after it" in summary


# --- the latency guardrail, derived from measured latencies -------------------------------------


def guardrails_for(engine_s: float | None, incumbent_s: float | None):
    plan = load_plan(ACME)
    latency, text = latency_guardrails(demo_policy(plan)["guardrails"], engine_s, incumbent_s)
    return RolloutPolicy.model_validate(demo_policy(plan, latency)).guardrails, text


@pytest.mark.parametrize(
    "engine_s, candidate_p95_s, status",
    [
        (1.8, 1.8, "pass"),  # a CPU engine answering at its measured speed
        (1.8, 3.2, "pass"),  # noise within the headroom
        (1.8, 5.0, "fail"),  # beyond 2x what the engine measured
        (1.8, 8.0, "critical"),  # beyond the plan's 4x, of the engine's own latency
        (0.2, 0.2, "pass"),  # a GPU engine faster than the API: the plan's own tolerances...
        (0.2, 1.0, "fail"),  # ... so 1.4x the incumbent fails
        (0.2, 3.5, "critical"),  # ... and 5x reverts at once
    ],
)
def test_the_latency_guardrail_scales_with_the_measured_engine(engine_s, candidate_p95_s, status):
    guardrails, text = guardrails_for(engine_s, 0.7)
    rng = np.random.default_rng(0)
    incumbent = list(700 * (1 + rng.uniform(-0.05, 0.05, 40)))
    candidate = list(candidate_p95_s * 1000 * (1 + rng.uniform(-0.1, 0.0, 40)))
    assert latency_check(candidate, incumbent, guardrails).status == status
    assert f"measured {engine_s:.2f} s" in text and "replayed incumbent's 0.70 s" in text


def test_an_endpoint_that_fails_still_reverts_at_once_and_an_unmeasured_engine_keeps_the_plan():
    guardrails, _ = guardrails_for(30.0, 0.7)  # however lenient on latency
    assert error_rate_check(["error"] * 9, ["ok"] * 30, guardrails).status == "critical"
    kept, text = guardrails_for(None, 0.7)
    assert (kept.latency_p95_increase, kept.latency_critical_ratio) == (0.25, 4.0) and "plan's" in text
