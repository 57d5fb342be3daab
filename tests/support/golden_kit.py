"""Golden-set material shared by tests of cleaning, sources and refresh: report-QA questions over
long shared contexts (with seeded duplicates), canonical usage_log rows, and a two-use-case plan."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from workhorse.tasks.golden.item import user_messages
from workhorse.tasks.golden.sources import GoldenSpec

# ---------------------------------------------------------------- questions over shared contexts

QA = GoldenSpec("report-qa", "qa")
QUARTERS = ["Q1 2025", "Q2 2025", "Q3 2025", "Q4 2025", "Q1 2026", "Q2 2026", "Q3 2026", "Q4 2026"]
LINE_ITEMS = [
    "Revenue",
    "Cost of revenue",
    "Gross profit",
    "Research and development",
    "Sales and marketing",
    "General and administrative",
    "Operating income",
    "Interest expense",
    "Income tax",
    "Net income",
    "Free cash flow",
    "Capital expenditure",
    "Deferred revenue",
    "Cash and equivalents",
    "Customers",
    "Headcount",
]
PEOPLE = ["Alice Moreau", "Bilal Haddad", "Chen Wei", "Dana Kowalski", "Emeka Obi"]
TOPICS = [
    "the beta launch",
    "the pricing change",
    "the EU data residency",
    "the hiring plan",
    "the Q3 forecast",
    "the vendor contract",
    "the support backlog",
    "the security audit",
]


def financial_table(rng, company):
    """A quarterly results table (~1,600 characters) and ten questions about its cells."""
    rows, cells = (
        [f"Quarterly results of {company} (USD thousands)", f"| line item | {' | '.join(QUARTERS)} |"],
        {},
    )
    for line in LINE_ITEMS:
        values = [f"{rng.randrange(1_000, 90_000):,}" for _ in QUARTERS]
        cells.update(zip(((line, quarter) for quarter in QUARTERS), values))
        rows.append(f"| {line} | {' | '.join(values)} |")
    asked = rng.sample(sorted(cells), 10)
    return "\n".join(rows), [
        (f"What was {line.lower()} of {company} in {quarter}?", cells[line, quarter])
        for line, quarter in asked
    ]


def meeting_transcript(rng, meeting, month):
    """A meeting transcript (~2,000 characters), one deadline per speaker and topic, and ten questions."""
    said = rng.sample([(who, topic) for who in PEOPLE for topic in TOPICS], 26)
    days = rng.sample(range(1, 29), 26)
    lines = [f"Transcript of the {meeting} meeting, 14 October 2026"] + [
        f"[00:{minute:02d}:{rng.randrange(60):02d}] {who}: On {topic}, I propose we decide by {month} {day}."
        for minute, ((who, topic), day) in enumerate(zip(said, days))
    ]
    asked = rng.sample(range(26), 10)
    return "\n".join(lines), [
        (
            f"Which deadline did {said[i][0]} propose for {said[i][1]} in the {meeting} meeting?",
            f"{month} {days[i]}",
        )
        for i in asked
    ]


def shared_context_items(seed: int = 3):
    """50 questions over 5 long contexts, each with its own reference (a user's report QA set):
    the tables share the user message with the question, the transcripts sit in the system prompt."""
    rng = random.Random(seed)
    contexts = [
        financial_table(rng, company) for company in ("Acme Robotics", "Borealis Foods", "Cobalt Health")
    ]
    contexts += [
        meeting_transcript(rng, "product council", "November"),
        meeting_transcript(rng, "budget review", "December"),
    ]
    items = []
    for number, (context, questions) in enumerate(contexts):
        for question, answer in questions:
            messages = (
                user_messages(f"{context}\n\nQuestion: {question}")
                if number < 3
                else user_messages(question, system=f"Answer from this transcript.\n{context}")
            )
            items.append(QA.item(messages, answer, source="report-qa", label_origin="human"))
    return items


def edited(original, edit, reference=None, origin="incumbent"):
    """A copy of ``original`` whose last message went through ``edit`` (from another source)."""
    messages = [dict(message) for message in original.input]
    messages[-1]["content"] = edit(messages[-1]["content"])
    return QA.item(
        messages, original.reference if reference is None else reference, source="logs", label_origin=origin
    )


def typo(text):
    """The question misspelt: a near duplicate of the original."""
    return text.replace("What was", "Wht was").replace("Which deadline", "Which dedline")


def shout(text):
    """Upper case and doubled spaces: an exact duplicate once normalised."""
    return text.upper().replace(" ", "  ")


def with_duplicates(items):
    """``items`` (the 50 above) plus 17 copies: 10 misspelt (near), 4 shouted (exact), and three
    that disagree: 2 misspelt with another answer (kept as conflicts), 1 shouted (resolved)."""
    return (
        items
        + [edited(items[i], typo) for i in range(10)]
        + [edited(items[i], shout) for i in range(20, 24)]
        + [edited(items[i], typo, reference="not this") for i in (30, 40)]
        + [edited(items[45], shout, reference="not this")]
    )


# ---------------------------------------------------------------- logged traffic


def usage_rows(count: int, use_case: str = "routing", start=datetime(2026, 10, 1, tzinfo=timezone.utc)):
    """Canonical usage_log rows: every 10th an error, input lengths cycling over 1-30 words."""
    prefix = "req" if use_case == "routing" else use_case
    return [
        {
            "request_id": f"{prefix}-{i:05d}",
            "ts": start + timedelta(hours=i),
            "use_case": use_case,
            "model": "openai/gpt-4o-mini",
            "provider": "openai",
            "prompt_tokens": 20,
            "completion_tokens": 2,
            "latency_ms": 300.0,
            "status": "error" if i % 10 == 9 else "ok",
            "error_type": "timeout" if i % 10 == 9 else None,
            "cost_usd": None,
            "request": json.dumps([{"role": "user", "content": f"question {i}: " + "word " * (i % 30)}]),
            "response": " card_arrival " if i % 10 != 9 else None,
            "metadata": "{}",
        }
        for i in range(count)
    ]


def usage_table(rows):
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


# ---------------------------------------------------------------- plans for golden_dataset_refresh

SLOTS = ["people", "time", "date", "first_name", "last_name"]


def two_use_case_plan(datasets: Path, folder: Path) -> dict:
    """A plan with two use cases fed by slices of the real datasets (written into ``folder``) and an
    OpenAI Evals file."""
    with open(datasets / "banking77" / "test.csv", encoding="utf-8") as handle:
        (folder / "routing.csv").write_text("".join(next(handle) for _ in range(81)))
    with open(datasets / "restaurant8k_slots" / "test.jsonl", encoding="utf-8") as handle:
        (folder / "booking.jsonl").write_text("".join(next(handle) for _ in range(60)))
    evals = [
        {
            "input": [
                {"role": "user", "content": f"My card number {n} was swallowed by the ATM on street {n}"}
            ],
            "ideal": "card_swallowed",
        }
        for n in range(6)
    ]
    (folder / "evals.jsonl").write_text("\n".join(map(json.dumps, evals)))
    return {
        "use_cases": {
            "ticket-routing": {
                "task_type": "classification",
                "labels": json.loads((datasets / "banking77" / "categories.json").read_text()),
                "golden": {
                    "sources": [
                        {
                            "kind": "labels",
                            "path": "routing.csv",
                            "mapping": {"input": "text", "reference": "category"},
                        },
                        {"kind": "openai_evals", "path": "evals.jsonl"},
                    ]
                },
            },
            "booking-slots": {
                "task_type": "extraction",
                "json_schema": {"type": "object", "properties": {s: {"type": "string"} for s in SLOTS}},
                "golden": {
                    "sources": [
                        {
                            "kind": "labels",
                            "path": "booking.jsonl",
                            "mapping": {"input": "text", "reference": "gold"},
                        }
                    ]
                },
            },
        }
    }


def write_plan(plan: dict, folder: Path) -> Path:
    """``plan`` as ``folder``/workhorse.yaml."""
    path = folder / "workhorse.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path
