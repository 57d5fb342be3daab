"""The run's test answers as Inspect AI eval logs, so `inspect view` shows them in a tool users know.

One log per contender (Inspect's logs hold one model each): a sample per test item with its input,
the reference as target, the answer as the model's output, workhorse's score and the prediction
it was scored on, and the error class where the call failed. Written as plain JSON in Inspect's
log format (version 2): no dependency on inspect-ai. Checked with inspect-ai 0.3.285 (``list_eval_logs``,
``read_eval_log``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

SCORER = "workhorse"


def inspect_sample(record: dict, answer: dict | None, model: str) -> dict:
    sample = {
        "id": record["id"],
        "epoch": 1,
        "input": record["input"],
        "target": record["reference"] or "",
        "metadata": {"answered": answer is not None},
    }
    if answer is None:
        return sample
    output = answer["output"] or ""
    sample["output"] = {
        "model": model,
        "choices": [
            {"message": {"role": "assistant", "content": output, "source": "generate"}, "stop_reason": "stop"}
        ],
        "completion": output,
    }
    sample["scores"] = {SCORER: {"value": answer["value"], "answer": answer["prediction"]}}
    sample["metadata"].update(correct=answer["correct"], error=answer["error"])
    if answer["error"]:
        sample["error"] = {"message": answer["error"], "traceback": "", "traceback_ansi": ""}
    return sample


def inspect_log(data: dict, column: int, created: str) -> dict:
    """The Inspect log of one contender (``data``: the item viewer's, ``column``: its index)."""
    model = data["columns"][column]["label"]
    samples = [inspect_sample(record, record["answers"][column], model) for record in data["items"]]
    scored = [s["scores"][SCORER]["value"] for s in samples if "scores" in s]
    correct = [s["metadata"]["correct"] for s in samples if "scores" in s]
    metrics = {
        "mean": {"name": "mean", "value": sum(scored) / len(scored) if scored else 0.0},
        "accuracy": {"name": "accuracy", "value": sum(correct) / len(correct) if correct else 0.0},
    }
    return {
        "version": 2,
        "status": "success",
        "eval": {
            "run_id": data.get("run_id", ""),
            "created": created,
            "task": f"workhorse/{data.get('use_case', '')}",
            "dataset": {"name": data.get("use_case", ""), "samples": len(samples)},
            "model": model,
            "config": {},
            "metadata": {"role": data["columns"][column]["role"], "split": "test"},
        },
        "results": {
            "total_samples": len(samples),
            "completed_samples": len(scored),
            "scores": [{"name": SCORER, "scorer": SCORER, "metrics": metrics}],
        },
        "samples": samples,
    }


def write_inspect_logs(folder: Path, data: dict) -> list[Path]:
    """``folder``/<created>_<use case>_<contender>.json, one per column of the viewer's data: Inspect
    lists a JSON log only under a name that starts with its ISO timestamp."""
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = []
    for index, column in enumerate(data["columns"]):
        parts = (created.replace(":", "-"), str(data.get("use_case", "")), column["label"])
        path = folder / ("_".join(_slug(part) for part in parts) + ".json")
        path.write_text(json.dumps(inspect_log(data, index, created), ensure_ascii=False), encoding="utf-8")
        written.append(path)
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-+." else "-" for c in text)
