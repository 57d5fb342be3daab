"""The parallel_eval flow: a BANKING77 slice through the real embedded model, served (vLLM
server via LiteLLM) and batched (vLLM offline), with its numbers recomputed independently."""

from __future__ import annotations

import asyncio
import csv
import json
import string
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import accuracy_score

from workhorse.tasks.golden.refresh import SourceSpec, refresh_golden
from workhorse.tasks.golden.sources import GoldenSpec

INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked"]
PER_INTENT = 8


def banking_slice(shared_datasets: Path, out: Path) -> Path:
    rows = list(csv.DictReader((shared_datasets / "banking77" / "test.csv").open()))
    chosen = [row for intent in INTENTS for row in [r for r in rows if r["category"] == intent][:PER_INTENT]]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(chosen)
    return out


def write_plan(path: Path) -> Path:
    plan = {
        "incumbent": "gpt-4o-mini",
        "use_cases": {"banking": {"task_type": "classification", "labels": INTENTS}},
        "candidates": [{"model": "hosted_vllm/smollm2-135m-instruct", "hosting": ["self_hosted", "batch"]}],
        "quality_policy": {"min_items": 10},
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def independent_label(output: str | None) -> str:
    text = (output or "").strip().strip(string.punctuation + string.whitespace).lower()
    return text if text in INTENTS else "<none>"


@pytest.mark.integration
def test_banking77_slice_through_both_hosting_modes(
    prefect_server, shared_datasets, isolated_workspace, tmp_path
):
    from workhorse.flows.evaluate import parallel_eval

    labels = banking_slice(shared_datasets, tmp_path / "banking.csv")
    spec = GoldenSpec("banking", "classification", labels=INTENTS)
    refresh_golden(
        isolated_workspace,
        spec,
        [SourceSpec("labels", str(labels), {"input": "text", "reference": "category"})],
    )
    plan = write_plan(tmp_path / "workhorse.yaml")

    summary = asyncio.run(
        parallel_eval(
            use_case="banking",
            workspace=str(isolated_workspace.root),
            plan=str(plan),
            variants=["zero-shot", "constrained"],
        )
    )

    responses = pq.read_table(summary["responses"]).to_pylist()
    assert {r["hosting"] for r in responses} == {"self_hosted", "batch"}
    assert all(r["error_type"] is None for r in responses)
    golden = {
        row["item_id"]: row
        for row in pq.read_table(
            next((isolated_workspace.root / "golden" / "banking").glob("v*.parquet"))
        ).to_pylist()
    }
    for line in summary["leaderboard"]:
        arm = [
            r
            for r in responses
            if r["model"] == line["model"]
            and r["prompt_variant"] == line["prompt_variant"]
            and golden[r["item_id"]]["split"] == line["split"]
        ]
        expected = accuracy_score(
            [golden[r["item_id"]]["reference"] for r in arm], [independent_label(r["output"]) for r in arm]
        )
        assert line["items"] == len(arm)
        assert line["accuracy"] == pytest.approx(expected), line
    # Constrained decoding only ever yields a label; on the test split each hosting ran its dev winner.
    constrained = [r for r in responses if r["prompt_variant"] == "constrained"]
    assert constrained and all(r["output"] in INTENTS for r in constrained)
    assert (
        summary["verdict"]["decision"] in ("migrate", "keep", "inconclusive") and summary["verdict"]["reason"]
    )
    report = Path(summary["report"]).read_text()
    assert "quality-vs-cost" in report and "leaderboard" in report and "card_arrival" in report
    assert (
        json.loads((Path(summary["responses"]).parent / "verdict.json").read_text())["run_id"]
        == summary["run_id"]
    )
    assert all(rate > 0 for rate in summary["tokens_per_s"].values())
