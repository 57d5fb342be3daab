"""Generated traffic logs (traffic_log schema) for monitoring tests and the demo.

Each call describes one (use case, model, arm) stream in a time range: how many requests,
their latency, the share of errors, what the model answers and how long the inputs are. The
randomness is seeded, so a test's numbers are reproducible.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Callable

import pyarrow as pa

TRAFFIC_COLUMNS = [
    ("request_id", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("use_case", pa.string()),
    ("model", pa.string()),
    ("provider", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("status", pa.string()),
    ("error_type", pa.string()),
    ("cost_usd", pa.float64()),
    ("request", pa.string()),
    ("response", pa.string()),
    ("metadata", pa.string()),
    ("rollout_stage", pa.string()),
    ("arm", pa.string()),
]
SCHEMA = pa.schema(TRAFFIC_COLUMNS)


def stream(
    use_case: str,
    model: str,
    start: datetime,
    minutes: float,
    n: int,
    *,
    seed: int = 0,
    latency_ms: float = 400.0,
    jitter: float = 0.1,
    errors: int = 0,
    answer: Callable[[random.Random, int], str] = lambda rng, i: "ok",
    cost_usd: float = 0.0001,
    input_words: tuple[int, int] = (20, 60),
    arm: str = "incumbent",
    stage: str | None = None,
    prompts: list[str] | None = None,
) -> list[dict]:
    """n requests spread evenly over [start, start + minutes); the first ``errors`` fail.
    ``prompts`` pins the request texts (shadow pairs need the same request on both arms)."""
    rng = random.Random(f"{seed}-{use_case}-{model}-{arm}")
    rows = []
    for i in range(n):
        text = (
            prompts[i] if prompts else " ".join(rng.choice(WORDS) for _ in range(rng.randint(*input_words)))
        )
        failed = i < errors
        rows.append(
            {
                "request_id": f"{use_case}-{model}-{arm}-{start:%H%M}-{i}",
                "ts": start + timedelta(minutes=minutes * i / n),
                "use_case": use_case,
                "model": model,
                "provider": model.split("/")[0],
                "prompt_tokens": len(text) // 4,
                "completion_tokens": 5,
                "latency_ms": latency_ms * (1 + rng.uniform(-jitter, jitter)),
                "status": "error" if failed else "ok",
                "error_type": "server_error" if failed else None,
                "cost_usd": cost_usd,
                "request": json.dumps([{"role": "user", "content": text}]),
                "response": None if failed else answer(rng, i),
                "metadata": "{}",
                "rollout_stage": stage,
                "arm": arm,
            }
        )
    return rows


def table(*streams: list[dict]) -> pa.Table:
    rows = [row for rows in streams for row in rows]
    rows.sort(key=lambda r: r["ts"])
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def labels_answer(labels: list[str], weights: list[float] | None = None):
    """An answer picking one of ``labels`` (optionally weighted)."""
    return lambda rng, i: rng.choices(labels, weights=weights)[0]


WORDS = (
    "order refund invoice password login shipping delayed parcel charge card account billing error "
    "crash app update address delivery tracking subscription cancel renew help please thanks urgent "
    "payment failed twice damaged item return label warehouse courier"
).split()
