"""Traffic simulator: replays logged requests through the Router against real endpoints.

``simulate`` sends one request per user key (cycling through the given message lists) at a fixed
concurrency and counts what happened per arm; ``keys_for_step`` draws random keys until the
step's smaller arm has enough of them. ``run_rollout_demo`` drives a whole rollout: start →
(simulate one step's traffic, run the control loop once) until promoted or reverted, optionally
injecting a fault (a callable, e.g. ``lambda: server.control(down=True)``) when a given stage
begins, and reports the loop runs from the fault to the revert and the requests per step.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from workhorse.config import RolloutPolicy
from workhorse.errors import ProviderError
from workhorse.router import Router
from workhorse.tasks.inference import ModelSpec
from workhorse.tasks.routing import current_state, start_rollout
from workhorse.workspace import Workspace


@dataclass
class SimStats:
    calls: int = 0
    answered: int = 0
    failed: int = 0
    fallbacks: int = 0
    by_arm: Counter = field(default_factory=Counter)
    seconds: float = 0.0


async def simulate(router: Router, requests: list[list[dict]], keys: list[str], concurrency: int = 8,
                   params: dict | None = None) -> SimStats:
    """Send one request per key through the router, waiting for shadow calls and the log at the end."""
    stats, started = SimStats(), time.perf_counter()
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limit:
            try:
                answer = await router.complete(requests[i % len(requests)], key=keys[i], **(params or {}))
            except ProviderError:
                stats.failed += 1
                return
            stats.answered += 1
            stats.fallbacks += answer.fallback
            stats.by_arm[answer.arm] += 1

    await asyncio.gather(*(one(i) for i in range(len(keys))))
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


def run_rollout_demo(workspace: Workspace | str | None, use_case: str, incumbent: ModelSpec, candidate: ModelSpec,
                     requests: list[list[dict]], *, policy: RolloutPolicy | dict, control: Callable | None = None,
                     fault: Callable[[], None] | None = None, fault_at_stage: str | None = None,
                     concurrency: int = 8, max_runs: int = 30, params: dict | None = None) -> DemoResult:
    """Drive one rollout to promoted or reverted with simulated traffic; see the module docstring.

    ``control(use_case, workspace)`` runs the control loop once (default: the ``staged_rollout`` flow).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    policy = policy if isinstance(policy, RolloutPolicy) else RolloutPolicy.model_validate(policy)
    if control is None:
        from workhorse.flows.rollout import staged_rollout

        control = lambda uc, w: staged_rollout(uc, workspace=w)  # noqa: E731
    start_rollout(ws, use_case, incumbent, candidate, policy)
    demo = _Demo(ws, use_case, policy, control, fault, fault_at_stage, concurrency, params)
    return asyncio.run(demo.run(Router(ws, use_case, incumbent, candidate, refresh_s=0.0), requests, max_runs))


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
        stats = await simulate(router, requests, keys, self.concurrency, self.params)
        await self._bake(weights)
        result = await asyncio.to_thread(self.control, self.use_case, str(self.ws.root))
        return {"stage": weights["stage"], "calls": len(keys), "by_arm": dict(stats.by_arm), "fallbacks": stats.fallbacks,
                "failed": stats.failed, "seconds": round(stats.seconds, 3), "outcome": result["outcome"],
                "to_stage": result["stage"], "reason": result["reason"]}

    async def _bake(self, weights: dict) -> None:
        """Let the step's bake time pass (simulated traffic is faster than real traffic)."""
        started = current_state(self.ws, self.use_case).step_started_at / 1e6
        await asyncio.sleep(max(0.0, started + self.policy.bake_time - time.time()))
