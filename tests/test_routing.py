"""The rollout state machine: every transition, idempotence, a SIGKILL in the middle of a
transition, and concurrent advances (threads and processes) with a known arm at every point."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from types import SimpleNamespace

import psycopg
import pytest

from workhorse import store
from workhorse.errors import RolloutError
from workhorse.tasks.rollout import state as routing
from workhorse.tasks.rollout.state import (
    abort,
    advance,
    current_state,
    current_weights,
    history,
    pause,
    promote,
    resume,
    revert,
    start_rollout,
)

POLICY = {
    "steps": ["shadow", 5, 10, 25, 50, 100],
    "bake_time": 0,
    "min_requests": 1,
    "failure_limit": 1,
    "consecutive_error_limit": 1,
    "inconclusive_limit": 1,
}
pytestmark = pytest.mark.usefixtures("state_backend")

UC = "ticket-routing"


def started(ws, policy=POLICY):
    start_rollout(ws, UC, "gpt-4o-mini", "hosted_vllm/smollm2-135m-instruct", policy)
    return current_state(ws, UC)


def verdict(ws, outcome: str, reason: str = "test"):
    """An analysis as the guardrails would hand it over, on the current version."""
    return SimpleNamespace(
        outcome=outcome,
        version=current_state(ws, UC).version,
        reason=reason,
        evidence=lambda: {"outcome": outcome},
    )


def assert_consistent(ws):
    """The state row is the last history entry, and the weights are a single known split."""
    state, steps = current_state(ws, UC), history(ws, UC)
    assert [h["version"] for h in steps] == list(range(1, state.version + 1))
    if steps:
        last = steps[-1]
        assert (last["to_stage"], last["candidate_weight"], bool(last["shadow"])) == (
            state.stage,
            state.candidate_weight,
            state.shadow,
        )
    weights = current_weights(ws, UC)
    assert weights["incumbent"] + weights["candidate"] == 100
    assert 0 <= weights["candidate"] <= 100


def test_passing_analyses_walk_every_step_to_promoted(isolated_workspace):
    ws = isolated_workspace
    assert current_weights(ws, UC)["incumbent"] == 100  # before anything: the incumbent
    started(ws)
    seen = [
        (current_state(ws, UC).stage, current_weights(ws, UC)["candidate"], current_weights(ws, UC)["shadow"])
    ]
    while current_state(ws, UC).stage != "promoted":
        advance(ws, UC, verdict(ws, "pass"))
        weights = current_weights(ws, UC)
        seen.append((weights["stage"], weights["candidate"], weights["shadow"]))
        assert_consistent(ws)
    assert seen == [
        ("shadow", 0, True),
        ("5", 5, False),
        ("10", 10, False),
        ("25", 25, False),
        ("50", 50, False),
        ("promoted", 100, False),
    ]
    assert advance(ws, UC, verdict(ws, "pass")).changed is False  # promoted stays promoted


@pytest.mark.parametrize(
    "outcomes, final_stage, failures",
    [
        (["fail"], "25", 1),  # one failure is within failure_limit=1
        (["fail", "fail"], "reverted", 2),  # two in a row exceed consecutive_error_limit=1
        (["fail", "pass", "fail"], "reverted", 2),  # not consecutive, but failures total > failure_limit
        (["critical"], "reverted", 0),  # a critical breach reverts at once
        (["inconclusive"], "25", 0),  # within inconclusive_limit=1
        (["inconclusive", "inconclusive"], "paused", 0),
        (["wait", "wait", "wait"], "25", 0),  # bake time not over: nothing happens
    ],
)
def test_counters_decide_between_staying_pausing_and_reverting(
    isolated_workspace, outcomes, final_stage, failures
):
    ws = isolated_workspace
    started(ws)
    for _ in range(3):
        advance(ws, UC, manual=True)  # shadow -> 5 -> 10 -> 25 by hand
    for outcome in outcomes:
        before = current_state(ws, UC).stage
        advance(ws, UC, verdict(ws, outcome))
        if outcome == "pass" and before == "25":
            # a pass moves on; bring it back to the step under test to keep counting there
            assert current_state(ws, UC).stage == "50"
    state = current_state(ws, UC)
    assert state.stage == (
        final_stage if "pass" not in outcomes else {"25": "50"}.get(final_stage, final_stage)
    )
    assert state.failures == failures
    assert_consistent(ws)
    if final_stage == "reverted":
        assert current_weights(ws, UC) | {"version": 0} == {
            "incumbent": 100,
            "candidate": 0,
            "shadow": False,
            "stage": "reverted",
            "version": 0,
        }


def test_pause_resume_promote_abort_and_restart(isolated_workspace):
    ws = isolated_workspace
    started(ws)
    advance(ws, UC, manual=True)
    assert pause(ws, UC, "holiday freeze").to_stage == "paused"
    assert current_weights(ws, UC)["candidate"] == 5  # paused keeps the weights
    assert advance(ws, UC, verdict(ws, "pass")).changed is False  # the loop leaves a paused rollout alone
    assert pause(ws, UC).changed is False
    assert resume(ws, UC).to_stage == "5"
    assert promote(ws, UC).to_stage == "promoted"
    assert current_weights(ws, UC)["candidate"] == 100
    sent = []
    assert abort(ws, UC, "rollback after promotion", notify=sent.append).to_stage == "reverted"
    assert len(sent) == 1 and sent[0]["reason"] == "rollback after promotion"
    with pytest.raises(RolloutError):
        start_rollout(ws, "other", "a", "b", POLICY) and start_rollout(ws, "other", "a", "c", POLICY)
    assert started(ws).stage == "shadow"  # a reverted use case can start again
    assert [h["action"] for h in history(ws, UC)] == [
        "start",
        "advance",
        "pause",
        "resume",
        "promote",
        "abort",
        "start",
    ]
    assert_consistent(ws)


def test_revert_is_idempotent_and_alerts_once(isolated_workspace):
    ws = isolated_workspace
    started(ws)
    advance(ws, UC, manual=True)
    sent = []
    first = revert(ws, UC, "error rate 40 % vs 1 %", {"p_value": 1e-9}, notify=sent.append)
    again = revert(ws, UC, "error rate 40 % vs 1 %", {"p_value": 1e-9}, notify=sent.append)
    assert (first.changed, again.changed) == (True, False)
    assert first.from_stage == "5" and current_state(ws, UC).evidence == {"p_value": 1e-9}
    assert len(sent) == 1 and sent[0]["evidence"] == {"p_value": 1e-9}
    assert current_state(ws, UC).alert_pending is False
    assert revert(ws, "never-started", "x", {}, notify=sent.append).changed is False
    assert len(sent) == 1


# The child kills itself where a power cut would hurt most, by wrapping the function that runs
# next: between the weight's write and its history row (same transaction), or after the revert's
# commit, before its alert goes out.
CHILD = """
import os, signal, sys
from workhorse.workspace import Workspace
from workhorse.tasks.rollout import state as routing

def killed_before(name):
    def kill(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(routing, name, kill)

ws, action, crash_at = Workspace.resolve(sys.argv[1]), sys.argv[2], sys.argv[3]
killed_before({"after_state_write": "_append_history", "after_revert_commit": "_announce_if_reverted"}[crash_at])
if action == "advance":
    routing.advance(ws, "ticket-routing", manual=True)
else:
    routing.revert(ws, "ticket-routing", "injected", {"k": 1}, notify=lambda p: print("ALERTED"))
"""  # noqa: E501


def run_child(ws, action: str, crash_at: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(ws.root), action, crash_at],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("action", ["advance", "revert"])
def test_sigkill_between_writing_the_weight_and_recording_it_keeps_the_old_state(isolated_workspace, action):
    ws = isolated_workspace
    started(ws)
    advance(ws, UC, manual=True)  # at 5 %
    before = current_state(ws, UC)
    child = run_child(ws, action, "after_state_write")
    assert child.returncode == -9  # really killed, mid-transaction
    after = current_state(ws, UC)
    assert (after.stage, after.version, after.candidate_weight) == (before.stage, before.version, 5)
    assert_consistent(ws)
    # The interrupted transition can simply be run again.
    (
        advance(ws, UC, manual=True)
        if action == "advance"
        else revert(ws, UC, "again", {}, notify=lambda p: None)
    )
    assert current_state(ws, UC).stage == ("10" if action == "advance" else "reverted")
    assert_consistent(ws)


def test_sigkill_after_the_revert_commit_leaves_the_alert_pending_and_the_next_revert_sends_it(
    isolated_workspace, monkeypatch
):
    ws = isolated_workspace
    started(ws)
    child = run_child(ws, "revert", "after_revert_commit")
    assert child.returncode == -9 and "ALERTED" not in child.stdout
    state = current_state(ws, UC)
    assert state.stage == "reverted" and state.alert_pending and current_weights(ws, UC)["incumbent"] == 100
    sent = []
    revert(ws, UC, "again", {}, notify=sent.append)
    assert sent == []  # within the lease, another process may still be sending it
    monkeypatch.setattr(routing, "ALERT_LEASE_S", 0.0)
    revert(ws, UC, "again", {}, notify=sent.append)
    revert(ws, UC, "again", {}, notify=sent.append)
    assert len(sent) == 1 and sent[0]["reason"] == "injected"  # the original reason, sent once
    assert current_state(ws, UC).alert_pending is False


def test_concurrent_advances_from_threads_have_one_winner(isolated_workspace):
    ws = isolated_workspace
    started(ws)
    analysis = verdict(ws, "pass")  # all threads judged the same version
    barrier, results = threading.Barrier(12), []

    def worker():
        barrier.wait()
        results.append(advance(ws, UC, analysis))

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(t.changed for t in results) == 1
    assert current_state(ws, UC).stage == "5"
    assert_consistent(ws)


PROCESS_CHILD = """
import sys, time, workhorse
from types import SimpleNamespace
from workhorse.workspace import Workspace
from workhorse.tasks.rollout import state as routing
ws = Workspace.resolve(sys.argv[1])
version, start_at = int(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0, start_at - time.time()))
changed = 0
for _ in range(5):  # each process keeps advancing from what it last saw: a real race
    state = routing.current_state(ws, "ticket-routing")
    t = routing.advance(ws, "ticket-routing", SimpleNamespace(outcome="pass", version=state.version, reason=sys.argv[4]))
    changed += t.changed
print(changed)
"""  # noqa: E501


def test_concurrent_advances_from_processes_never_skip_or_double_a_step(isolated_workspace):
    import time

    ws = isolated_workspace
    state = started(ws)
    start_at = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_CHILD, str(ws.root), str(state.version), str(start_at), f"p{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    changed = sum(int(child.communicate(timeout=60)[0]) for child in children)
    steps = history(ws, UC)
    assert changed == len(steps) - 1  # every applied advance is one history row (beyond the start)
    assert [h["to_stage"] for h in steps] == ["shadow", "5", "10", "25", "50", "promoted"][: len(steps)]
    assert current_state(ws, UC).stage == "promoted"  # 20 attempts, exactly 5 steps applied
    assert_consistent(ws)


def test_the_database_refuses_weights_that_are_not_one_known_split(isolated_workspace):
    ws = isolated_workspace
    started(ws)
    with store.connect(ws) as connection:
        for update in (
            "UPDATE rollout_state SET candidate_weight = 150",
            "UPDATE rollout_state SET stage = 'reverted', candidate_weight = 30",
            "UPDATE rollout_state SET stage = 'promoted', candidate_weight = 50",
        ):
            with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
                connection.execute(update)
    assert current_state(ws, UC).stage == "shadow"


def test_a_policy_stored_by_an_older_version_with_keys_since_refused_still_loads(isolated_workspace, caplog):
    ws = isolated_workspace
    started(ws)
    stored = POLICY | {"canary_note": "x", "guardrails": {"alpha": 0.05, "max_p99": 3}}
    with routing._connect(ws) as connection, connection.transaction():
        connection.execute("UPDATE rollout_state SET policy = ? WHERE use_case = ?", (json.dumps(stored), UC))
    policy = current_state(ws, UC).rollout_policy
    assert policy.guardrails.alpha == 0.05 and policy.min_requests == POLICY["min_requests"]
    assert "'canary_note'" in caplog.text and "'max_p99'" in caplog.text
    assert advance(ws, UC, manual=True).to_stage == "5"  # the rollout goes on
