"""What the evaluation flow costs on top of the runner, and what offline batching buys.

Part 1 (fake server, 50 ms latency, separate process): the parallel_eval flow over 2,000
BANKING77 items × 2 models, against the bare runner answering the very same requests in one
event loop. Prefect's temporary server is started before the clock runs. Target ratio <= 1.2.

Part 2 (the real embedded model): vLLM's offline engine (continuous batching) against
sequential calls to the vLLM server, on the same items; items/s, engine start excluded.
Target >= 3x.

    python benchmarks/eval.py [--items 2000] [--batch-items 64] [--part flow|batch|all]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import tempfile
import time
from pathlib import Path

import workhorse  # noqa: F401
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "banking77" / "test.csv"


def banking_rows(count: int) -> list[dict]:
    rows = list(csv.DictReader(DATASET.open()))
    return rows[:count]


def build_workspace(root: Path, rows: list[dict], candidates: list[dict]) -> Path:
    """A golden set from BANKING77 rows and a plan naming the candidates."""
    import yaml

    from workhorse.tasks.golden.refresh import SourceSpec, refresh_golden
    from workhorse.tasks.golden.sources import GoldenSpec
    from workhorse.workspace import Workspace

    labels = sorted({row["category"] for row in rows})
    source = root / "labels.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    refresh_golden(
        Workspace.resolve(root),
        GoldenSpec("banking", "classification", labels=labels),
        [SourceSpec("labels", str(source), {"input": "text", "reference": "category"})],
    )
    plan = {
        "incumbent": "benchmark-incumbent/none",
        "candidates": candidates,
        "use_cases": {"banking": {"task_type": "classification", "labels": labels}},
        "quality_policy": {"min_items": 10},
    }
    (root / "workhorse.yaml").write_text(yaml.safe_dump(plan))
    return root


def flow_requests(root: Path):
    """Exactly the requests the flow sends: every candidate's zero-shot variant on all items."""
    from workhorse.config import load_plan
    from workhorse.tasks.evaluate.matrix import build_requests, few_shot_examples
    from workhorse.tasks.evaluate.run import contenders_from_plan
    from workhorse.tasks.golden.refresh import load_golden

    items = load_golden(root, "banking")
    _, candidates, _ = contenders_from_plan(
        load_plan(root / "workhorse.yaml"), "banking", None, None, ["zero-shot"]
    )
    examples = few_shot_examples([i for i in items if i.split == "dev"])
    return [r for c in candidates for r in build_requests(c, "zero-shot", items, examples)]


def bare_runner_seconds(root: Path) -> tuple[float, int]:
    from workhorse.tasks.common.runner import Runner
    from workhorse.workspace import Workspace

    requests = flow_requests(root)
    with tempfile.TemporaryDirectory() as fresh:  # an empty cache: every request is a call
        started = time.perf_counter()
        asyncio.run(Runner(Workspace.resolve(fresh), "bare").run(requests))
        return time.perf_counter() - started, len(requests)


def flow_seconds(root: Path) -> float:
    from prefect import flow

    from workhorse.flows.evaluate import parallel_eval

    flow(lambda: None, name="warm-up")()  # the temporary Prefect server starts here, off the clock
    started = time.perf_counter()
    asyncio.run(
        parallel_eval(
            use_case="banking",
            workspace=str(root),
            plan=str(root / "workhorse.yaml"),
            variants=["zero-shot"],
            replay=False,
        )
    )
    return time.perf_counter() - started


def part_flow(items: int) -> None:
    os.environ["OPENAI_API_KEY"] = "sk-benchmark"
    with FakeServerProcess(ServerConfig(latency_s=0.05)) as server, tempfile.TemporaryDirectory() as tmp:
        candidates = [
            {"model": f"openai/candidate-{name}", "api_base": server.url, "hosting": ["api"]}
            for name in ("a", "b")
        ]
        root = build_workspace(Path(tmp), banking_rows(items), candidates)
        bare_s, count = bare_runner_seconds(root)
        flow_s = flow_seconds(root)
    print(
        f"{count} requests: bare runner {bare_s:.1f} s ({count / bare_s:.0f}/s), "
        f"parallel_eval flow {flow_s:.1f} s ({count / flow_s:.0f}/s)"
    )
    print(f"flow wall time / bare runner = {flow_s / bare_s:.2f}  (target <= 1.2)")


def part_batch(count: int) -> None:
    from workhorse.tasks.common.engines import (
        BatchParams,
        VLLMServer,
        prepare_embedded_model,
        run_offline_batch,
    )
    from workhorse.tasks.common.runner import ModelRequest, ModelSpec, Runner
    from workhorse.tasks.evaluate.prompts import PromptTask, zero_shot
    from workhorse.workspace import Workspace

    rows = banking_rows(count)
    labels = tuple(sorted({row["category"] for row in rows}))
    conversations = [
        zero_shot(PromptTask("classification", row["text"], labels=labels), "batch")[0] for row in rows
    ]
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.resolve(tmp)
        model_dir = prepare_embedded_model(Workspace.resolve().models_dir)
        batch = run_offline_batch(model_dir, conversations, BatchParams(max_tokens=32), cache_root=Path(tmp))
        with VLLMServer(model_dir, cache_root=Path(tmp)) as server:
            spec = ModelSpec(
                model=server.litellm_model, api_base=server.api_base, max_concurrency=1, timeout_s=300
            )
            requests = [
                ModelRequest(str(i), spec, c, {"max_tokens": 32, "temperature": 0})
                for i, c in enumerate(conversations)
            ]
            started = time.perf_counter()
            answered = asyncio.run(Runner(workspace, "sequential").run(requests))
            sequential_s = time.perf_counter() - started
    batch_rate, sequential_rate = count / batch.generate_s, count / sequential_s
    print(
        f"{count} items, 32 tokens max: offline batch {batch_rate:.2f} items/s "
        f"({batch.tokens_per_s:.0f} tok/s, engine start excluded; {batch.wall_s:.0f} s with it), "
        f"sequential server calls {sequential_rate:.2f} items/s "
        f"({sum(r.completion_tokens or 0 for r in answered) / sequential_s:.0f} tok/s)"
    )
    print(f"offline batch / sequential server = {batch_rate / sequential_rate:.1f}x  (target >= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch-items", type=int, default=64)
    parser.add_argument("--part", choices=["flow", "batch", "all"], default="all")
    arguments = parser.parse_args()
    if arguments.part in ("flow", "all"):
        part_flow(arguments.items)
    if arguments.part in ("batch", "all"):
        part_batch(arguments.batch_items)


if __name__ == "__main__":
    main()
