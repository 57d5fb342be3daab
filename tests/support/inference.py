"""Model requests against a fake server and a retry policy fast enough for tests of the runner."""

from __future__ import annotations

from workhorse.tasks.common.runner import ModelRequest, ModelSpec, RetryPolicy

CANARY_KEY = "sk-canary-7f3a9c1e5b2d4f60-do-not-leak"
FAST_RETRY = RetryPolicy(max_attempts=6, base_delay_s=0.01, max_delay_s=0.05)


def requests_for(server, count: int, *, concurrency: int = 64, timeout_s: float = 30.0, prefix: str = "item"):
    """``count`` distinct one-question requests to ``server`` (anything with a ``url``), keyed
    with CANARY_KEY."""
    spec = ModelSpec(
        model="openai/fake-model",
        name="fake",
        api_base=server.url,
        api_key=CANARY_KEY,
        max_concurrency=concurrency,
        timeout_s=timeout_s,
        input_cost_per_token=1e-6,
        output_cost_per_token=2e-6,
    )
    return [
        ModelRequest(
            item_id=f"{prefix}-{i}",
            model=spec,
            messages=[{"role": "user", "content": f"question number {i}"}],
            params={"max_tokens": 8, "temperature": 0},
        )
        for i in range(count)
    ]
