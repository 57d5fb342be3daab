"""Prompt variants: how one golden item becomes the messages and parameters of a model call.

Open models often need a different prompt than the incumbent (playbook step 3), and small
ones need constrained decoding: a variant bundles the instructions and the decoding constraint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

INSTRUCTIONS = {
    "classification": (
        "Classify the text into exactly one of these labels: {labels}. Answer with the label only."
    ),
    "extraction": (
        "Extract the fields of this JSON schema from the text and answer with one JSON {shape} only.\n"
        "Schema: {schema}"
    ),
    "summarization": "Summarise the text in plain English in at most three sentences.",
    "qa": "Answer the question with a short phrase only.",
    "generation": "{instruction}",
}


@dataclass(frozen=True)
class PromptTask:
    """What a variant needs to know about an item."""

    task_type: str
    text: str
    labels: tuple[str, ...] = ()
    json_schema: dict | None = None
    examples: tuple[tuple[str, str], ...] = ()  # (text, answer) pairs from the dev split


def instruction_for(task: PromptTask) -> str:
    return INSTRUCTIONS[task.task_type].format(
        labels=", ".join(task.labels),
        shape=json_shape(task.json_schema),
        schema=json.dumps(task.json_schema or {}),
        instruction="",
    )


def json_shape(schema: dict | None) -> str:
    """What the schema's root is, in words: a list of entities is asked for as an array."""
    kind = (schema or {}).get("type", "object")
    return {"array": "array", "object": "object"}.get(kind if isinstance(kind, str) else "object", "value")


def zero_shot(task: PromptTask, hosting: str) -> tuple[list[dict], dict]:
    messages = [{"role": "system", "content": instruction_for(task)}, {"role": "user", "content": task.text}]
    return messages, {}


def few_shot(task: PromptTask, hosting: str) -> tuple[list[dict], dict]:
    """Zero-shot with worked examples as earlier turns of the conversation."""
    shots = []
    for text, answer in task.examples:
        shots += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    messages = [
        {"role": "system", "content": instruction_for(task)},
        *shots,
        {"role": "user", "content": task.text},
    ]
    return messages, {}


def constrained(task: PromptTask, hosting: str) -> tuple[list[dict], dict]:
    """Zero-shot plus decoding restricted to a label or to the JSON schema."""
    messages, _ = zero_shot(task, hosting)
    return messages, constraint_params(task, hosting)


def constraint_params(task: PromptTask, hosting: str) -> dict:
    if task.task_type == "classification" and task.labels:
        if hosting in ("self_hosted", "batch"):  # vLLM's own `choice` constraint
            return {"extra_body": {"structured_outputs": {"choice": list(task.labels)}}}
        schema = {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": list(task.labels)}},
            "required": ["label"],
            "additionalProperties": False,
        }
        return _json_schema_format("label", schema)
    if task.task_type == "extraction" and task.json_schema:
        return _json_schema_format("extraction", task.json_schema)
    return {}


def _json_schema_format(name: str, schema: dict) -> dict:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}}


def few_shot_constrained(task: PromptTask, hosting: str) -> tuple[list[dict], dict]:
    """Worked examples to show the task, a constraint to hold the format."""
    messages, _ = few_shot(task, hosting)
    return messages, constraint_params(task, hosting)


PromptVariant = Callable[[PromptTask, str], tuple[list[dict], dict]]
VARIANTS: dict[str, PromptVariant] = {
    "zero-shot": zero_shot,
    "few-shot": few_shot,
    "constrained": constrained,
    "few-shot-constrained": few_shot_constrained,
}


def render(variant: str, task: PromptTask, hosting: str) -> tuple[list[dict], dict]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r} (known: {sorted(VARIANTS)})")
    return VARIANTS[variant](task, hosting)
