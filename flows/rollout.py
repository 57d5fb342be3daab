"""Step 4 — staged rollout: the control loop. Each run judges the current step and moves at most one.

Wiring only: analyse the step over the traffic log (guardrails), apply the verdict to the state
machine (advance, count, pause or revert), publish the state and the evidence as a markdown
artifact. Run it on a schedule (every few minutes); a paused, promoted or reverted rollout is
left alone.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from workhorse.config import plan_workspace
from workhorse.tasks.rollout.guardrails import Analysis, analyze_rollout, validator_for
from workhorse.tasks.rollout.report import rollout_markdown
from workhorse.tasks.rollout.state import Transition, advance, current_state
from workhorse.workspace import Workspace


@task(cache_policy=NO_CACHE)
def analyze_step(workspace: str, use_case: str, plan: str | dict | None) -> Analysis | None:
    """The guardrails' verdict on the current step (None when nothing is rolling out)."""
    _, plan = plan_workspace(workspace, plan)
    return analyze_rollout(workspace, use_case, validator=validator_for(plan.use_cases.get(use_case)))


@task(cache_policy=NO_CACHE)
def apply_analysis(workspace: str, use_case: str, analysis: Analysis) -> Transition:
    """Advance, count, pause or revert; stale if the state moved since the analysis."""
    return advance(workspace, use_case, analysis)


def control_step(use_case: str, workspace: str | None = None, plan: str | dict | None = None) -> dict:
    """One run of the loop as plain functions (what the flow wires; also usable without Prefect)."""
    ws = str(Workspace.resolve(workspace).root)
    analysis = analyze_step.fn(ws, use_case, plan)
    transition = apply_analysis.fn(ws, use_case, analysis) if analysis else None
    return summary(ws, use_case, analysis, transition)


def summary(workspace: str, use_case: str, analysis: Analysis | None, transition: Transition | None) -> dict:
    state = current_state(workspace, use_case)
    return {
        "use_case": use_case,
        "stage": state.stage,
        "weights": state.weights,
        "reason": state.reason,
        "outcome": analysis.outcome if analysis else "idle",
        "analysis": analysis.evidence() if analysis else None,
        "transition": transition.as_dict() if transition else None,
    }


@flow(name="staged-rollout", log_prints=True)
def staged_rollout(use_case: str, workspace: str | None = None, plan: str | dict | None = None) -> dict:
    """Evaluate the current step of a use case's rollout and advance at most one step (or revert/pause)."""
    from prefect.artifacts import create_markdown_artifact

    ws = str(Workspace.resolve(workspace).root)
    analysis = analyze_step(ws, use_case, plan)
    transition = apply_analysis(ws, use_case, analysis) if analysis else None
    result = summary(ws, use_case, analysis, transition)
    create_markdown_artifact(
        key=artifact_key(use_case),
        markdown=rollout_markdown(result),
        description=f"Rollout of {use_case}: state and evidence",
    )
    print(f"{use_case}: {result['outcome']} -> {result['stage']} ({result['reason']})")
    return result


def artifact_key(use_case: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "rollout-" + "".join(c if c.isalnum() else "-" for c in use_case.lower())
