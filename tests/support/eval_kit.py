"""Golden sets, scripted answers and plans for tests that run parallel_eval against fake servers."""

from __future__ import annotations

import asyncio
import random

import yaml

from workhorse.tasks.golden.sources import GoldenSpec

LABELS = ["alpha", "beta", "gamma"]


def make_items(count: int = 240, logged_model: str | None = None):
    """Classification items over LABELS; with ``logged_model`` the reference is that model's logged answer."""
    spec = GoldenSpec("routing", "classification", labels=LABELS)
    rng = random.Random(11)
    items = []
    for index in range(count):
        label = LABELS[index % 3]
        text = f"request {index}: please route this {rng.choice(['order', 'bill', 'login'])} question"
        metadata = {"model": logged_model} if logged_model else {}
        items.append(
            spec.item(
                [{"role": "user", "content": text}],
                label,
                source="test",
                label_origin="incumbent" if logged_model else "human",
                metadata=metadata,
            )
        )
    return items


def scripted(items, accuracy: float, seed: int) -> dict[str, str]:
    """Answers right on a chosen share of items, wrong (another label) on the rest."""
    rng = random.Random(seed)
    answers = {}
    for item in items:
        wrong = [label for label in LABELS if label != item.reference]
        answers[item.input[-1]["content"]] = item.reference if rng.random() < accuracy else rng.choice(wrong)
    return answers


def plan_file(tmp_path, candidates, incumbent="openai/incumbent-model", min_items=50, **sections):
    """A workhorse.yaml for the ``routing`` use case; ``sections`` add or extend top-level keys."""
    policy = {"min_items": min_items, "non_inferiority_margin": 0.05, **sections.pop("quality_policy", {})}
    plan = {
        "incumbent": incumbent,
        "use_cases": {"routing": {"task_type": "classification", "labels": LABELS}},
        "candidates": candidates,
        "quality_policy": policy,
        **sections,
    }
    path = tmp_path / "workhorse.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def evaluate(workspace, plan, **options):
    from workhorse.flows.evaluate import parallel_eval

    return asyncio.run(parallel_eval(use_case="routing", workspace=str(workspace.root), plan=plan, **options))
