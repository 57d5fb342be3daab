"""Scores per task type: a scorer turns (output, reference) into a per-item score, metrics
aggregate lists of them.

Scorers are small functions registered by task type (like inspect_ai's scorers); each
returns an ``ItemScore`` whose ``correct`` feeds the paired statistics of the verdict.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable

INVALID_LABEL = "<invalid>"


@dataclass
class ItemScore:
    correct: bool
    value: float  # 1/0 for exact tasks, a continuous score (F1, ROUGE) otherwise
    prediction: Any = None
    details: dict = field(default_factory=dict)


Scorer = Callable[[str | None, Any, dict], ItemScore]
SCORERS: dict[str, Scorer] = {}


def scorer(task_type: str):
    def register(function: Scorer) -> Scorer:
        SCORERS[task_type] = function
        return function

    return register


def score_item(task_type: str, output: str | None, reference: Any, spec: dict | None = None) -> ItemScore:
    """Score one output; ``spec`` carries what the task needs (labels, json_schema)."""
    if task_type not in SCORERS:
        raise ValueError(f"no scorer for task type {task_type!r} (known: {sorted(SCORERS)})")
    return SCORERS[task_type](output, reference, spec or {})


_STRIP = string.punctuation + string.whitespace + "“”‘’"


def parse_label(output: str | None, labels: list[str]) -> str:
    """The label an output names: the whole answer (case, quotes and punctuation aside),
    or a JSON object with one string value. Anything else is invalid, never a guess."""
    if not output:
        return INVALID_LABEL
    text = output.strip()
    by_norm = {label.casefold(): label for label in labels}
    candidate = text.strip(_STRIP).casefold()
    if candidate in by_norm:
        return by_norm[candidate]
    parsed = parse_json_object(text)
    if parsed is not None and len(parsed) == 1:
        value = str(next(iter(parsed.values()))).strip(_STRIP).casefold()
        return by_norm.get(value, INVALID_LABEL)
    return INVALID_LABEL


@scorer("classification")
def score_classification(output: str | None, reference: Any, spec: dict) -> ItemScore:
    prediction = parse_label(output, spec.get("labels") or [str(reference)])
    correct = prediction == reference
    return ItemScore(correct=correct, value=float(correct), prediction=prediction)


def parse_json_object(text: str | None) -> dict | None:
    """A JSON object from the output, tolerating a fenced code block around it."""
    if not text:
        return None
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text
    try:
        value = json.loads(candidate.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _same_value(predicted: Any, expected: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            return abs(float(str(predicted).replace(",", "")) - float(expected)) < 1e-6
        except (TypeError, ValueError):
            return False
    return str(predicted).strip().casefold() == str(expected).strip().casefold()


@scorer("extraction")
def score_extraction(output: str | None, reference: Any, spec: dict) -> ItemScore:
    """JSON validity, schema validity and field-level exact match; correct = every field matches."""
    expected = reference if isinstance(reference, dict) else json.loads(reference)
    parsed = parse_json_object(output)
    schema_valid = parsed is not None and _schema_valid(parsed, spec.get("json_schema"))
    fields = {name: parsed is not None and name in parsed and _same_value(parsed[name], value)
              for name, value in expected.items()}
    field_accuracy = sum(fields.values()) / len(fields) if fields else float(parsed == expected)
    correct = parsed is not None and all(fields.values())
    return ItemScore(correct=correct, value=field_accuracy, prediction=parsed,
                     details={"json_valid": parsed is not None, "schema_valid": schema_valid, "fields": fields})


def _schema_valid(value: dict, schema: dict | None) -> bool:
    if not schema:
        return True
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(value)
