"""Traffic simulator: replays logged requests through the Router against real endpoints.

``simulate`` sends one request per user key (cycling through the given message lists), in the
keys' order by a fixed number of users, and counts what happened per arm; ``keys_for_step`` draws
random keys until the step's smaller arm has enough of them. ``run_rollout_demo`` drives a whole
rollout: start → (simulate one step's traffic, run the control loop once) until promoted or
reverted, optionally injecting a fault (a callable, e.g. ``lambda: server.control(down=True)``)
when a given stage begins, and reports the loop runs from the fault to the revert and the
requests per step.

Pacing: simulated traffic arrives as fast as the client can send it, which a self-hosted engine
on a CPU cannot serve; requests it cannot serve queue inside it, and the guardrails would then
measure the queue, not the engine. So at most ``candidate_concurrency`` calls reach the
candidate at once, shadow calls included (in shadow every incumbent call fires one), interleaved
with the incumbent's calls as the keys arrive, and
``calibrate`` measures that concurrency on the endpoint itself before a rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from workhorse.config import RolloutPolicy
from workhorse.errors import ProviderError
from workhorse.router import Router
from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.rollout.state import current_state, start_rollout
from workhorse.workspace import Workspace


@dataclass
class SimStats:
    calls: int = 0
    answered: int = 0
    failed: int = 0
    fallbacks: int = 0
    by_arm: Counter = field(default_factory=Counter)
    seconds: float = 0.0


async def simulate(
    router: Router,
    requests: list[list[dict]],
    keys: list[str],
    concurrency: int = 8,
    params: dict | None = None,
    candidate_concurrency: int | None = None,
) -> SimStats:
    """Send one request per key through the router, waiting for shadow calls and the log at the end.

    ``concurrency`` users send the keys' requests in their order, each waiting for its answer before
    taking the next key, and at most ``candidate_concurrency`` (default: ``concurrency``) calls
    reach the candidate at once, shadow calls included: a user routed to a busy candidate waits, as
    at a saturated engine. Both arms thus see the same load over the whole step; a gate per arm
    would send every candidate call of a 5 % step in its first moments, beside a full incumbent
    load, and the latency guardrail would compare a crowded minute with a quiet one. In shadow the
    keys go in waves of the pace, each wave's shadow calls finishing before the next starts."""
    stats, started = SimStats(), time.perf_counter()
    weights, pace = router.weights(), candidate_concurrency or concurrency
    users, candidate_slots = asyncio.Semaphore(concurrency), asyncio.Semaphore(pace)  # FIFO: arrival order

    async def one(i: int) -> None:
        async with users:
            paced = (
                candidate_slots
                if router.arm_for(keys[i], weights) == "candidate"
                else contextlib.nullcontext()
            )
            async with paced:
                try:
                    answer = await router.complete(requests[i % len(requests)], key=keys[i], **(params or {}))
                except ProviderError:
                    stats.failed += 1
                    return
            stats.answered += 1
            stats.fallbacks += answer.fallback
            stats.by_arm[answer.arm] += 1

    waves = (
        [range(i, min(i + pace, len(keys))) for i in range(0, len(keys), pace)]
        if weights["shadow"]
        else [range(len(keys))]
    )
    for wave in waves:
        await asyncio.gather(*(one(i) for i in wave))
        await router.drain()
    router.logger.flush()  # the control loop must see every row of this batch
    stats.calls, stats.seconds = len(keys), time.perf_counter() - started
    return stats


def keys_for_step(router: Router, policy: RolloutPolicy, weights: dict, margin: float = 1.5) -> list[str]:
    """Random user keys, drawn until every arm that gets traffic has ``margin`` × the step's minimum.

    A fixed number of calls leaves the smaller arm short now and then (18 expected, fewer than 12
    in 1-5 % of draws per step, ~14 % of four-step rollouts), and the loop would rightly hold that
    step for more traffic: a demo that should show one step per loop run would show an extra one.
    In shadow every call reaches both arms."""
    need = math.ceil(policy.min_requests * margin)
    if weights["shadow"]:
        return [uuid.uuid4().hex for _ in range(need)]
    arms = [arm for arm in ("candidate", "incumbent") if weights[arm] > 0]
    keys: list[str] = []
    routed: Counter = Counter()
    while min(routed[arm] for arm in arms) < need:
        keys.append(uuid.uuid4().hex)
        routed[router.arm_for(keys[-1], weights)] += 1
    return keys


# Doubling the concurrency must raise the engine's throughput by this factor, else it is saturated:
# the extra calls only wait inside it, and its latency grows in proportion.
SATURATION_GAIN = 1.25
MAX_PACE = 8  # a demo step sends ~18 candidate calls: a higher pace would barely shorten it
# Answers measured per concurrency at least (in waves of that size): one answer is one prompt's
# length and one moment's CPU share, and the latency guardrail is derived from the slowest.
CALLS_PER_LEVEL = 3


@dataclass
class Calibration:
    """A probe of one endpoint: the slowest answer in waves of n simultaneous calls, per n tried,
    and the pace chosen from them (the most concurrent calls before the endpoint saturates)."""

    latency_s: dict[int, float]
    pace: int

    @property
    def paced_latency_s(self) -> float | None:
        return self.latency_s.get(self.pace)

    def describe(self) -> str:
        if not self.latency_s:
            return "the probe got no answer"
        waves = ", ".join(f"{n} at once: {s:.2f} s" for n, s in self.latency_s.items())
        return f"slowest answer {waves} → paced at {self.pace} concurrent call(s)"


async def calibrate(
    spec: ModelSpec, requests: list[list[dict]], params: dict | None = None, most: int = MAX_PACE
) -> Calibration:
    """How the endpoint's latency grows with load: a warm-up call, then waves of 1, 2, 4, …
    simultaneous calls (each on requests not sent before, ``CALLS_PER_LEVEL`` answers at least per
    level, the slowest counts) until a doubling no longer raises the throughput by
    ``SATURATION_GAIN``, or ``most``. Failed calls end the probe: they say nothing about speed, and
    a broken endpoint is the rollout's error guardrail's business."""
    sent = itertools.count()

    def calls(n: int):
        return asyncio.gather(
            *(_timed_call(spec, requests[next(sent) % len(requests)], params) for _ in range(n))
        )

    await calls(1)  # warm-up: the first answer pays for caches and lazy set-up
    latency: dict[int, float] = {}
    pace, n = 1, 1
    while n <= most:
        answered = [s for _ in range(math.ceil(CALLS_PER_LEVEL / n)) for s in await calls(n)]
        if None in answered:
            break
        latency[n] = max(answered)
        if n > 1 and n / latency[n] < SATURATION_GAIN * pace / latency[pace]:
            break
        pace, n = n, n * 2
    return Calibration(latency, pace)


async def _timed_call(spec: ModelSpec, messages: list[dict], params: dict | None) -> float | None:
    """Seconds one call took to answer, the way the Router calls (no retries); None if it failed."""
    import litellm

    litellm.suppress_debug_info = True  # else a banner per failed call
    started = time.perf_counter()
    try:
        await litellm.acompletion(
            model=spec.model,
            messages=messages,
            api_base=spec.api_base,
            api_key=spec.api_key,
            timeout=spec.timeout_s,
            max_retries=0,
            **(params or {}),
        )
    except Exception:  # any failure: the caller only counts answers
        return None
    return time.perf_counter() - started


@dataclass
class DemoResult:
    final_stage: str
    steps: list[dict]
    control_runs: int
    fault_stage: str | None = None
    runs_from_fault_to_revert: int | None = None

    @property
    def requests_per_step(self) -> dict[str, int]:
        totals: Counter = Counter()
        for step in self.steps:
            totals[step["stage"]] += step["calls"]
        return dict(totals)


def run_rollout_demo(
    workspace: Workspace | str | None,
    use_case: str,
    incumbent: ModelSpec,
    candidate: ModelSpec,
    requests: list[list[dict]],
    *,
    policy: RolloutPolicy | dict,
    control: Callable,
    fault: Callable[[], None] | None = None,
    fault_at_stage: str | None = None,
    concurrency: int = 8,
    max_runs: int = 30,
    params: dict | None = None,
    candidate_concurrency: int | None = None,
) -> DemoResult:
    """Drive one rollout to promoted or reverted with simulated traffic; see the module docstring.

    ``control(use_case, workspace)`` runs the control loop once (the ``staged_rollout`` flow; tasks
    never import flows, so the caller passes it).
    ``candidate_concurrency`` bounds the candidate's calls in flight, shadow calls included (default:
    ``concurrency``); size it with ``calibrate``.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    policy = policy if isinstance(policy, RolloutPolicy) else RolloutPolicy.model_validate(policy)
    start_rollout(ws, use_case, incumbent, candidate, policy)
    demo = _Demo(
        ws, use_case, policy, control, fault, fault_at_stage, concurrency, params, candidate_concurrency
    )
    return asyncio.run(
        demo.run(Router(ws, use_case, incumbent, candidate, refresh_s=0.0), requests, max_runs)
    )


@dataclass
class _Demo:
    ws: Workspace
    use_case: str
    policy: RolloutPolicy
    control: Callable
    fault: Callable[[], None] | None
    fault_at_stage: str | None
    concurrency: int
    params: dict | None
    candidate_concurrency: int | None = None

    async def run(self, router: Router, requests: list[list[dict]], max_runs: int) -> DemoResult:
        steps, fault_run = [], None
        try:
            for run in range(1, max_runs + 1):
                weights = router.weights()
                if weights["stage"] in ("promoted", "reverted", "paused", "idle"):
                    break
                if self.fault and fault_run is None and weights["stage"] == self.fault_at_stage:
                    self.fault()
                    fault_run = run
                steps.append(await self._one_run(router, requests, weights))
        finally:
            await router.aclose()
        stage = current_state(self.ws, self.use_case).stage
        to_revert = len(steps) - fault_run + 1 if fault_run and stage == "reverted" else None
        return DemoResult(stage, steps, len(steps), self.fault_at_stage if fault_run else None, to_revert)

    async def _one_run(self, router: Router, requests, weights: dict) -> dict:
        keys = keys_for_step(router, self.policy, weights)
        stats = await simulate(
            router, requests, keys, self.concurrency, self.params, self.candidate_concurrency
        )
        await self._bake(weights)
        result = await asyncio.to_thread(self.control, self.use_case, str(self.ws.root))
        return {
            "stage": weights["stage"],
            "calls": len(keys),
            "by_arm": dict(stats.by_arm),
            "fallbacks": stats.fallbacks,
            "failed": stats.failed,
            "seconds": round(stats.seconds, 3),
            "outcome": result["outcome"],
            "to_stage": result["stage"],
            "reason": result["reason"],
        }

    async def _bake(self, weights: dict) -> None:
        """Let the step's bake time pass (simulated traffic is faster than real traffic)."""
        started = current_state(self.ws, self.use_case).step_started_at / 1e6
        await asyncio.sleep(max(0.0, started + self.policy.bake_time - time.time()))
