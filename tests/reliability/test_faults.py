"""Provider faults at scale: the fault matrix through the eval flow, a provider outage met by
the circuit breaker, and the breaker's state machine on a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from tests.support.eval_kit import evaluate, make_items, plan_file
from tests.support.inference import requests_for
from workhorse.tasks.common.runner import ERROR_TYPES, CallFailed, CircuitBreaker, RetryPolicy, Runner
from workhorse.tasks.golden.versions import write_version
from workhorse.testing.fake_openai import FAULT_KINDS, Faults

MATRIX = Faults(
    server_error=0.08, rate_limit=0.05, hang=0.01, malformed=0.01, reset=0.02, retry_after_s=0.05, hang_s=0.3
)
VARIANTS = ["zero-shot", "few-shot"]
OUTAGE_S = 2.0


def test_fault_matrix_through_the_eval_flow_accounts_for_every_item(
    prefect_server, isolated_workspace, fake_openai_server, tmp_path, monkeypatch
):
    items = make_items(600)
    write_version(isolated_workspace, "routing", items, [{"kind": "test"}])
    server = fake_openai_server(faults=MATRIX, seed=21)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_BASE", server.url)
    plan = plan_file(tmp_path, [{"model": "openai/cand", "api_base": server.url}])

    summary = evaluate(isolated_workspace, plan, variants=VARIANTS)

    rows = pq.read_table(summary["responses"]).to_pylist()
    expected = expected_identities(items, summary["chosen_variants"]["openai/cand"]["variant"])
    got = Counter((r["model"], r["prompt_variant"], r["item_id"]) for r in rows)
    assert set(got) == expected and max(got.values()) == 1  # none lost, none twice
    assert len(rows) >= 1000
    assert {r["error_type"] for r in rows} - {None} <= set(ERROR_TYPES)
    assert sum(r["error_type"] is None for r in rows) >= 0.99 * len(rows)
    injected = Counter(r["outcome"] for r in server.records())
    assert set(FAULT_KINDS) <= set(injected), injected  # every kind really happened
    print(
        f"\nfault matrix via eval: {len(rows)} items, "
        f"faults injected {sum(injected.values()) - injected['ok']} "
        f"({dict(injected)})"
    )


def expected_identities(items, chosen_variant: str) -> set[tuple]:
    """Candidate: every variant on dev, the chosen one on test; incumbent: test, as logged."""
    dev = [i.item_id for i in items if i.split == "dev"]
    test = [i.item_id for i in items if i.split == "test"]
    wanted = {("openai/cand", v, i) for v in VARIANTS for i in dev}
    wanted |= {("openai/cand", chosen_variant, i) for i in test}
    return wanted | {("openai/incumbent-model", "as-logged", i) for i in test}


async def _outage(server, after_successes: int) -> tuple[float, float]:
    """Take the provider down once it has answered ``after_successes`` calls, bring it back later."""
    while sum(r["outcome"] == "ok" for r in await asyncio.to_thread(server.records)) < after_successes:
        await asyncio.sleep(0.05)
    await asyncio.to_thread(server.control, down=True)
    down_at = time.time()
    await asyncio.sleep(OUTAGE_S)
    await asyncio.to_thread(server.control, down=False)
    return down_at, time.time()


def test_outage_opens_the_circuit_instead_of_hammering(fake_openai_server, isolated_workspace):
    concurrency, policy = (
        32,
        RetryPolicy(
            max_attempts=6, base_delay_s=0.05, max_delay_s=0.5, breaker_threshold=8, breaker_cooldown_s=1.0
        ),
    )
    server = fake_openai_server(latency=0.05)
    requests = requests_for(server, 1200, concurrency=concurrency, timeout_s=5)
    runner = Runner(isolated_workspace, "outage", retry=policy)

    async def both():
        return await asyncio.gather(runner.run(requests), _outage(server, after_successes=150))

    rows, (down_at, up_at) = asyncio.run(both())

    assert [r.item_id for r in rows] == [r.item_id for r in requests]
    assert all(r.error_type is None or r.error_type in ERROR_TYPES for r in rows)
    assert max(r.attempts for r in rows) <= policy.max_attempts  # bounded retries
    assert sum(r.error_type is None for r in rows) >= 0.98 * len(rows)
    breaker = runner.breakers[requests[0].model.endpoint]
    assert breaker.opened >= 1 and runner.stats.errors_by_type["circuit_open"] > 0
    during = sum(r["outcome"] == "down" for r in server.records())
    # Without a breaker each slot retries until its attempts run out: concurrency × attempts.
    probes = OUTAGE_S / policy.breaker_cooldown_s + 2
    assert during <= concurrency + policy.breaker_threshold + probes < concurrency * policy.max_attempts
    print(
        f"\noutage {up_at - down_at:.1f} s: {during} requests reached the down provider "
        f"(unbroken bound {concurrency * policy.max_attempts}); circuit opened {breaker.opened}x; "
        f"answered {sum(r.error_type is None for r in rows)}/{len(rows)}"
    )


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# (events, expected state after them): "f" a tripping failure, "o" an answer, "+N" the clock moves.
BREAKER_CASES = [
    ("ff", "closed"),
    ("fff", "open"),
    ("ffofff", "open"),
    ("ffo", "closed"),
    ("fff+1", "half_open"),
    ("fff+1p", "probing"),
    ("fff+1pf", "open"),
    ("fff+1po", "closed"),
]


@pytest.mark.parametrize("events, expected", BREAKER_CASES)
def test_circuit_breaker_states(events, expected):
    clock = Clock()
    breaker = CircuitBreaker("endpoint", threshold=3, cooldown_s=1.0, clock=clock)
    probe = False
    for event in events.replace("+1", "+"):
        if event == "+":
            clock.now += 1.0
        elif event == "p":
            probe = breaker.admit()
        else:
            breaker.record(None if event == "o" else "server_error", probe)
            probe = False
    assert state_of(breaker) == expected


def state_of(breaker: CircuitBreaker) -> str:
    """closed / open / half_open (a probe may go) / probing (the probe is out, others wait)."""
    try:
        probe = breaker.admit()
    except CallFailed as error:
        assert error.error_type == "circuit_open" and error.retry_after_s > 0
        return "probing" if breaker.probing else "open"
    return "half_open" if probe else "closed"


def test_requests_that_say_nothing_about_the_endpoint_do_not_trip_it():
    breaker = CircuitBreaker("endpoint", threshold=2, cooldown_s=1.0, clock=Clock())
    for error_type in ("client_error", "rate_limited", "bad_response", "client_error"):
        breaker.record(error_type, probe=False)
    assert state_of(breaker) == "closed"
