"""Limits per endpoint: how many requests in flight, how many per minute, how many tokens per minute.

The plan says what an endpoint allows (``max_concurrency``, ``rpm``, ``tpm`` on a candidate, or in
``limits:`` by model or provider for the incumbent and judges); what it leaves out comes from
``PROVIDER_DEFAULTS`` for a provider's own endpoint, and from ``DEFAULT_LIMITS`` for any
``api_base`` (a vLLM server or a proxy decides its own limits: no rate is assumed for it).

One ``EndpointLimiter`` per endpoint is shared by every request to it in an event loop:

- a concurrency window that adapts (AIMD): a 429 halves it, each success widens it by 1/window,
  back up to the plan's ``max_concurrency``; the 429s of requests sent before the last halving
  are the same congestion and do not halve it again;
- token buckets for requests and tokens per minute, refilled continuously and holding one
  second's worth, so no minute-long burst ever reaches the provider. A request costs its prompt
  (estimated from its characters) plus its expected completion (``max_tokens``), corrected by the
  usage the answer reports.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from dataclasses import dataclass

# Where the plan says nothing. Provider figures are the entry paid tiers the providers publish
# (OpenAI tier 1 for gpt-4o-mini, Anthropic tier 1): a run that starts there adapts down on 429s,
# and a team with a higher tier writes its own figures in the plan.
DEFAULT_LIMITS = (16, None, None)  # (max_concurrency, rpm, tpm)
PROVIDER_DEFAULTS: dict[str, tuple[int, float | None, float | None]] = {
    "openai": (16, 500, 200_000),
    "azure": (16, 300, 50_000),
    "anthropic": (8, 50, 40_000),
    "gemini": (8, 150, 1_000_000),
    "groq": (8, 30, 6_000),
    "together_ai": (16, 600, None),
    "deepinfra": (32, None, None),
    "fireworks_ai": (16, 600, None),
    "hosted_vllm": (64, None, None),
}
# Completion tokens a request is assumed to use when its parameters set no max_tokens.
EXPECTED_COMPLETION_TOKENS = 256


@dataclass(frozen=True)
class Limits:
    max_concurrency: int
    rpm: float | None = None
    tpm: float | None = None


def resolve_limits(
    model: str,
    api_base: str | None,
    max_concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
) -> Limits:
    """The plan's figures, each one it leaves out taken from the endpoint's defaults."""
    provider = provider_of(model)
    # LiteLLM sends OpenAI calls to OPENAI_API_BASE when set: a proxy or a server, not OpenAI's tiers.
    if provider == "openai":
        api_base = api_base or os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL")
    if api_base and provider != "hosted_vllm":
        defaults = DEFAULT_LIMITS  # a server of its own (a proxy, an OpenAI-compatible engine)
    else:
        defaults = PROVIDER_DEFAULTS.get(provider, DEFAULT_LIMITS)
    concurrency, default_rpm, default_tpm = defaults
    return Limits(
        max_concurrency=max_concurrency or concurrency,
        rpm=rpm if rpm is not None else default_rpm,
        tpm=tpm if tpm is not None else default_tpm,
    )


def provider_of(model: str) -> str:
    """LiteLLM's provider prefix; a bare name is OpenAI's or Anthropic's by its family."""
    if "/" in model:
        return model.split("/", 1)[0]
    if model.startswith("claude"):
        return "anthropic"
    return "openai" if model.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")) else ""


def expected_tokens(messages: list[dict], params: dict) -> int:
    """Prompt tokens (about 4 characters each, plus a few per message) and the completion's ceiling."""
    characters = sum(len(str(m.get("content") or "")) for m in messages)
    completion = params.get("max_tokens") or params.get("max_completion_tokens") or EXPECTED_COMPLETION_TOKENS
    return math.ceil(characters / 4) + 4 * len(messages) + int(completion)


class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding at most one second's worth.

    A request bigger than the bucket is let through when the bucket is full and leaves it in debt,
    so a single large prompt is slow, never stuck."""

    def __init__(self, per_minute: float, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0: now)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def refund(self, amount: float) -> None:
        """Give back what was reserved and not used (negative: take what was used beyond it)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


@dataclass
class Ticket:
    """One admitted request: when it was sent and the tokens it reserved."""

    sent_at: float
    tokens: int


class EndpointLimiter:
    """Concurrency (AIMD on 429), requests per minute and tokens per minute of one endpoint."""

    def __init__(self, endpoint: str, limits: Limits, clock=time.monotonic):
        self.endpoint, self.ceiling, self.clock = endpoint, limits.max_concurrency, clock
        self.window = float(limits.max_concurrency)
        self.requests = TokenBucket(limits.rpm, clock) if limits.rpm else None
        self.tokens = TokenBucket(limits.tpm, clock) if limits.tpm else None
        self.in_flight = 0
        self.most_in_flight = 0
        self.halvings = 0
        self.windows: list[float] = [self.window]  # every change of the window, for reports and tests
        self._last_halving = -math.inf
        self._waiting: deque[asyncio.Future] = deque()
        self._rate_lock = asyncio.Lock()

    @property
    def admitted(self) -> int:
        return max(1, int(self.window))

    async def acquire(self, tokens: int) -> Ticket:
        """Wait for a slot in the window, then for the rate (holding the slot, so the request is
        sent the moment the buckets allow it: sends never bunch up behind a slot)."""
        await self._take_slot()
        try:
            await self._wait_for_rate(tokens)
        except BaseException:
            self._free()
            raise
        return Ticket(self.clock(), tokens)

    async def _take_slot(self) -> None:
        if self.in_flight < self.admitted and not self._waiting:
            self._count_in()
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn  # the slot is counted in by whoever hands it over
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._free()  # handed over as we were cancelled: pass it on
            raise

    def _count_in(self) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

    async def _wait_for_rate(self, tokens: int) -> None:
        if self.requests is None and self.tokens is None:
            return
        async with self._rate_lock:  # one waiter at a time: first come, first sent
            while True:
                wait = max(
                    self.requests.wait_s(1) if self.requests else 0.0,
                    self.tokens.wait_s(tokens) if self.tokens else 0.0,
                )
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(tokens)

    def release(self, ticket: Ticket, error_type: str | None = None, used_tokens: int | None = None) -> None:
        """Free the slot and learn from the outcome: a 429 narrows the window, an answer widens it."""
        if self.tokens is not None and used_tokens is not None:
            self.tokens.refund(ticket.tokens - used_tokens)
        if error_type == "rate_limited":
            self._halve(ticket)
        elif error_type is None:
            self._widen()
        self._free()

    def _halve(self, ticket: Ticket) -> None:
        if ticket.sent_at < self._last_halving:
            return  # sent before the last halving: that congestion was already answered
        self.window = max(1.0, self.window / 2)
        self._last_halving = self.clock()
        self.halvings += 1
        self.windows.append(self.window)

    def _widen(self) -> None:
        if self.window < self.ceiling:
            before = self.window
            self.window = min(float(self.ceiling), self.window + 1 / self.window)
            if int(self.window) != int(before):  # whole steps only: the list stays short
                self.windows.append(self.window)

    def _free(self) -> None:
        self.in_flight -= 1
        while self._waiting and self.in_flight < self.admitted:
            turn = self._waiting.popleft()
            if not turn.done():  # a waiter cancelled meanwhile is skipped
                self._count_in()
                turn.set_result(None)

    def snapshot(self) -> dict:
        return {
            "endpoint": self.endpoint,
            "max_concurrency": self.ceiling,
            "window": round(self.window, 2),
            "most_in_flight": self.most_in_flight,
            "halvings": self.halvings,
        }
