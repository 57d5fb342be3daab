"""Throughput of the model calls in a block of work, and who the bottleneck is.

``metering()`` opens a meter for the current context; every runner working inside it (the shards
of an eval in the flow's event loop) reports its calls. The figures: paid requests and tokens per
second of the time some runner was calling (scoring between phases left out), and the share of
that time this process spent on the CPU (the client: building requests, parsing answers,
bookkeeping) against the rest (waiting on the endpoint). A client share near 100 % says the client
is the bottleneck; a mean number of requests in flight near the endpoint's limit says the endpoint
(or its limit) is.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

_current: ContextVar["Meter | None"] = ContextVar("workhorse_meter", default=None)


@dataclass
class Meter:
    requests: int = 0
    tokens: int = 0
    endpoint_s: float = 0.0  # the answered calls' latencies, summed
    wall_s: float = 0.0  # time while at least one runner was calling (gaps between phases left out)
    cpu_s: float = 0.0  # this process's CPU time over those same stretches
    active: int = 0
    since: tuple[float, float] = (0.0, 0.0)

    def begin(self) -> None:
        if self.active == 0:
            self.since = (time.perf_counter(), time.process_time())
        self.active += 1

    def end(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.wall_s += time.perf_counter() - self.since[0]
            self.cpu_s += time.process_time() - self.since[1]

    def add(self, latency_ms: float | None, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        self.requests += 1
        self.tokens += (prompt_tokens or 0) + (completion_tokens or 0)
        self.endpoint_s += (latency_ms or 0.0) / 1000

    def summary(self) -> dict | None:
        """The figures, or None when no call was paid (all cached, or shards on other machines)."""
        if not self.requests or self.wall_s <= 0:
            return None
        client = min(1.0, self.cpu_s / self.wall_s)
        return {
            "requests": self.requests,
            "wall_s": round(self.wall_s, 3),
            "requests_per_s": round(self.requests / self.wall_s, 2),
            "tokens_per_s": round(self.tokens / self.wall_s, 1),
            "client_share": round(client, 3),
            "endpoint_share": round(1 - client, 3),
            "mean_in_flight": round(self.endpoint_s / self.wall_s, 1),
        }

    def line(self) -> str:
        figures = self.summary()
        if figures is None:
            return "throughput: no paid calls measured here"
        return (
            f"throughput: {figures['requests']} requests in {figures['wall_s']:.1f} s = "
            f"{figures['requests_per_s']:.1f} requests/s, {figures['tokens_per_s']:.0f} tokens/s; "
            f"time in the client (CPU) {figures['client_share']:.0%}, waiting on the endpoint "
            f"{figures['endpoint_share']:.0%} ({figures['mean_in_flight']:.1f} requests in flight on average)"
        )


def current() -> Meter | None:
    return _current.get()


@contextmanager
def metering() -> Iterator[Meter]:
    meter = Meter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)
