"""Golden sources: real label files through a column mapping, OpenAI Evals, promptfoo, logs."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from tests.support.golden_kit import usage_rows, usage_table
from workhorse.errors import ConfigError
from workhorse.tasks.golden.item import make_item_id, split_for
from workhorse.tasks.golden.sources import (
    ColumnMapping,
    GoldenSpec,
    PromptfooOptions,
    SampleOptions,
    allocate,
    import_label_file,
    import_openai_evals,
    import_promptfoo_csv,
    parse_promptfoo_assertion,
    sample_usage_log,
)

SLOTS = ["people", "time", "date", "first_name", "last_name"]
BOOKING_SCHEMA = {
    "type": "object",
    "properties": {slot: {"type": "string"} for slot in SLOTS},
    "additionalProperties": False,
}


def head(source, target, lines: int):
    """The first ``lines`` records of a shared dataset (plus the CSV header) in a temp file."""
    with open(source, encoding="utf-8") as handle:
        target.write_text("".join(next(handle) for _ in range(lines + (source.suffix == ".csv"))))
    return target


def test_banking77_slice_imports_through_the_column_mapping(shared_datasets, tmp_path):
    labels = json.loads((shared_datasets / "banking77" / "categories.json").read_text())
    path = head(shared_datasets / "banking77" / "test.csv", tmp_path / "banking.csv", 120)
    spec = GoldenSpec("ticket-routing", "classification", labels=labels)
    items = import_label_file(path, spec, ColumnMapping(input="text", reference="category"))
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(items) == len(rows) == 120
    for item, row in zip(items, rows):
        assert item.input == [{"role": "user", "content": row["text"]}]
        assert item.reference == row["category"] and item.reference in labels
        assert (item.label_origin, item.task_type, item.source) == (
            "human",
            "classification",
            "labels:banking.csv",
        )
        assert item.item_id == make_item_id("ticket-routing", item.input)
        assert item.split == split_for(item.item_id)
    assert set(Counter(item.split for item in items)) == {"dev", "test"}


def test_restaurant8k_slice_imports_with_json_references(shared_datasets, tmp_path):
    path = head(shared_datasets / "restaurant8k_slots" / "test.jsonl", tmp_path / "r8k.jsonl", 150)
    spec = GoldenSpec("booking-slots", "extraction", json_schema=BOOKING_SCHEMA)
    mapping = ColumnMapping(
        input="text",
        reference="gold",
        id="id",
        keep=("requested_slots",),
        system="Extract the booking slots as JSON.",
    )
    items = import_label_file(path, spec, mapping)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(items) == 150
    for item, row in zip(items, rows):
        assert item.input[0] == {"role": "system", "content": "Extract the booking slots as JSON."}
        assert item.input[1]["content"] == row["text"]
        assert json.loads(item.reference) == row["gold"]
        assert item.metadata["source_id"] == row["id"]
        assert item.metadata["requested_slots"] == row["requested_slots"]
        assert item.json_schema == BOOKING_SCHEMA


def test_a_mapping_naming_a_missing_column_says_which(shared_datasets, tmp_path):
    path = head(shared_datasets / "banking77" / "test.csv", tmp_path / "b.csv", 3)
    with pytest.raises(ConfigError, match="'label'"):
        import_label_file(
            path,
            GoldenSpec("r", "classification", labels=["x"]),
            ColumnMapping(input="text", reference="label"),
        )


def test_openai_evals_jsonl(tmp_path):
    samples = [
        {
            "input": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Capital of France?"},
            ],
            "ideal": "Paris",
        },
        {
            "input": [{"role": "user", "content": "Who wrote Hamlet?"}],
            "ideal": ["William Shakespeare", "Shakespeare"],
        },
        {"input": "2 + 2 = ?", "ideal": "4"},
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps(sample) for sample in samples) + "\n")
    items = import_openai_evals(path, GoldenSpec("trivia", "qa"))
    assert [item.input for item in items] == [
        samples[0]["input"],
        samples[1]["input"],
        [{"role": "user", "content": "2 + 2 = ?"}],
    ]
    assert [item.reference for item in items] == ["Paris", "William Shakespeare", "4"]
    assert items[1].metadata["acceptable_answers"] == ["William Shakespeare", "Shakespeare"]
    assert {item.label_origin for item in items} == {"import"}


PROMPTFOO_ROWS = [
    # question, __expected, __expected2, __description -> expected reference (qa)
    ("What is the capital of France?", "equals: Paris", "", "capital", "Paris"),
    ("What is 2+2?", "4", "contains: four", "bare value is equals", "4"),
    ("Name a primary colour", "contains: red", "", "contains is a loose reference", "red"),
    ("Return the order as JSON", "is-json", "", "no reference", None),
    ("Tell a joke", "llm-rubric: is funny", "not-contains: sorry", "graded only", None),
]


def test_promptfoo_csv(tmp_path):
    path = tmp_path / "tests.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "__expected", "__expected2", "__description"])
        writer.writerows(row[:4] for row in PROMPTFOO_ROWS)
    items = import_promptfoo_csv(
        path, GoldenSpec("faq", "qa"), PromptfooOptions(prompt="Q: {{ question }}\nA:")
    )
    assert [item.reference for item in items] == [row[4] for row in PROMPTFOO_ROWS]
    assert [item.input[-1]["content"] for item in items] == [f"Q: {row[0]}\nA:" for row in PROMPTFOO_ROWS]
    assert [item.metadata["description"] for item in items] == [row[3] for row in PROMPTFOO_ROWS]
    assert items[4].metadata["assertions"] == [
        {"type": "llm-rubric", "value": "is funny"},
        {"type": "not-contains", "value": "sorry"},
    ]


def test_promptfoo_classification_takes_only_exact_references(tmp_path):
    path = tmp_path / "cls.csv"
    path.write_text("text,__expected\nI love it,positive\nmeh,contains: neutral\n")
    items = import_promptfoo_csv(
        path, GoldenSpec("sentiment", "classification", labels=["positive", "neutral"])
    )
    assert [item.reference for item in items] == ["positive", None]


@pytest.mark.parametrize(
    "expected,parsed",
    [
        ("equals: 30", {"type": "equals", "value": "30"}),
        ("Paris", {"type": "equals", "value": "Paris"}),
        ("similar(0.8): hello there", {"type": "similar", "value": "hello there", "threshold": 0.8}),
        ("grade: is polite", {"type": "llm-rubric", "value": "is polite"}),
        ("contains-json", {"type": "contains-json", "value": None}),
        ("note: this is plain text", {"type": "equals", "value": "note: this is plain text"}),
    ],
)
def test_promptfoo_assertion_syntax(expected, parsed):
    assert parse_promptfoo_assertion(expected) == parsed


# ---------------------------------------------------------------- logged traffic


def test_log_sample_is_stratified_by_time_and_length_and_skips_errors():
    rows = usage_rows(600) + usage_rows(50, use_case="other")
    options = SampleOptions(size=60, time_buckets=4, length_buckets=3)
    items = sample_usage_log(
        usage_table(rows), GoldenSpec("routing", "classification", labels=["card_arrival"]), options
    )
    assert len(items) == 60
    by_id = {row["request_id"]: row for row in rows}
    assert all(by_id[item.metadata["request_id"]]["status"] == "ok" for item in items)
    assert all(by_id[item.metadata["request_id"]]["use_case"] == "routing" for item in items)
    strata = Counter(item.metadata["stratum"] for item in items)
    assert len(strata) == 12 and max(strata.values()) - min(strata.values()) <= 1
    assert {(item.reference, item.label_origin) for item in items} == {("card_arrival", "incumbent")}


def test_log_sample_is_deterministic_and_reads_parquet(tmp_path):
    import pyarrow.parquet as pq

    table = usage_table(usage_rows(300))
    pq.write_table(table, tmp_path / "usage.parquet")
    spec = GoldenSpec("routing", "classification", labels=["card_arrival"])
    from_table = sample_usage_log(table, spec, SampleOptions(size=25))
    from_file = sample_usage_log(tmp_path / "usage.parquet", spec, SampleOptions(size=25))
    assert [item.item_id for item in from_table] == [item.item_id for item in from_file]
    other_seed = sample_usage_log(table, spec, SampleOptions(size=25, seed="another"))
    assert {item.item_id for item in other_seed} != {item.item_id for item in from_table}


def test_human_labels_for_logged_requests_take_precedence():
    spec = GoldenSpec("routing", "classification", labels=["card_arrival", "lost_or_stolen_card"])
    items = sample_usage_log(
        usage_table(usage_rows(40)),
        spec,
        SampleOptions(size=100),
        human_labels={"req-00003": "lost_or_stolen_card"},
    )
    by_request = {item.metadata["request_id"]: item for item in items}
    assert len(items) == 36  # every ok row, since the sample is larger than the population
    assert (by_request["req-00003"].reference, by_request["req-00003"].label_origin) == (
        "lost_or_stolen_card",
        "human",
    )
    assert by_request["req-00003"].metadata["incumbent_output"] == " card_arrival "  # kept for replay
    assert by_request["req-00004"].label_origin == "incumbent"


@pytest.mark.parametrize(
    "sizes,total",
    [
        ({"a": 50, "b": 30, "c": 20}, 10),
        ({"a": 97, "b": 2, "c": 1}, 10),
        ({"a": 5, "b": 5}, 100),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, 2),
    ],
)
def test_allocation_is_exact_and_bounded(sizes, total):
    quotas = allocate(sizes, total)
    assert sum(quotas.values()) == min(total, sum(sizes.values()))
    assert all(0 <= quotas[key] <= sizes[key] for key in sizes)
    if total >= len(sizes):
        assert all(quota >= 1 for quota in quotas.values())


def test_plan_gives_specs_sources_and_options_and_skips_frontier_work(tmp_path):
    from workhorse.tasks.golden.refresh import specs_from_plan

    plan = {
        "use_cases": {
            "routing": {
                "task_type": "classification",
                "labels": ["a", "b"],
                "golden": {
                    "size": 50,
                    "test_fraction": 0.6,
                    "sources": [
                        {"kind": "labels", "path": "labels.csv", "mapping": {"input": "q", "reference": "a"}}
                    ],
                },
            },
            "summaries": {"task_type": "summarization"},
            "agent": {"task_type": "generation", "workload": "frontier"},
            "agent-with-set": {"task_type": "generation", "workload": "frontier", "golden": {"size": 10}},
        }
    }
    found = {
        spec.use_case: (spec, sources, options) for spec, sources, options in specs_from_plan(plan, tmp_path)
    }
    assert set(found) == {"routing", "summaries", "agent-with-set"}
    spec, sources, options = found["routing"]
    assert (spec.labels, spec.test_fraction, options.sample.size) == (["a", "b"], 0.6, 50)
    assert sources[0].path == str(tmp_path / "labels.csv") and sources[0].mapping == {
        "input": "q",
        "reference": "a",
    }
    assert [source.kind for source in found["summaries"][1]] == ["usage_log"] and found["summaries"][
        0
    ].labels is None
