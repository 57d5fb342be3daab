"""Several app replicas on one state store: four processes route live calls and race the rollout
forward while one of them reverts it. Run on the SQLite file and on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workhorse.config import parse_plan, plan_workspace
from workhorse.errors import ConfigError
from workhorse.store import describe
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.rollout import state as routing
from workhorse.workspace import Workspace

UC = "ticket-routing"
STEPS = ["shadow", 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
REFRESH_S = 0.25
# A router stamps its weights when their read starts, so a revert is seen within REFRESH_S of its
# commit; the margin is the gap between reading the weights and stamping the call's row, and the
# hook's own delay after the commit (milliseconds; generous for a loaded 2-core machine).
READ_MARGIN_S = 0.1

REPLICA = """
import asyncio, json, os, sys, time
from types import SimpleNamespace
import workhorse
from workhorse.router import Router
from workhorse.tasks.rollout import state as routing
from workhorse.tasks.common.runner import ModelSpec
from workhorse.workspace import Workspace

ws, index, go = Workspace.resolve(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stop = go + ".stop"
incumbent = ModelSpec("openai/fake-incumbent", api_base=sys.argv[4], api_key="k")
candidate = ModelSpec("openai/fake-candidate", api_base=sys.argv[5], api_key="k")
UC, REVERT_AT_BATCH, LAST_BATCH = "ticket-routing", 25, 50

async def batch_of_calls(router, batch):
    await asyncio.gather(*(router.complete([{"role": "user", "content": f"q{index}.{batch}.{j}"}],
                                           key=f"p{index}-{batch}-{j}") for j in range(4)))

async def main():
    router = Router(ws, UC, incumbent, candidate, refresh_s=float(sys.argv[6]))
    await batch_of_calls(router, -1)  # LiteLLM's first call imports for seconds: not part of the race
    print("ready", flush=True)
    while not os.path.exists(go):
        await asyncio.sleep(0.005)
    calls, advanced, reverted_at, batch = 4, 0, None, 0
    # Replica 0 sets the pace (revert at its batch 25, stop after its batch 50); the others route
    # until it stops, however fast or slow each one is on a loaded machine.
    while not os.path.exists(stop):
        await batch_of_calls(router, batch)
        calls, batch = calls + 4, batch + 1
        if batch % 3 == 0:  # every replica also judges the step it sees and pushes it on: a real race
            seen = routing.current_state(ws, UC)
            advanced += routing.advance(ws, UC, SimpleNamespace(outcome="pass", version=seen.version,
                                                                reason=f"replica {index}")).changed
        if index == 0 and batch == REVERT_AT_BATCH:
            committed = []  # the hook runs right after the commit (before the Prefect event is sent)
            routing.revert(ws, UC, "guardrail breached", {}, notify=lambda payload: committed.append(time.time()))
            reverted_at = committed[0]
        if index == 0 and batch == LAST_BATCH:
            open(stop, "w").close()
    await router.aclose()
    print(json.dumps({"calls": calls, "advanced": advanced, "reverted_at": reverted_at}), flush=True)

asyncio.run(main())
"""  # noqa: E501


def run_replicas(ws: Workspace, incumbent_url: str, candidate_url: str, count: int = 4) -> list[dict]:
    go = ws.root / "go"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                REPLICA,
                str(ws.root),
                str(i),
                str(go),
                incumbent_url,
                candidate_url,
                str(REFRESH_S),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    for child in children:  # imports take seconds on 2 cores: start the race only when all are up
        assert child.stdout.readline().strip() == "ready"
    go.touch()
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.mark.usefixtures("state_backend")
def test_four_replicas_share_one_history_and_none_routes_by_stale_weights_after_the_revert(
    isolated_workspace, fake_openai_server
):
    ws = isolated_workspace
    incumbent, candidate = fake_openai_server(latency=0.005), fake_openai_server(latency=0.005)
    routing.start_rollout(ws, UC, "openai/fake-incumbent", "openai/fake-candidate", {"steps": STEPS})
    reports = run_replicas(ws, incumbent.url, candidate.url)

    steps = routing.history(ws, UC)
    assert [s["version"] for s in steps] == list(range(1, len(steps) + 1))  # one history, no gap, no double
    passes = [s for s in steps if s["action"] == "analysis:pass"]
    assert len(passes) == sum(r["advanced"] for r in reports)  # every applied advance is one row
    expected = ["shadow"] + [str(p) for p in STEPS[1:-1]] + ["promoted"]
    assert [s["to_stage"] for s in steps[:-1]] == expected[: len(steps) - 1]  # never skipped a step
    assert steps[-1]["to_stage"] == "reverted" and routing.current_weights(ws, UC)["incumbent"] == 100

    rows = read_traffic(ws, UC).to_pylist()
    answered = [r for r in rows if r["arm"] != "shadow"]
    assert len(answered) == sum(r["calls"] for r in reports)  # no call lost its row
    assert any(r["arm"] == "candidate" for r in rows)  # the candidate really had traffic to lose

    reverted_at = next(r["reverted_at"] for r in reports if r["reverted_at"])
    visible_by = reverted_at + REFRESH_S + READ_MARGIN_S
    after = [r for r in answered if r["ts"].timestamp() > visible_by]
    assert len({json.loads(r["metadata"])["key_hash"] for r in after}) > 20  # every replica kept routing
    stale = [
        (r["ts"].timestamp() - reverted_at, r["arm"], r["rollout_stage"])
        for r in after
        if r["arm"] != "incumbent" or r["rollout_stage"] != "reverted"
    ]
    assert stale == []


def test_a_plans_state_url_binds_the_workspace_for_every_process(tmp_path, postgres_url, monkeypatch):
    monkeypatch.delenv("WORKHORSE_STATE_URL", raising=False)
    plan = tmp_path / "workhorse.yaml"
    plan.write_text(f"state_url: {postgres_url}\n")
    ws, _ = plan_workspace(tmp_path / "ws", plan)
    assert Workspace.resolve(tmp_path / "ws").state_url == postgres_url  # a bare resolve finds the pin
    routing.start_rollout(ws, UC, "a", "b", {"steps": ["shadow", 100]})
    assert not (ws.root / "state.db").exists()  # the state went to PostgreSQL, not the file
    monkeypatch.setenv("WORKHORSE_STATE_URL", str(tmp_path / "other.db"))
    assert routing.current_state(ws, UC).stage == "idle"  # the environment overrides the pin


def test_a_password_in_the_plan_is_refused_and_never_shown(tmp_path):
    with pytest.raises(ConfigError) as refused:
        parse_plan({"state_url": "postgresql://app:hunter2-canary@db.internal/workhorse"})
    assert "hunter2-canary" not in str(refused.value)
    assert parse_plan({"state_url": "postgresql://app:${PGPASS}@db/workhorse"}).state_url.endswith(
        "@db/workhorse"
    )
    assert (
        describe("postgresql://app:hunter2-canary@db.internal:5432/workhorse?password=x")
        == "postgresql://app@db.internal:5432/workhorse"
    )


def test_an_unreachable_state_database_is_a_clear_error_without_the_password(monkeypatch, isolated_workspace):
    from tests.support.postgres import free_port

    monkeypatch.setenv("PGPASS_CANARY", "hunter2-canary")
    monkeypatch.setenv(
        "WORKHORSE_STATE_URL", f"postgresql://app:${{PGPASS_CANARY}}@127.0.0.1:{free_port()}/x"
    )
    with pytest.raises(ConnectionError) as failed:
        routing.current_state(isolated_workspace, UC)
    assert "cannot reach the state database postgresql://app@127.0.0.1" in str(failed.value)
    assert "hunter2-canary" not in str(failed.value)
