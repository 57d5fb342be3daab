"""Parallel evaluation: contenders × prompt variants × golden items, in shards.

The incumbent answers with the prompt it uses in production ("as-logged"), replayed from the
logs when its answers are there. Each candidate tries several prompt variants on the dev split;
the best one on dev is the only one run on test, where the verdict is taken (no peeking).
Work is split into shards per (model, variant): a Prefect task costs milliseconds, an item none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from workhorse.tasks.common.runner import EvalResponse, ModelRequest, ModelSpec
from workhorse.tasks.evaluate.prompts import PromptTask, render
from workhorse.tasks.evaluate.scoring import SCORING_ERROR, check_spec, score_or_error
from workhorse.tasks.golden.item import GoldenItem

AS_LOGGED = "as-logged"
CANDIDATE_VARIANTS = ("zero-shot", "few-shot", "constrained", "few-shot-constrained")
FEW_SHOT_EXAMPLES = 3
# Room for a complete answer of each task type, and no more: a small model that rambles
# should be cut off, not paid (or waited for) through hundreds of tokens.
MAX_TOKENS = {"classification": 16, "extraction": 192, "summarization": 160, "qa": 32, "generation": 512}


@dataclass(frozen=True)
class Contender:
    role: str  # incumbent | candidate
    spec: ModelSpec
    variants: tuple[str, ...]
    callable: bool = True  # False: no credentials here, so only its logged answers count


def user_text(item: GoldenItem) -> str:
    """The text the task is about: the last user message of the logged request."""
    users = [m.get("content", "") for m in item.input if m.get("role") == "user"]
    return str(users[-1] if users else item.input[-1].get("content", ""))


def parsed_reference(item: GoldenItem):
    """The reference as its scorer takes it. Extraction's stays as stored, JSON text (or a value
    an item was built with): the scorer decodes text exactly once, whatever its shape."""
    if item.task_type == "qa":
        return item.metadata.get("acceptable_answers") or item.reference
    return item.reference


def prompt_task(item: GoldenItem, examples: Sequence[GoldenItem] = ()) -> PromptTask:
    return PromptTask(
        item.task_type,
        user_text(item),
        labels=tuple(item.labels or ()),
        json_schema=item.json_schema,
        examples=tuple((user_text(e), e.reference or "") for e in examples),
    )


def few_shot_examples(dev: Sequence[GoldenItem], k: int = FEW_SHOT_EXAMPLES) -> list[GoldenItem]:
    """Examples from dev only, one per label first so every class is shown."""
    chosen, seen = [], set()
    for item in sorted(dev, key=lambda i: i.item_id):
        if item.reference not in seen:
            chosen.append(item)
            seen.add(item.reference)
    rest = [i for i in sorted(dev, key=lambda i: i.item_id) if i not in chosen]
    return (chosen + rest)[:k]


def answer_budget(dev: Sequence[GoldenItem]) -> int | None:
    """max_tokens for the use case from its dev references: twice the longest (at ~3 characters a
    token, which JSON and prose stay above) plus a margin, never above the task type's room. An
    answer longer than that is wrong anyway, and a small model that rambles to 192 tokens on every
    item costs minutes on a CPU. Dev only: a test item's own reference must not shape its request."""
    lengths = [len(str(item.reference)) for item in dev if item.reference]
    if not lengths:
        return None
    ceiling = MAX_TOKENS.get(dev[0].task_type, 256)
    return min(ceiling, 2 * math.ceil(max(lengths) / 3) + 16)


def build_requests(
    contender: Contender,
    variant: str,
    items: Iterable[GoldenItem],
    examples: Sequence[GoldenItem] = (),
    max_tokens: int | None = None,
) -> list[ModelRequest]:
    spec = contender.spec
    requests = []
    for item in items:
        if variant == AS_LOGGED:
            messages, params = item.input, {}
        else:
            shown = (
                [e for e in examples if e.item_id != item.item_id] if variant.startswith("few-shot") else ()
            )
            messages, params = render(variant, prompt_task(item, shown), spec.hosting)
        defaults = {"temperature": 0.0, "max_tokens": max_tokens or MAX_TOKENS.get(item.task_type, 256)}
        requests.append(ModelRequest(item.item_id, spec, messages, {**defaults, **params}, variant))
    return requests


def shards(requests: list, size: int) -> list[list]:
    """Consecutive slices of at most ``size``, as equal as they can be: 804 requests make five
    shards of ~161, not four of 200 and one of 4 that costs a task's overhead for nothing and
    leaves a worker idle at the end of a phase."""
    count = math.ceil(len(requests) / max(1, size))
    bounds = [len(requests) * i // count for i in range(count + 1)] if count else [0]
    return [requests[start:end] for start, end in zip(bounds, bounds[1:])]


def replay_incumbent(
    contender: Contender, items: Iterable[GoldenItem], run_id: str
) -> tuple[list[EvalResponse], list[GoldenItem]]:
    """Rows for items whose logged answer came from this incumbent; the rest still need calls."""
    replayed, remaining = [], []
    for item in items:
        answer = logged_answer(item, contender.spec.model)
        if answer is None:
            remaining.append(item)
            continue
        replayed.append(
            EvalResponse(
                run_id=run_id,
                item_id=item.item_id,
                model=contender.spec.label,
                hosting="replay",
                prompt_variant=AS_LOGGED,
                output=answer,
                latency_ms=None,
                prompt_tokens=None,
                completion_tokens=None,
                cost_usd=None,
                error_type=None,
                cached=True,
            )
        )
    return replayed, remaining


def logged_answer(item: GoldenItem, model: str) -> str | None:
    logged_model = str(item.metadata.get("model", ""))
    if not logged_model or logged_model.split("/")[-1] != model.split("/")[-1]:
        return None
    if "incumbent_output" in item.metadata:
        return item.metadata["incumbent_output"]
    return item.reference if item.label_origin == "incumbent" else None


def score_rows(
    items: Sequence[GoldenItem], rows: Iterable[EvalResponse], options: dict | None = None
) -> list[dict]:
    """One scores row per response: the per-item verdict the statistics are built on.

    ``options`` are scorer options of the use case (``list_order``), checked before any item.
    A scorer failing on an item makes that row wrong and 0 with ``error_type`` "scoring_error"
    (unless the call itself failed) and the exception in ``details``; the other rows go on."""
    options = dict(options or {})
    check_spec(options)
    by_id = {item.item_id: item for item in items}
    scored = []
    for row in rows:
        item = by_id[row.item_id]
        score = score_or_error(
            item.task_type,
            row.output,
            parsed_reference(item),
            {**options, "labels": item.labels or [], "json_schema": item.json_schema},
        )
        scored.append(
            {
                "run_id": row.run_id,
                "use_case": item.use_case,
                "item_id": item.item_id,
                "split": item.split,
                "label_origin": item.label_origin,
                "model": row.model,
                "hosting": row.hosting,
                "prompt_variant": row.prompt_variant,
                "correct": bool(score.correct),
                "value": float(score.value),
                "reference": _as_text(item.reference),
                "prediction": _as_text(score.prediction),
                "details": json.dumps(score.details, sort_keys=True, default=str),
                "error_type": row.error_type or (SCORING_ERROR if score.error else None),
            }
        )
    return scored


def _as_text(value) -> str | None:
    """A string column's cell: text as it is, any other value (a list, a number) as JSON."""
    return value if isinstance(value, str) or value is None else json.dumps(value, sort_keys=True)


def tuning_sample(dev: Sequence[GoldenItem], limit: int | None) -> list[GoldenItem]:
    """The dev items prompt variants are tuned on: all, or ``limit`` of them in item-id order (ids
    are content hashes, so this is a stable pseudo-random sample that a re-run picks again)."""
    ordered = sorted(dev, key=lambda item: item.item_id)
    return ordered if limit is None else ordered[:limit]


def tuning_contenders(candidates: Sequence[Contender]) -> list[Contender]:
    """One contender per model for prompt tuning: a variant suits the model, not the hosting, so
    a model served and batched is tuned once (on its served form, which answers fastest)."""
    chosen: dict[str, Contender] = {}
    for contender in sorted(candidates, key=lambda c: c.spec.hosting == "batch"):
        chosen.setdefault(contender.spec.model, contender)
    return list(chosen.values())


def best_variant(scores: Iterable[dict], model: str, hosting: str) -> tuple[str, dict[str, float]]:
    """The variant with the highest mean score on dev for one model; ties go to the first tried."""
    means: dict[str, list[float]] = {}
    for row in scores:
        if row["model"] == model and row["hosting"] == hosting and row["split"] == "dev":
            means.setdefault(row["prompt_variant"], []).append(row["value"])
    summary = {variant: sum(values) / len(values) for variant, values in means.items()}
    if not summary:
        raise ValueError(f"no dev scores for {model} ({hosting})")
    return max(summary, key=lambda v: summary[v]), summary


@dataclass(frozen=True)
class PromptPlan:
    """What the dev split decides for every prompt: the few-shot examples, the answer budget, and
    the dev items the prompt variants are tuned on."""

    examples: list[GoldenItem]
    max_tokens: int | None
    tuning_items: list[GoldenItem]

    @classmethod
    def from_dev(cls, dev: Sequence[GoldenItem], tuning_limit: int | None) -> "PromptPlan":
        return cls(few_shot_examples(dev), answer_budget(dev), tuning_sample(dev, tuning_limit))


def tuning_requests(candidates: Sequence[Contender], prompts: PromptPlan) -> list[ModelRequest]:
    """Every prompt variant of each candidate model (once per model) on the tuning items."""
    return [
        request
        for contender in tuning_contenders(candidates)
        for variant in contender.variants
        for request in build_requests(
            contender, variant, prompts.tuning_items, prompts.examples, prompts.max_tokens
        )
    ]


def choose_variants(dev_scores: Iterable[dict], candidates: Sequence[Contender]) -> dict:
    """(label, hosting) → (best variant, mean dev score per variant): a model's hostings share its choice."""
    dev_scores = list(dev_scores)
    by_model = {
        c.spec.model: best_variant(dev_scores, c.spec.label, c.spec.hosting)
        for c in tuning_contenders(candidates)
    }
    return {(c.spec.label, c.spec.hosting): by_model[c.spec.model] for c in candidates}


def confirmation_requests(
    incumbent: Contender,
    candidates: Sequence[Contender],
    chosen: dict,
    incumbent_items: Sequence[GoldenItem],
    test: Sequence[GoldenItem],
    prompts: PromptPlan,
) -> list[ModelRequest]:
    """The test phase's calls: the incumbent as logged on the items it must answer live (if it can
    be called), and each candidate with its chosen variant on every test item."""
    requests = build_requests(incumbent, AS_LOGGED, incumbent_items) if incumbent.callable else []
    for c in candidates:
        requests += build_requests(
            c, chosen[(c.spec.label, c.spec.hosting)][0], test, prompts.examples, prompts.max_tokens
        )
    return requests
