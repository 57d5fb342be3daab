"""Extraction use cases whose answer is a JSON array, end to end without a model: the golden
refresh stores list references under an array schema, reads them back intact, and the scores
of answers to them land in a scores table like the one an evaluation run publishes."""

from __future__ import annotations

import csv
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workhorse.tasks.common.runner import EvalResponse
from workhorse.tasks.evaluate.matrix import score_rows
from workhorse.tasks.golden.refresh import GoldenSpec, RefreshOptions, SourceSpec, load_golden, refresh_golden

LINES_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["product", "quantity"],
        "additionalProperties": False,
        "properties": {"product": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
    },
}
ENTITIES_SCHEMA = {"type": "array", "items": {"type": "string"}}
PRODUCTS = [
    "walnut desk",
    "oak shelf",
    "steel lamp",
    "linen curtain",
    "wool rug",
    "glass vase",
    "cedar bench",
    "copper kettle",
    "bamboo tray",
    "marble coaster",
]
COMPANIES = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Soylent",
]
OPENINGS = [
    "Could you ship",
    "We would like",
    "Please add to our basket",
    "Our studio needs",
    "Kindly reserve",
    "For the new office send",
    "I am ordering",
    "Put me down for",
]


def order_rows(count: int) -> list[dict]:
    """Order requests whose reference is a list of line items (objects), some with one line."""
    rng = random.Random(16)
    rows = []
    for number in range(count):
        lines = [
            {"product": product, "quantity": rng.randint(1, 9)}
            for product in rng.sample(PRODUCTS, rng.randint(1, 3))
        ]
        wanted = " and ".join(f"{line['quantity']} x {line['product']}" for line in lines)
        rows.append(
            {
                "text": f"{OPENINGS[number % len(OPENINGS)]} {wanted}, reference order {number}.",
                "lines": lines,
            }
        )
    return rows


def mention_rows(count: int) -> list[dict]:
    """Texts that mention companies, a name sometimes twice: the reference list keeps duplicates."""
    rng = random.Random(61)
    rows = []
    for number in range(count):
        names = rng.sample(COMPANIES, rng.randint(1, 3))
        names += names[:1] if number % 4 == 0 else []
        rows.append(
            {
                "text": f"Note {number}: "
                + ", then ".join(f"{name} called back about item {rng.randint(1, 99)}" for name in names),
                "lines": names,
            }
        )
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path, rows):
    """A spreadsheet export: the list reference is JSON text in its cell."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "lines"])
        writer.writeheader()
        writer.writerows({"text": row["text"], "lines": json.dumps(row["lines"])} for row in rows)
    return path


@pytest.mark.parametrize(
    "make_rows, schema, writer, suffix",
    [
        (order_rows, LINES_SCHEMA, write_jsonl, "jsonl"),  # list values of objects in JSONL
        (mention_rows, ENTITIES_SCHEMA, write_csv, "csv"),  # list text of strings in a CSV cell
    ],
    ids=["line-items-jsonl", "entities-csv"],
)
def test_golden_refresh_stores_list_references_under_an_array_schema(
    isolated_workspace, tmp_path, make_rows, schema, writer, suffix
):
    rows = make_rows(40)
    bad = {
        "text": "Could you ship something nice for the lobby, whatever you think fits best.",
        "lines": {"product": "walnut desk", "quantity": 1},
    }  # an object where the schema wants an array
    path = writer(tmp_path / f"labels.{suffix}", rows + [bad])
    spec = GoldenSpec("orders", "extraction", json_schema=schema)

    report = refresh_golden(
        isolated_workspace,
        spec,
        [SourceSpec("labels", str(path), mapping={"input": "text", "reference": "lines"})],
        RefreshOptions(max_bad_ratio=0.1),
    )

    stored = load_golden(isolated_workspace, "orders")
    assert report.accepted == len(stored) == len(rows) and report.quarantined == 1
    assert next(iter(report.quarantine_reasons)).startswith("extraction_reference_matches_schema")
    assert {item.split for item in stored} == {"dev", "test"}
    expected = {row["text"]: row["lines"] for row in rows}
    for item in stored:
        assert item.json_schema == schema
        assert json.loads(item.reference) == expected[item.input[-1]["content"]]  # order and duplicates kept


def test_scores_of_list_answers_publish_as_a_table(isolated_workspace, tmp_path):
    rows = order_rows(30)
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    refresh_golden(
        isolated_workspace,
        GoldenSpec("orders", "extraction", json_schema=LINES_SCHEMA),
        [SourceSpec("labels", str(path), mapping={"input": "text", "reference": "lines"})],
    )
    items = load_golden(isolated_workspace, "orders")
    answers = {}
    for number, item in enumerate(items):
        lines = json.loads(item.reference)
        answers[item.item_id] = {
            0: json.dumps(lines[::-1]),  # right, in another order
            1: json.dumps(lines + [{"product": "spare part", "quantity": 1}]),  # one extra
            2: json.dumps(lines)[:-1],
        }[number % 3]  # cut off: not JSON
    responses = [
        EvalResponse(
            run_id="r",
            item_id=item_id,
            model="m",
            hosting="api",
            prompt_variant="v",
            output=output,
            latency_ms=1.0,
            prompt_tokens=1,
            completion_tokens=1,
            cost_usd=0.0,
            error_type=None,
            cached=False,
        )
        for item_id, output in answers.items()
    ]

    scores = score_rows(items, responses)

    by_id = {score["item_id"]: score for score in scores}
    for number, item in enumerate(items):
        score, n_lines = by_id[item.item_id], len(json.loads(item.reference))
        details = json.loads(score["details"])
        if number % 3 == 0:
            assert score["correct"] and score["value"] == 1.0
        elif number % 3 == 1:  # every line found, one extra: P n/(n+1), R 1
            assert not score["correct"] and details["precision"] == pytest.approx(n_lines / (n_lines + 1))
            assert details["recall"] == 1.0 and details["schema_valid"]
        else:
            assert (score["correct"], score["value"], details["json_valid"]) == (False, 0.0, False)
        assert score["error_type"] is None
    # publish_results writes exactly this: pa.Table.from_pylist(scores) -> scores.parquet
    pq.write_table(pa.Table.from_pylist(scores), tmp_path / "scores.parquet")
    stored = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    assert [json.loads(row["reference"]) for row in stored] == [json.loads(item.reference) for item in items]
