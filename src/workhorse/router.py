"""In-process router for Python apps during a rollout: ``await router.complete(messages, key=user)``.

It reads the use case's current weights from the state store (refreshed every ``refresh_s``) and
picks the arm with sticky assignment: hash(use case, key) → bucket 0..99, and buckets below
the candidate's percentage go to the candidate. Raising the percentage only adds buckets, so a
user who met the candidate keeps it. In shadow the candidate answers the same request in the
background and the caller gets the incumbent's answer. A failing candidate falls back to the
incumbent. Every call is one traffic_log row per arm; API keys never leave the ModelSpec.

Each arm has a circuit breaker (the eval runner's ``CircuitBreaker``): after a run of timeouts,
5xx or connection errors the arm gets one probe per cool-down instead of every routed call, so
a candidate that is down is not hammered. A refused call costs no request but still logs the
arm's row as an error (``circuit_open``): the guardrails and the monitor keep seeing the
candidate fail, and revert it, while its users get the incumbent's answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import workhorse  # noqa: F401  (offline LiteLLM price map before litellm is imported)
from workhorse.errors import ProviderError
from workhorse.tasks.common.runner import (
    CallFailed,
    CircuitBreaker,
    ModelSpec,
    RetryPolicy,
    call_cost,
    classify,
)
from workhorse.tasks.common.traffic_log import TrafficLogger, make_row
from workhorse.tasks.rollout.state import current_weights
from workhorse.workspace import Workspace


@dataclass
class Routed:
    """The answer the app gets, and which arm gave it."""

    text: str | None
    arm: str
    model: str
    stage: str
    latency_ms: float
    fallback: bool = False
    request_id: str = ""
    error_type: str | None = None


# Shadow calls go to the candidate's endpoint, so they share its breaker.
BREAKER_OF_ARM = {"incumbent": "incumbent", "candidate": "candidate", "shadow": "candidate"}


def bucket(use_case: str, key: str) -> int:
    """Stable bucket 0..99 of a user/session key (per use case, so use cases are independent)."""
    digest = hashlib.sha256(f"{use_case}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


class Router:
    """Route one use case's calls between the incumbent and the candidate by the rollout state."""

    def __init__(
        self,
        workspace: Workspace | str | None,
        use_case: str,
        incumbent: ModelSpec,
        candidate: ModelSpec,
        *,
        refresh_s: float = 5.0,
        logger: TrafficLogger | None = None,
        log_payloads: bool = True,
        breaker_threshold: int = RetryPolicy.breaker_threshold,
        breaker_cooldown_s: float = RetryPolicy.breaker_cooldown_s,
    ):
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
        self.use_case, self.incumbent, self.candidate = use_case, incumbent, candidate
        self.refresh_s = refresh_s
        self.log_payloads = log_payloads
        self._own_logger = logger is None
        self.logger = logger or TrafficLogger(self.workspace)
        self._weights: dict | None = None
        self._read_at = float("-inf")
        self._background: set[asyncio.Task] = set()
        # One breaker per arm, not per endpoint: a candidate that is down must never shut out an
        # incumbent served by the same provider.
        self.breakers = {
            role: CircuitBreaker(f"{spec.label} at {spec.endpoint}", breaker_threshold, breaker_cooldown_s)
            for role, spec in (("incumbent", incumbent), ("candidate", candidate))
        }

    def weights(self) -> dict:
        """The current weights, read from the state store at most every ``refresh_s`` seconds.

        Stamped when the read starts: weights are only as fresh as that, so a revert committed
        during a slow read is still seen within ``refresh_s`` of its commit."""
        if self._weights is None or time.monotonic() - self._read_at >= self.refresh_s:
            started = time.monotonic()
            self._weights = current_weights(self.workspace, self.use_case)
            self._read_at = started
        return self._weights

    def arm_for(self, key: str, weights: dict | None = None) -> str:
        weights = weights or self.weights()
        return "candidate" if bucket(self.use_case, key) < weights["candidate"] else "incumbent"

    async def complete(self, messages: list[dict], key: str | None = None, **params: Any) -> Routed:
        """Answer by the arm the key falls in; shadow and fallback as the module says."""
        weights = self.weights()
        key = key if key is not None else uuid.uuid4().hex
        meta = {
            "bucket": bucket(self.use_case, key),
            "key_hash": hashlib.sha256(key.encode()).hexdigest()[:12],
        }
        if self.arm_for(key, weights) == "candidate":
            answer = await self._call("candidate", self.candidate, messages, params, weights, meta)
            if answer.text is not None:
                return answer
            answer = await self._call(
                "incumbent",
                self.incumbent,
                messages,
                params,
                weights,
                meta | {"fallback_from": answer.request_id},
            )
            answer.fallback = True
        else:
            answer = await self._call("incumbent", self.incumbent, messages, params, weights, meta)
            if weights["shadow"]:
                self._shadow(messages, params, weights, meta | {"shadow_of": answer.request_id})
        if answer.text is None:
            raise ProviderError(
                f"{self.use_case}: incumbent {self.incumbent.label} failed ({answer.error_type})",
                error_type=answer.error_type,
            )
        return answer

    def _shadow(self, messages, params, weights, meta) -> None:
        task = asyncio.create_task(self._call("shadow", self.candidate, messages, params, weights, meta))
        self._background.add(task)  # kept referenced until done, else the loop may drop it
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for shadow calls still in flight (before reading the traffic log, or at exit)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _call(self, arm: str, spec: ModelSpec, messages, params, weights, meta) -> Routed:
        row = make_row(
            use_case=self.use_case,
            model=spec.model,
            provider=spec.model.split("/", 1)[0],
            rollout_stage=weights["stage"],
            arm=arm,
            metadata=meta,
            request=json.dumps(messages) if self.log_payloads else None,
        )
        started = time.perf_counter()
        breaker = self.breakers[BREAKER_OF_ARM[arm]]
        try:
            probe = breaker.admit()
        except CallFailed as refused:  # circuit open: no request leaves, but the arm's failure is logged
            return self._failed(row, spec, refused.error_type, started)
        try:
            response, text = await self._request(spec, messages, params)
        except Exception as error:  # every failure is classified and logged; the caller decides
            error_type = classify(error).error_type
            breaker.record(error_type, probe)
            return self._failed(row, spec, error_type, started)
        except BaseException:  # cancelled: says nothing about the endpoint, and frees the probe slot
            breaker.release(probe)
            raise
        breaker.record(None, probe)
        self.logger.log(self._answered(row, spec, response, text, started))
        return Routed(
            text, arm, spec.model, weights["stage"], row["latency_ms"], request_id=row["request_id"]
        )

    @staticmethod
    async def _request(spec: ModelSpec, messages, params) -> tuple[Any, str]:
        import litellm

        litellm.suppress_debug_info = (
            True  # else it prints a banner per failed call: noise and CPU in an outage
        )
        response = await litellm.acompletion(
            model=spec.model,
            messages=messages,
            api_base=spec.api_base,
            api_key=spec.api_key,
            timeout=spec.timeout_s,
            max_retries=0,
            **params,
        )
        text = response.choices[0].message.content
        if text is None:
            raise ValueError("response message has no content")
        return response, text

    def _failed(self, row: dict, spec: ModelSpec, error_type: str, started: float) -> Routed:
        row.update(status="error", error_type=error_type, latency_ms=(time.perf_counter() - started) * 1000)
        self.logger.log(row)
        return Routed(
            None,
            row["arm"],
            spec.model,
            row["rollout_stage"],
            row["latency_ms"],
            request_id=row["request_id"],
            error_type=error_type,
        )

    def _answered(self, row: dict, spec: ModelSpec, response, text: str, started: float) -> dict:
        usage = getattr(response, "usage", None)
        prompt, completion = (
            getattr(usage, "prompt_tokens", 0) or 0,
            getattr(usage, "completion_tokens", 0) or 0,
        )
        row.update(
            status="ok",
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=call_cost(spec, prompt, completion),
            response=text if self.log_payloads else None,
        )
        return row

    async def aclose(self) -> None:
        await self.drain()
        if self._own_logger:
            self.logger.close()
        else:
            self.logger.flush()
