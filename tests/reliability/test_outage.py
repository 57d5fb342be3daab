"""A candidate provider that goes fully down for a while and comes back, met by the in-process
router under concurrent callers, against the real fake server (its own process, real HTTP).

Rollout path: every caller gets an answer, the circuit breaker bounds the requests that reach
the down candidate, no traffic row is lost, a probe closes the circuit after the recovery, and
the rollout's control step reverts on that traffic. Monitoring path: the same story through the
monitor's windows opens one error-rate incident and resolves it after the recovery.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from tests.support.routing import at_weight, specs
from workhorse.config import parse_plan
from workhorse.flows.rollout import control_step
from workhorse.router import Router
from workhorse.tasks.common.runner import RetryPolicy
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.monitor.window import monitor_window

UC = "ticket-routing"
CALLERS = 16
SERVER_LATENCY_S = 0.02
HEALTHY_S, OUTAGE_S, RECOVERY_S = 0.5, 3.0, 2.5
THRESHOLD, COOLDOWN_S = RetryPolicy.breaker_threshold, RetryPolicy.breaker_cooldown_s
WINDOW = timedelta(minutes=15)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


class Traffic:
    """Concurrent app callers through one router; every answer and every raised error is kept."""

    def __init__(self, router: Router):
        self.router, self.answers, self.failures = router, [], []
        self._sent = 0

    async def one(self) -> None:
        index, self._sent = self._sent, self._sent + 1
        try:  # a fresh key per call: about the router's share of calls lands on the candidate
            answer = await self.router.complete(
                [{"role": "user", "content": f"call {index}"}], key=f"user-{index}"
            )
            self.answers.append(answer)
        except Exception as error:  # counted, not raised: a caller without an answer is what we look for
            self.failures.append(f"{type(error).__name__}: {error}")

    async def for_seconds(self, seconds: float) -> None:
        await self.until(lambda: False, seconds)

    async def until(self, done, most_s: float = 30.0) -> None:
        """Every caller calls in a loop until ``done()`` or ``most_s`` seconds have passed."""
        deadline = time.monotonic() + most_s

        async def caller() -> None:
            while not done() and time.monotonic() < deadline:
                await self.one()

        await asyncio.gather(*(caller() for _ in range(CALLERS)))

    async def count(self, n: int) -> None:
        target = self._sent + n
        await self.until(lambda: self._sent >= target)


def routed(ws, fake_openai_server, percent: int) -> tuple[Router, object]:
    """A router at ``percent`` (0: shadow) between two fake servers, and the candidate's server.
    Weights are read once: the outage, not a rollout step, is what changes during a test."""
    inc_server = fake_openai_server(latency=SERVER_LATENCY_S)
    cand_server = fake_openai_server(latency=SERVER_LATENCY_S)
    at_weight(ws, percent)
    return Router(ws, UC, *specs(inc_server, cand_server), refresh_s=60), cand_server


def circuit_closed(router: Router) -> bool:
    return router.breakers["candidate"].failures < THRESHOLD


async def set_down(server, down: bool) -> float:
    await asyncio.to_thread(server.control, down=down)
    return time.time()


# --- rollout path -----------------------------------------------------------------------------


async def outage_under_load(router: Router, candidate_server) -> tuple[Traffic, float, float]:
    """Healthy, then the candidate down for OUTAGE_S, then back for RECOVERY_S; callers never stop."""
    traffic = Traffic(router)
    await traffic.count(4 * CALLERS)  # warm-up: the first calls pay LiteLLM's import, seconds on shared cores

    async def provider() -> tuple[float, float]:
        await asyncio.sleep(HEALTHY_S)
        down_at = await set_down(candidate_server, True)
        await asyncio.sleep(OUTAGE_S)
        up_at = await set_down(candidate_server, False)
        return down_at, up_at

    _, (down_at, up_at) = await asyncio.gather(
        traffic.for_seconds(HEALTHY_S + OUTAGE_S + RECOVERY_S), provider()
    )
    await router.aclose()
    return traffic, down_at, up_at


def test_a_down_candidate_is_not_hammered_and_the_rollout_reverts(isolated_workspace, fake_openai_server):
    ws = isolated_workspace
    router, cand_server = routed(ws, fake_openai_server, 25)

    traffic, down_at, up_at = asyncio.run(outage_under_load(router, cand_server))

    assert not traffic.failures, traffic.failures[:3]  # every caller got an answer...
    assert all(a.text and a.arm == "incumbent" for a in traffic.answers if a.fallback)  # ...the incumbent's
    rows = read_traffic(ws, UC).to_pylist()
    candidate_errors = assert_no_row_lost(rows, traffic.answers)
    reached = [r for r in cand_server.records() if r["outcome"] == "down"]
    kinds = Counter(r["error_type"] for r in candidate_errors)
    breaker = router.breakers["candidate"]
    # Without the breaker every call routed to the down candidate is one request to it. With it:
    # the calls in flight when it went down, the failures that open the circuit, one probe per cool-down.
    probes = math.ceil(OUTAGE_S / COOLDOWN_S) + 1
    assert len(reached) <= CALLERS + THRESHOLD + probes, (len(reached), kinds)
    # How many calls the open circuit spared depends on how fast the machine sends them; the
    # accounting does not: each request that reached the down server is one server_error row,
    # each refused call one circuit_open row, and nothing else failed.
    assert kinds["circuit_open"] > 0 and breaker.opened >= 1
    assert kinds["server_error"] == len(reached)
    assert kinds["circuit_open"] + kinds["server_error"] == len(candidate_errors)
    assert_candidate_serves_again(rows, router, up_at)
    verdict = control_step(UC, str(ws.root))
    assert_reverted_on_errors(verdict, rows)
    print(
        f"\noutage {up_at - down_at:.1f} s under {CALLERS} callers: {len(traffic.answers)} calls, "
        f"{len(candidate_errors)} routed to the down candidate ({dict(kinds)}), {len(reached)} requests "
        f"reached it (bound {CALLERS + THRESHOLD + probes}); circuit opened {breaker.opened}x; "
        f"{len(rows)} traffic rows; control step: {verdict['outcome']} -> {verdict['stage']}"
    )


def assert_no_row_lost(rows: list[dict], answers: list) -> list[dict]:
    """One answering row per call, one error row per fallback, linked; returns the candidate's errors."""
    answered = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert sorted(r["request_id"] for r in answered) == sorted(a.request_id for a in answers)
    assert {r["arm"] for r in errors} <= {"candidate"}
    fallbacks = [json.loads(r["metadata"]).get("fallback_from") for r in answered]
    assert sorted(f for f in fallbacks if f) == sorted(r["request_id"] for r in errors)
    assert len(rows) == len(answers) + sum(a.fallback for a in answers)
    return errors


def assert_candidate_serves_again(rows: list[dict], router: Router, up_at: float) -> None:
    """After the recovery the first request that went through (the probe) closed the circuit:
    from its answer on, every call routed to the candidate is answered by the candidate."""
    after = [r for r in rows if r["arm"] == "candidate" and r["ts"].timestamp() > up_at]
    probe = next(r for r in after if r["status"] == "ok")
    closed_at = probe["ts"].timestamp() + probe["latency_ms"] / 1000
    served = [r["status"] for r in after if r["ts"].timestamp() > closed_at]
    assert circuit_closed(router) and router.breakers["candidate"].probing is False
    assert len(served) >= 5 and set(served) == {"ok"}, Counter(served)


def assert_reverted_on_errors(verdict: dict, rows: list[dict]) -> None:
    """The guardrails count every candidate failure, refused calls included, and revert at once."""
    error_check = next(c for c in verdict["analysis"]["checks"] if c["name"] == "error_rate")
    candidate = [r for r in rows if r["arm"] == "candidate"]
    failed = sum(r["status"] == "error" for r in candidate)
    assert error_check["detail"].startswith(f"{failed}/{len(candidate)} vs 0/")
    assert (verdict["outcome"], error_check["status"], verdict["stage"]) == (
        "critical",
        "critical",
        "reverted",
    )
    assert verdict["weights"]["candidate"] == 0


async def shadow_outage(traffic: Traffic, candidate_server) -> tuple[float, float]:
    """Healthy shadow traffic (the warm-up), then the candidate down for a fixed number of calls."""
    await traffic.count(2 * CALLERS)
    down_at = await set_down(candidate_server, True)
    await traffic.count(10 * CALLERS)
    await traffic.router.aclose()  # in the same loop: shadow calls still in flight are awaited, not cancelled
    return down_at, time.time()


def test_in_shadow_an_open_circuit_skips_the_shadow_call_and_logs_it(isolated_workspace, fake_openai_server):
    ws = isolated_workspace
    router, cand_server = routed(ws, fake_openai_server, 0)
    traffic = Traffic(router)
    down_at, end_at = asyncio.run(shadow_outage(traffic, cand_server))

    assert not traffic.failures and {a.arm for a in traffic.answers} == {"incumbent"}
    shadow = [r for r in read_traffic(ws, UC).to_pylist() if r["arm"] == "shadow"]
    kinds = Counter(r["error_type"] for r in shadow)
    reached = sum(r["outcome"] == "down" for r in cand_server.records())
    assert len(shadow) == len(traffic.answers) and kinds["circuit_open"] > 0
    assert reached == kinds["server_error"]  # every request that reached it is logged, and only those
    # Shadow calls run detached from their caller: about two per caller can be in flight at once.
    bound = 2 * CALLERS + THRESHOLD + math.ceil((end_at - down_at) / COOLDOWN_S) + 1
    assert reached <= bound and reached * 3 < kinds["server_error"] + kinds["circuit_open"]
    print(
        f"\nshadow against a down candidate: {kinds['server_error'] + kinds['circuit_open']} shadow calls in "
        f"{end_at - down_at:.1f} s, {reached} reached it (bound {bound})"
    )


# --- monitoring path --------------------------------------------------------------------------

PER_PHASE = 240  # calls per phase: at 25 % about 60 reach the candidate, above the rules' minimum of 20
PLAN = {"incumbent": "openai/fake-incumbent", "use_cases": {UC: {"task_type": "generation"}}}


async def outage_in_phases(router: Router, candidate_server) -> tuple[Traffic, list[float]]:
    """Healthy, down, recovered; returns the two phase boundaries (epoch seconds). Each phase ends
    with no call in flight. The outage phase lasts until a probe has closed the circuit: until
    then the candidate's users still met the outage (as circuit_open)."""
    traffic = Traffic(router)
    await traffic.count(PER_PHASE)
    down_at = await set_down(candidate_server, True)
    await traffic.count(PER_PHASE)
    await set_down(candidate_server, False)
    await traffic.until(lambda: circuit_closed(router))
    closed_at = time.time()
    await traffic.count(PER_PHASE)
    await router.aclose()
    return traffic, [down_at, closed_at]


def into_windows(table: pa.Table, boundaries: list[float]) -> pa.Table:
    """The real outage lasts seconds, the monitor's windows 15 minutes: each phase's rows move
    whole into a window of their own, with their order and spacing inside the phase kept."""
    stamps = [t.timestamp() for t in table.column("ts").to_pylist()]
    starts = [min(stamps), *boundaries]
    moved = []
    for stamp in stamps:
        phase = sum(stamp >= b for b in boundaries)
        moved.append(T0 + phase * WINDOW + timedelta(seconds=1 + stamp - starts[phase]))
    column = pa.array(moved, table.schema.field("ts").type)
    return table.set_column(table.schema.get_field_index("ts"), "ts", column)


def test_the_monitor_opens_one_error_rate_incident_and_resolves_it(isolated_workspace, fake_openai_server):
    ws = isolated_workspace
    router, cand_server = routed(ws, fake_openai_server, 25)
    traffic, boundaries = asyncio.run(outage_in_phases(router, cand_server))
    assert not traffic.failures, traffic.failures[:3]

    table = into_windows(read_traffic(ws, UC), boundaries)
    plan = parse_plan(PLAN)
    windows = [monitor_window(ws, plan, table, now=T0 + (k + 1) * WINDOW) for k in range(3)]

    seen = sum(m["requests"] for w in windows for m in w.metrics if m["model"] != "*")
    assert seen == table.num_rows == len(traffic.answers) + sum(a.fallback for a in traffic.answers)
    changes = [
        (k, c["key"], c["change"])
        for k, w in enumerate(windows)
        for c in w.changes
        if c["rule"] == "error_rate" and c["change"]
    ]
    key = f"{UC}|openai/fake-candidate|error_rate"
    assert changes == [(1, key, "opened"), (2, key, "resolved")], changes
    healthy, outage, recovered = (_candidate(w) for w in windows)
    # The outage window ends with the probe that closed the circuit: its one answer is the only success.
    assert (healthy["errors"], outage["requests"] - outage["errors"], recovered["errors"]) == (0, 1, 0)
    assert [t["to_stage"] for t in windows[1].reverts] == [
        "reverted"
    ]  # the monitor reverts the rollout itself
    others = [(c["key"], c["change"]) for w in windows for c in w.changes if c["rule"] != "error_rate"]
    print(
        f"\nmonitor over an outage: {table.num_rows} rows in 3 windows, all seen; candidate errors "
        f"{[_rate(w) for w in windows]}; error-rate incident changes {changes}; other incidents {others}"
    )


def _candidate(window) -> dict:
    return next(m for m in window.metrics if m["model"] == "openai/fake-candidate")


def _rate(window) -> str:
    row = _candidate(window)
    return f"{row['errors']}/{row['requests']}"
