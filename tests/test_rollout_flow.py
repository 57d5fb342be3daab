"""The staged_rollout control loop on a real Prefect server with two fake endpoints: a healthy
candidate is promoted step by step; a candidate that breaks mid-rollout is reverted in the first
loop run after the fault, with one alert, one event and the evidence in the artifact."""

from __future__ import annotations

import pytest

from tests.support.rollout import CANARY, POLICY, UC, demo
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.rollout import state as routing


@pytest.fixture
def alerts():
    sent = []
    routing.add_revert_notifier(sent.append)
    yield sent
    routing.remove_revert_notifier(sent.append)


def test_a_healthy_candidate_is_promoted_one_step_per_loop_run(
    isolated_workspace, prefect_server, fake_openai_server, alerts
):
    ws = isolated_workspace
    result = demo(ws, fake_openai_server(), fake_openai_server())
    print("promote path, requests per step:", result.requests_per_step, "runs:", result.control_runs)
    assert result.final_stage == "promoted" and not alerts
    assert [s["stage"] for s in result.steps] == ["shadow", "5", "10", "25", "50"]
    assert [s["to_stage"] for s in result.steps] == ["5", "10", "25", "50", "promoted"]
    assert [h["to_stage"] for h in routing.history(ws, UC)] == ["shadow", "5", "10", "25", "50", "promoted"]
    for step in routing.history(ws, UC)[1:]:
        assert step["evidence"]["outcome"] == "pass"
        assert min(step["evidence"]["counts"].values()) >= POLICY["min_requests"]


@pytest.mark.parametrize(
    "fault, at_stage",
    [
        (lambda server: server.control(down=True), "25"),  # the candidate's endpoint starts failing
        # The candidate slows down by 3 s. Critical means p95 above 2.5x the incumbent's, and a stall of the
        # shared CI cores once raised the incumbent's p95 of a step to ~0.7 s: a 1 s fault then merely passed.
        (lambda server: server.control(latency_s=3.0), "10"),
    ],
)
def test_a_candidate_that_breaks_is_reverted_in_the_first_loop_run(
    isolated_workspace, prefect_server, fake_openai_server, alerts, fault, at_stage
):
    from prefect.client.orchestration import get_client

    ws = isolated_workspace
    cand_server = fake_openai_server()
    result = demo(
        ws, fake_openai_server(), cand_server, fault=lambda: fault(cand_server), fault_at_stage=at_stage
    )
    print(
        f"revert path (fault at {at_stage}): runs from fault to revert {result.runs_from_fault_to_revert}, "
        f"requests per step {result.requests_per_step}"
    )
    assert result.final_stage == "reverted" and result.runs_from_fault_to_revert == 1
    assert result.steps[-1]["outcome"] == "critical"
    assert routing.current_weights(ws, UC) | {"version": 0} == {
        "incumbent": 100,
        "candidate": 0,
        "shadow": False,
        "stage": "reverted",
        "version": 0,
    }
    assert len(alerts) == 1 and alerts[0]["evidence"]["outcome"] == "critical"
    assert [s["failed"] for s in result.steps] == [0] * len(
        result.steps
    )  # fallback: users never saw the fault
    markdown = _artifact(get_client, UC)
    assert "reverted" in markdown and "critical" in markdown and CANARY not in markdown
    assert all(CANARY not in str(v) for row in read_traffic(ws, UC).to_pylist() for v in row.values())


def _artifact(get_client, use_case: str) -> str:
    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def latest():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"rollout-{use_case}"])),
                limit=1,
                sort="CREATED_DESC",
            )
            return found[0].data

    return asyncio.run(latest())
