"""`workhorse demo`: the playbook on the bundled Acme example with the embedded model.

Today it serves SmolLM2-135M through vLLM, runs the bundled golden set with two prompt
variants through the runner and prints the scores.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from workhorse.tasks.engines import VLLMServer, prepare_embedded_model
from workhorse.tasks.inference import EvalResponse, ModelRequest, ModelSpec, Runner, responses_table
from workhorse.tasks.prompts import PromptTask, render
from workhorse.tasks.scoring import score_item
from workhorse.workspace import Workspace

DEMO_VARIANTS = ("zero-shot", "constrained")
INVOICE_SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string"}, "vendor": {"type": "string"},
                   "date": {"type": "string"}, "total": {"type": "number"},
                   "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]}},
    "required": ["invoice_number", "vendor", "date", "total", "currency"],
}
SENTIMENT_LABELS = ("positive", "negative")


@dataclass(frozen=True)
class SeedItem:
    item_id: str
    use_case: str
    task: PromptTask
    reference: object


def load_seed_items(path: Path) -> list[SeedItem]:
    items = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        task = PromptTask(task_type=row["task_type"], text=row["text"],
                          labels=SENTIMENT_LABELS if row["task_type"] == "classification" else (),
                          json_schema=INVOICE_SCHEMA if row["task_type"] == "extraction" else None)
        items.append(SeedItem(row["item_id"], row["use_case"], task, row["reference"]))
    return items


def build_requests(items: list[SeedItem], spec: ModelSpec, variants=DEMO_VARIANTS) -> list[ModelRequest]:
    requests = []
    for variant in variants:
        for item in items:
            messages, params = render(variant, item.task, spec.hosting)
            params = {"max_tokens": 96, "temperature": 0.0, **params}
            requests.append(ModelRequest(item.item_id, spec, messages, params, prompt_variant=variant))
    return requests


def score_table(items: list[SeedItem], rows: list[EvalResponse]) -> list[dict]:
    """One line per (use case, prompt variant): accuracy, JSON validity, errors, latency."""
    by_id = {item.item_id: item for item in items}
    groups: dict[tuple, list] = defaultdict(list)
    for row in rows:
        item = by_id[row.item_id]
        score = score_item(item.task.task_type, row.output, item.reference,
                           {"labels": list(item.task.labels), "json_schema": item.task.json_schema})
        groups[(item.use_case, row.prompt_variant)].append((row, score))
    return [_summarise(use_case, variant, pairs) for (use_case, variant), pairs in sorted(groups.items())]


def _summarise(use_case: str, variant: str, pairs: list) -> dict:
    latencies = [row.latency_ms for row, _ in pairs if row.latency_ms is not None]
    json_flags = [score.details["json_valid"] for _, score in pairs if "json_valid" in score.details]
    return {
        "use_case": use_case, "prompt_variant": variant, "items": len(pairs),
        "accuracy": sum(score.correct for _, score in pairs) / len(pairs),
        "score": sum(score.value for _, score in pairs) / len(pairs),  # field match for extraction
        "json_valid": sum(json_flags) / len(json_flags) if json_flags else None,
        "errors": sum(row.error_type is not None for row, _ in pairs),
        "p50_latency_ms": statistics.median(latencies) if latencies else None,
    }


def print_scores(console: Console, lines: list[dict], title: str) -> None:
    table = Table(title=title, min_width=100)
    for column in ("use case", "prompt variant", "items", "accuracy", "fields", "JSON valid", "errors", "p50 latency"):
        table.add_column(column, justify="left" if column in ("use case", "prompt variant") else "right")
    for line in lines:
        table.add_row(line["use_case"], line["prompt_variant"], str(line["items"]), f"{line['accuracy']:.0%}",
                      f"{line['score']:.0%}",
                      "-" if line["json_valid"] is None else f"{line['json_valid']:.0%}", str(line["errors"]),
                      "-" if line["p50_latency_ms"] is None else f"{line['p50_latency_ms']:.0f} ms")
    console.print(table)


def run_demo(example_dir: Path, workspace: Path | None, console: Console) -> list[dict]:
    ws = Workspace.resolve(workspace)
    items = load_seed_items(example_dir / "seed_golden.jsonl")
    with console.status("preparing the embedded model (SmolLM2-135M-Instruct)"):
        model_dir = prepare_embedded_model(ws.models_dir)
    with console.status("starting vLLM (about 40 s on 2 CPU cores)"):
        server = VLLMServer(model_dir, cache_root=ws.subdir("vllm")).start()
    console.print(f"vLLM ready in {server.started_in_s:.0f} s at {server.api_base}")
    run_id = "demo-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    try:
        spec = ModelSpec(model=server.litellm_model, name="smollm2-135m", api_base=server.api_base,
                         hosting="self_hosted", max_concurrency=8, timeout_s=120)
        started = time.monotonic()
        runner = Runner(ws, run_id, progress=True)
        rows = asyncio.run(runner.run(build_requests(items, spec)))
        wall_s = time.monotonic() - started
    finally:
        server.stop()
    return _report(console, ws, run_id, items, rows, runner, wall_s)


def _report(console, ws, run_id, items, rows, runner, wall_s) -> list[dict]:
    import pyarrow.parquet as pq

    out = ws.run_dir(run_id)
    pq.write_table(responses_table(rows), out / "responses.parquet")
    lines = score_table(items, rows)
    print_scores(console, lines, f"SmolLM2-135M via vLLM on the Acme seed set ({run_id})")
    generated = sum(r.completion_tokens or 0 for r in rows if not r.cached)
    if runner.stats.calls:
        console.print(f"{runner.stats.calls} calls in {wall_s:.1f} s, {generated / wall_s:.0f} generated tokens/s")
    else:
        console.print(f"all {len(rows)} answers came from the response cache (0 calls)")
    console.print(f"responses: {out / 'responses.parquet'}")
    return lines
