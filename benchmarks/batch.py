"""Provider batch benchmark: N lines through the product's batch path against a bare script that
makes the same files/batches calls with the ``openai`` SDK, both against one fake batch provider.

Each side runs in a child process of its own (so each has its own peak RSS), in turn:

- product: ``BatchClient.answer`` — JSONL written streaming, job and lines recorded in the state
  store before the calls, upload, create, poll, the output file read as a stream and mapped back
  line by line into rows (tokens, cost), answers recorded per line;
- baseline: build the same lines, write the file, ``files.create``, ``batches.create``, poll
  ``batches.retrieve``, ``files.content`` and one dict of custom_id -> answer.

Each side first sends a 10-line batch the same way (imports and the clients' lazy set-up, which
for LiteLLM is ~55 MB of modules loaded on its first files call), then the clock starts. Printed:
wall time of the N-line batch and peak RSS (whole process, and grown above the warmed-up RSS)
for each, and the product/baseline ratios.

    .venv/bin/python benchmarks/batch.py [--lines 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before any import of litellm: offline
LABELS = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def messages(i: int) -> list[dict]:
    return [
        {
            "role": "system",
            "content": f"Classify the text into exactly one of these labels: {', '.join(LABELS)}.",
        },
        {"role": "user", "content": f"I have a question about my card, number {i}, it has not arrived yet"},
    ]


def product(base: str, lines: int) -> dict:
    import asyncio

    from workhorse.tasks.common.runner import ModelRequest, ModelSpec
    from workhorse.tasks.evaluate.batch import BatchClient, BatchSettings
    from workhorse.workspace import Workspace

    spec = ModelSpec(
        "openai/fake-model",
        api_base=base,
        api_key="sk-bench",
        hosting="batch",
        input_cost_per_token=1e-7,
        output_cost_per_token=2e-7,
    )
    params = {"extra_body": {"structured_outputs": {"choice": LABELS}}}
    workspace = Workspace.resolve(tempfile.mkdtemp())

    def answer(run_id: str, count: int) -> int:
        requests = [ModelRequest(f"item-{i}", spec, messages(i), params, "constrained") for i in range(count)]
        client = BatchClient(workspace, run_id, BatchSettings(poll_s=0.05))
        outcome = asyncio.run(client.answer(requests, wait_s=600))
        client.close()
        return sum(row.error_type is None for row in outcome.rows.values())

    answer("warm-up", 10)
    warm = rss_mb()
    started = time.perf_counter()
    answered = answer("bench", lines)
    return {"seconds": time.perf_counter() - started, "answered": answered, "warm": warm}


def baseline(base: str, lines: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=base, api_key="sk-bench", max_retries=0)

    def answer(count: int) -> int:
        inputs = [(f"item-{i}", messages(i)) for i in range(count)]  # what an eval holds, as the product does
        path = Path(tempfile.mkdtemp()) / "input.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for item_id, conversation in inputs:
                body = {
                    "model": "fake-model",
                    "messages": conversation,
                    "structured_outputs": {"choice": LABELS},
                }
                line = {"custom_id": item_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
                out.write(json.dumps(line) + "\n")
        with path.open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "expired", "failed", "cancelled"):
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        answers = {}
        for raw in client.files.content(batch.output_file_id).text.splitlines():
            record = json.loads(raw)
            answers[record["custom_id"]] = record["response"]["body"]["choices"][0]["message"]["content"]
        return len(answers)

    answer(10)
    warm = rss_mb()
    started = time.perf_counter()
    answered = answer(lines)
    return {"seconds": time.perf_counter() - started, "answered": answered, "warm": warm}


def child(side: str, base: str, lines: int) -> None:
    result = (product if side == "product" else baseline)(base, lines)
    print(json.dumps({**result, "peak": peak_mb()}))


def run_side(side: str, base: str, lines: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, "--base", base, "--lines", str(lines)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=["product", "baseline"])
    parser.add_argument("--base")
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments.child, arguments.base, arguments.lines)
    from workhorse.testing.fake_batch import BatchProviderConfig, FakeBatchProcess

    rounds = []
    for _ in range(arguments.rounds):  # interleaved: a load change on the shared machine hits both sides
        results = {}
        for side in ("baseline", "product"):
            with FakeBatchProcess(BatchProviderConfig()) as provider:  # a fresh provider each: same work
                results[side] = run_side(side, provider.url, arguments.lines)
        bare, ours = results["baseline"], results["product"]
        for side, result in (("baseline (openai SDK)", bare), ("product (BatchClient)", ours)):
            print(
                f"{side:24} {result['seconds']:7.2f} s  answered {result['answered']:6d}  "
                f"peak RSS {result['peak']:7.1f} MB  (+{grown(result):6.1f} MB over the warmed-up process)"
            )
        rounds.append(
            (ours["seconds"] / bare["seconds"], ours["peak"] / bare["peak"], grown(ours) / grown(bare))
        )
    wall, peak, work = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(
        f"ratios product/baseline, median of {len(rounds)} round(s): wall {wall:.2f}x "
        f"(rounds {', '.join(f'{r[0]:.2f}' for r in rounds)}), peak RSS {peak:.2f}x, "
        f"peak grown by the work {work:.2f}x"
    )


def grown(result: dict) -> float:
    """Peak RSS grown during the N-line batch (what the work costs, not the libraries)."""
    return max(0.1, result["peak"] - result["warm"])


if __name__ == "__main__":
    main()
