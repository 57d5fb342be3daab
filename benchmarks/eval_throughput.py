"""Eval throughput, side by side on the same fake server (separate process, 50 ms per answer).

Part 1, the client: the runner's lean path (cache and checkpoint on, a fresh workspace so every
request is paid) against a bare aiohttp ``gather`` loop under a semaphore, on the same requests
at the same concurrency, alternated. Target: runner / bare >= 0.8.

Part 2, the whole command: ``workhorse eval`` on BANKING77 texts (one prompt variant, one
candidate whose ``max_concurrency`` the plan sets to 16, then 64), with a Prefect server already
running (PREFECT_API_URL), against the endpoint's own limit N x latency / concurrency; the CPU
seconds of the command too. Target at concurrency 16: within 1.3x of that limit.

    python benchmarks/eval_throughput.py [--requests 2000] [--items 2000] [--rounds 2] [--part client|cli|all]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workhorse  # noqa: F401
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "banking77" / "test.csv"
LATENCY_S = 0.05


def texts(count: int) -> list[dict]:
    rows = list(csv.DictReader(DATASET.open()))
    return (rows * (count // len(rows) + 1))[:count]


# --------------------------------------------------------------------------- part 1: the client


def requests(url: str, count: int, concurrency: int):
    from workhorse.tasks.common.runner import ModelRequest, ModelSpec

    spec = ModelSpec(model="openai/fake", api_base=url, api_key="sk-bench", max_concurrency=concurrency)
    return [
        ModelRequest(
            f"item-{i}", spec, [{"role": "user", "content": row["text"] + f" #{i}"}], {"max_tokens": 16}
        )
        for i, row in enumerate(texts(count))
    ]


async def bare_aiohttp(url: str, batch, concurrency: int) -> None:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": "Bearer sk-bench"}

    async def one(session, request):
        body = {"model": "fake", "messages": request.messages, **request.params}
        async with gate, session.post(f"{url}/chat/completions", json=body, headers=headers) as response:
            answer = await response.json()
            return answer["choices"][0]["message"]["content"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one(session, r) for r in batch))


def runner_once(batch) -> None:
    from workhorse.tasks.common.runner import Runner
    from workhorse.workspace import Workspace

    with tempfile.TemporaryDirectory() as fresh:
        rows = asyncio.run(Runner(Workspace.resolve(fresh), "bench").run(batch))
    assert all(r.error_type is None for r in rows)


def part_client(count: int, rounds: int, concurrency: int = 64) -> None:
    with FakeServerProcess(ServerConfig(latency_s=LATENCY_S)) as server:
        times: dict[str, list[float]] = {"runner (lean path)": [], "bare aiohttp": []}
        for round_ in range(rounds):
            batch = requests(server.url, count, concurrency)
            batch = [r.__class__(f"{r.item_id}-{round_}", r.model, r.messages, r.params) for r in batch]
            started = time.perf_counter()
            asyncio.run(bare_aiohttp(server.url, batch, concurrency))
            times["bare aiohttp"].append(time.perf_counter() - started)
            started = time.perf_counter()
            runner_once(batch)
            times["runner (lean path)"].append(time.perf_counter() - started)
    limit = count * LATENCY_S / concurrency
    print(f"part 1: {count} requests, concurrency {concurrency}, {LATENCY_S * 1000:.0f} ms per answer")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:22} {median:6.2f} s  {count / median:7.0f} requests/s")
    ratio = statistics.median(times["bare aiohttp"]) / statistics.median(times["runner (lean path)"])
    print(f"  runner / bare throughput = {ratio:.2f}  (target >= 0.8); endpoint limit {limit:.2f} s")


# --------------------------------------------------------------------------- part 2: the CLI


def build_workspace(root: Path, rows: list[dict], url: str, concurrency: int) -> None:
    import yaml

    from workhorse.tasks.golden.refresh import SourceSpec, refresh_golden
    from workhorse.tasks.golden.sources import GoldenSpec
    from workhorse.workspace import Workspace

    labels = sorted({row["category"] for row in rows})
    source = root / "labels.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(
            {"text": f"{r['text']} (#{i})", "category": r["category"]} for i, r in enumerate(rows)
        )
    refresh_golden(
        Workspace.resolve(root),
        GoldenSpec("banking", "classification", labels=labels),
        [SourceSpec("labels", str(source), {"input": "text", "reference": "category"})],
    )
    # One model called: the incumbent has no key here, so it is only replayed (nothing logged).
    candidate = {"model": "hosted_vllm/candidate", "api_base": url, "max_concurrency": concurrency}
    plan = {
        "incumbent": "openai/gpt-4o-mini",
        "candidates": [candidate],
        "use_cases": {"banking": {"task_type": "classification", "labels": labels}},
        "quality_policy": {"min_items": 10},
    }
    (root / "workhorse.yaml").write_text(yaml.safe_dump(plan))


def cli_eval(root: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one ``workhorse eval``, and its throughput line."""
    command = [str(Path(sys.executable).parent / "workhorse"), "eval", "banking", "--variant", "zero-shot"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*command, "--quiet", "-w", str(root)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"workhorse eval failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("throughput:")), "")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, line


def part_cli(items: int, concurrencies: tuple[int, ...]) -> None:
    from workhorse.ui import local_prefect_server

    rows = texts(items)
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeServerProcess(ServerConfig(latency_s=LATENCY_S)) as server,
        local_prefect_server(home=Path(folder) / "prefect") as prefect,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PREFECT_API"))}
        env["PREFECT_API_URL"] = prefect.api_url
        print(f"part 2: workhorse eval, {items} BANKING77 texts, Prefect server running")
        for concurrency in concurrencies:
            root = Path(folder) / f"c{concurrency}"
            root.mkdir()
            build_workspace(root, rows, server.url, concurrency)
            before = len(server.records())
            wall, cpu, line = cli_eval(root, env)
            paid = len(server.records()) - before
            limit = paid * LATENCY_S / concurrency
            calls = re.search(r"in ([\d.]+) s", line)
            print(
                f"  concurrency {concurrency:3}: {paid} requests, command {wall:.1f} s wall, {cpu:.1f} CPU-s "
                f"({cpu / paid * 1000:.1f} ms CPU per request); endpoint limit {limit:.2f} s; "
                f"calling phase {calls.group(1) if calls else '?'} s = "
                f"{float(calls.group(1)) / limit if calls else float('nan'):.2f}x the limit; "
                f"command = {wall / limit:.1f}x the limit"
            )
            print(f"    {line}")
        print(json.dumps({"records": len(server.records())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--part", choices=["client", "cli", "all"], default="all")
    options = parser.parse_args()
    if options.part in ("client", "all"):
        part_client(options.requests, options.rounds)
    if options.part in ("cli", "all"):
        part_cli(options.items, (16, 64))


if __name__ == "__main__":
    main()
