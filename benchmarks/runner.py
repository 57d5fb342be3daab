"""Throughput of the runner against bare clients, side by side on the same fake server.

Same server (separate process, 50 ms latency), same 2,000 requests, concurrency 64:
  1. the runner (cache and checkpoint on, fresh workspace, so every request is a paid call)
  2. bare ``litellm.acompletion`` + ``asyncio.gather`` under a semaphore
  3. the bare ``openai`` SDK, same loop
Prints requests/s of each and the runner's ratios. Absolute numbers are noisy on shared
2-core machines; the ratios, measured in alternation in one process, are what to read.

    python benchmarks/runner.py [--requests 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import workhorse  # noqa: F401  (offline price map before litellm is imported)
from workhorse.tasks.common.runner import ModelRequest, ModelSpec, Runner
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig
from workhorse.workspace import Workspace

CONCURRENCY = 64


def messages(index: int) -> list[dict]:
    return [{"role": "user", "content": f"benchmark question {index}"}]


async def bare_litellm(url: str, count: int) -> None:
    import litellm

    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int):
        async with gate:
            return await litellm.acompletion(
                model="openai/fake",
                api_base=url,
                api_key="sk-bench",
                messages=messages(index),
                max_tokens=8,
                max_retries=0,
            )

    await asyncio.gather(*(one(i) for i in range(count)))


async def bare_openai(url: str, count: int) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int):
        async with gate:
            return await client.chat.completions.create(model="fake", messages=messages(index), max_tokens=8)

    await asyncio.gather(*(one(i) for i in range(count)))
    await client.close()


async def runner(url: str, count: int) -> None:
    spec = ModelSpec(model="openai/fake", api_base=url, api_key="sk-bench", max_concurrency=CONCURRENCY)
    requests = [ModelRequest(str(i), spec, messages(i), {"max_tokens": 8}) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:  # fresh cache: every request is a real call
        rows = await Runner(Workspace.resolve(tmp), "bench").run(requests)
    assert sum(r.error_type is None for r in rows) == count


def timed(function, url: str, count: int) -> float:
    started = time.perf_counter()
    asyncio.run(function(url, count))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    contenders = {"runner": runner, "bare litellm": bare_litellm, "bare openai SDK": bare_openai}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    with FakeServerProcess(ServerConfig(latency_s=0.05)) as server:
        timed(bare_litellm, server.url, 200)  # warm-up: imports and connection pools
        for _ in range(arguments.rounds):
            for name, function in contenders.items():
                rates[name].append(timed(function, server.url, arguments.requests))
    best = {name: statistics.median(values) for name, values in rates.items()}
    for name, rate in best.items():
        print(f"{name:>16}: {rate:7.0f} requests/s  (rounds: {', '.join(f'{v:.0f}' for v in rates[name])})")
    print(f"runner / bare litellm    = {best['runner'] / best['bare litellm']:.2f}  (target >= 0.85)")
    print(f"runner / bare openai SDK = {best['runner'] / best['bare openai SDK']:.2f}")


if __name__ == "__main__":
    main()
