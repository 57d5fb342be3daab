"""The refresh end to end on the workspace: contract and quarantine, PII never stored,
reproducible versions, diffs, stable splits, immutability."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace

import pytest

from workhorse.errors import ContractError, DataError, VersionExistsError
from workhorse.tasks.golden.clean import validate_items
from workhorse.tasks.golden.item import items_to_table
from workhorse.tasks.golden.pii import find_pii
from workhorse.tasks.golden.refresh import (
    GoldenSpec,
    RefreshOptions,
    SourceSpec,
    dev_items,
    load_golden,
    read_manifest,
    refresh_golden,
    specs_from_plan,
    summary_markdown,
    summary_rows,
)
from workhorse.tasks.golden.sources import ColumnMapping, SampleOptions, import_label_file
from workhorse.tasks.golden.versions import golden_dir, versions, write_new

SLOTS = ["people", "time", "date", "first_name", "last_name"]
BOOKING_SCHEMA = {
    "type": "object",
    "properties": {slot: {"type": "string"} for slot in SLOTS},
    "additionalProperties": False,
}
LENIENT = RefreshOptions(max_bad_ratio=0.5)


@pytest.fixture(scope="module")
def banking(shared_datasets):
    """(rows, labels) of BANKING77's test split, read once."""
    with open(shared_datasets / "banking77" / "test.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((shared_datasets / "banking77" / "categories.json").read_text())


def write_csv(path, rows, columns=("text", "category")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def label_source(path):
    return SourceSpec("labels", str(path), mapping={"input": "text", "reference": "category"})


def quarantine_rows(workspace, use_case):
    """The rows of the one quarantine file a refresh of ``use_case`` wrote (like the audit's)."""
    paths = sorted((workspace.root / "quarantine").glob(f"golden_item-{use_case}-*.jsonl"))
    assert len(paths) == 1, paths
    return [json.loads(line) for line in paths[0].read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- contract

CONTRACT_CASES = [
    # (task type, reference that must be quarantined, check named in the reason)
    ("classification", "definitely_not_an_intent", "label_in_allowed_set"),
    ("extraction", '{"people": "4", "time": ', "extraction_reference_is_json"),
    ("extraction", '{"people": 4}', "extraction_reference_matches_schema"),
    ("extraction", '{"table_number": "12"}', "extraction_reference_matches_schema"),
    ("qa", "   ", "reference_present"),  # a blank cell is read as no reference
]


@pytest.mark.parametrize("task_type,bad_reference,check", CONTRACT_CASES)
def test_contract_quarantines_bad_rows_with_row_and_reason(
    isolated_workspace, shared_datasets, banking, tmp_path, task_type, bad_reference, check
):
    rows, labels = banking
    if task_type == "extraction":
        with open(shared_datasets / "restaurant8k_slots" / "test.jsonl", encoding="utf-8") as handle:
            records = [json.loads(next(handle)) for _ in range(300)][200:]
        good = [{"text": r["text"], "category": json.dumps(r["gold"])} for r in records]
    else:
        good = rows[:60]
    bad = {"text": "Please route this odd request to someone", "category": bad_reference}
    path = write_csv(tmp_path / "labels.csv", good[:30] + [bad] + good[30:])
    spec = GoldenSpec(
        "uc",
        task_type,
        labels=labels if task_type == "classification" else None,
        json_schema=BOOKING_SCHEMA if task_type == "extraction" else None,
    )
    report = refresh_golden(isolated_workspace, spec, [label_source(path)], LENIENT)
    quarantined = quarantine_rows(isolated_workspace, "uc")
    assert [row["reference"] for row in quarantined] == [bad_reference.strip() and bad_reference or None]
    assert json.loads(quarantined[0]["input"])[0]["content"] == bad["text"]
    assert quarantined[0]["_reason"].startswith(check)
    assert report.quarantined == 1 and report.quarantine_reasons == {quarantined[0]["_reason"]: 1}
    assert report.quarantine_path.endswith(".jsonl") and "golden_item-uc-" in report.quarantine_path
    stored = load_golden(isolated_workspace, "uc")
    assert bad_reference not in {item.reference for item in stored}
    assert len(stored) == report.accepted == report.counts["items"]


def test_contract_rejects_duplicate_ids_unknown_task_and_bad_split(banking, tmp_path):
    rows, labels = banking
    items = import_label_file(
        write_csv(tmp_path / "b.csv", rows[:20]),
        GoldenSpec("uc", "classification", labels=labels),
        ColumnMapping(input="text", reference="category"),
    )
    broken = [
        replace(items[1], item_id=items[0].item_id),
        replace(items[2], task_type="translation"),
        replace(items[3], split="train"),
    ]
    result, table_failures = validate_items(items_to_table(items[4:] + [items[0]] + broken))
    reasons = {row["item_id"]: row["_reason"] for row in result.quarantined.to_pylist()}
    assert result.accepted_count == len(items) - 4
    assert result.quarantined.column("item_id").to_pylist().count(items[0].item_id) == 2  # both copies
    assert "expect_column_values_to_be_unique(item_id)" in reasons[items[0].item_id]
    assert "task_type" in reasons[items[2].item_id] and "split" in reasons[items[3].item_id]
    assert table_failures == []


def test_an_empty_split_fails_the_refresh_and_stores_nothing(isolated_workspace, banking, tmp_path):
    rows, labels = banking
    path = write_csv(tmp_path / "one.csv", rows[:1])
    with pytest.raises(ContractError, match="no accepted item in split"):
        refresh_golden(
            isolated_workspace, GoldenSpec("tiny", "classification", labels=labels), [label_source(path)]
        )
    assert versions(isolated_workspace, "tiny") == []


def test_too_many_bad_rows_fail_the_refresh(isolated_workspace, banking, tmp_path):
    rows, labels = banking
    path = write_csv(tmp_path / "b.csv", [dict(row, category="wrong") for row in rows[:10]] + rows[10:20])
    with pytest.raises(ContractError, match="10 of 20 rows"):
        refresh_golden(
            isolated_workspace, GoldenSpec("uc", "classification", labels=labels), [label_source(path)]
        )
    assert len(quarantine_rows(isolated_workspace, "uc")) == 10 and versions(isolated_workspace, "uc") == []


# ---------------------------------------------------------------- dedup counts and warnings

DEDUP_KEYS = (
    "dedup_kept",
    "exact_duplicates",
    "near_duplicates",
    "conflicts_resolved",
    "conflicts_kept",
    "conflicting_references",
)


def write_jsonl(path, items):
    path.write_text(
        "".join(json.dumps({"input": item.input, "reference": item.reference}) + "\n" for item in items)
    )
    return path


def test_questions_over_shared_contexts_all_reach_the_golden_set(isolated_workspace, tmp_path):
    """A user's report QA set: 50 questions over 5 long contexts, every reference different.
    The old dedup stored 5 of them and counted 45 'conflicting references'."""
    from tests.support.golden_kit import QA, shared_context_items

    items = shared_context_items()
    report = refresh_golden(
        isolated_workspace, QA, [SourceSpec("labels", str(write_jsonl(tmp_path / "qa.jsonl", items)))]
    )
    manifest = read_manifest(isolated_workspace, "report-qa")
    assert report.counts["items"] == len(load_golden(isolated_workspace, "report-qa")) == 50
    assert {key: manifest["refresh"][key] for key in DEDUP_KEYS} == dict.fromkeys(DEDUP_KEYS, 0) | {
        "dedup_kept": 50
    }
    assert manifest["warnings"] == report.warnings == []


@pytest.mark.parametrize("max_share,warned", [(None, True), (0.25, False)])
def test_dedup_counts_and_the_share_warning_reach_manifest_and_summary(
    isolated_workspace, tmp_path, max_share, warned
):
    from tests.support.golden_kit import shared_context_items, with_duplicates

    path = write_jsonl(tmp_path / "qa.jsonl", with_duplicates(shared_context_items()))  # 67 rows, 15 removed
    golden = {"sources": [{"kind": "labels", "path": str(path)}]} | (
        {"max_duplicate_share": max_share} if max_share else {}
    )
    spec, sources, options = specs_from_plan(
        {"use_cases": {"report-qa": {"task_type": "qa", "golden": golden}}}
    )[0]
    assert options.max_duplicate_share == (max_share or 0.2)
    report = refresh_golden(isolated_workspace, spec, sources, options)
    manifest = read_manifest(isolated_workspace, "report-qa")
    assert report.counts["items"] == 52  # 50 questions + 2 conflicting references kept for review
    assert [manifest["refresh"][key] for key in DEDUP_KEYS] == [52, 4, 10, 1, 2, 3]
    assert sorted({example["kind"] for example in manifest["refresh"]["dedup_examples"]}) == [
        "conflicts_kept",
        "conflicts_resolved",
        "exact",
        "near",
    ]
    assert len(manifest["warnings"]) == len(report.warnings) == int(warned)
    row = summary_rows([report])[0]
    assert (
        row["dedup_kept"],
        row["exact"],
        row["near"],
        row["conflicts_resolved"],
        row["conflicts_kept"],
    ) == (52, 4, 10, 1, 2)
    assert row["warnings"] == report.warnings
    markdown = summary_markdown([report])
    assert "- dedup: 52 kept; removed 4 exact, 10 near, 1 conflicting references resolved" in markdown
    if warned:
        assert report.warnings[0].startswith(
            "dedup removed 15 of 67 rows (22%, more than golden.max_duplicate_share 20%)"
        )
        assert f"- **warning:** {report.warnings[0]}" in markdown
        index = json.loads((golden_dir(isolated_workspace, "report-qa") / "manifest.json").read_text())
        assert index["versions"][-1]["warnings"] == report.warnings


# ---------------------------------------------------------------- PII never stored

SEEDED = {
    "email": ["amelia.jones@example.com", "b.smith+bank@mail.example.org"],
    "phone": ["+44 20 7946 0958", "(415) 555-0132"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
}
LUHN_INVALID = "4111 1111 1111 1112"


def stored_texts(root):
    """Every file under the workspace as text: raw bytes, plus decoded rows for parquet."""
    import pyarrow.parquet as pq

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path, path.read_bytes().decode("utf-8", errors="replace")
        if path.suffix == ".parquet":
            yield path, json.dumps(pq.read_table(path).to_pylist(), default=str)


def test_seeded_pii_never_reaches_a_stored_file(isolated_workspace, banking, tmp_path):
    from tests.support.golden_kit import usage_rows, usage_table

    rows, labels = banking
    values = [value for kind in SEEDED for value in SEEDED[kind]]
    seeded = [dict(rows[i], text=f"{rows[i]['text']} Contact: {value}") for i, value in enumerate(values)]
    seeded.append(
        dict(rows[20], text=f"my card {values[4]} was charged twice", category="not_a_label")
    )  # quarantined
    seeded.append(dict(rows[21], text=f"order {LUHN_INVALID} never arrived"))
    label_file = write_csv(tmp_path / "labels.csv", seeded + rows[30:90])
    logs = usage_rows(40)
    for number, (row, value) in enumerate(zip(logs, values)):
        row["request"] = json.dumps([{"role": "user", "content": f"Request {number}: reach me at {value}"}])
    usage = tmp_path / "usage.parquet"
    __import__("pyarrow.parquet").parquet.write_table(usage_table(logs), usage)
    spec = GoldenSpec("routing", "classification", labels=labels + ["card_arrival"])
    report = refresh_golden(
        isolated_workspace,
        spec,
        [label_source(label_file), SourceSpec("usage_log", str(usage))],
        RefreshOptions(sample=SampleOptions(size=100)),
    )

    assert report.scrubbed == {"email": 4, "phone": 4, "card": 4 + 1, "iban": 4}  # +1: the quarantined row
    files = list(stored_texts(isolated_workspace.root))
    assert {p.name for p, _ in files} >= {"v1.parquet", "v1.manifest.json", "manifest.json"}
    assert any(p.name.startswith("golden_item-routing-") for p, _ in files)
    for path, text in files:
        assert find_pii(text) == [], path
        for value in values:
            assert value not in text and value.replace(" ", "").replace("-", "") not in text, (path, value)
    stored = " ".join(item.text for item in load_golden(isolated_workspace, "routing"))
    assert LUHN_INVALID in stored and stored.count("[EMAIL]") == 4 and stored.count("[IBAN]") == 4
    assert "[CARD]" in quarantine_rows(isolated_workspace, "routing")[0]["input"]


# ---------------------------------------------------------------- versions


def test_same_inputs_same_version_and_hash(isolated_workspace, banking, tmp_path):
    rows, labels = banking
    spec = GoldenSpec("routing", "classification", labels=labels)
    sources = [label_source(write_csv(tmp_path / "b.csv", rows[:150]))]
    first = refresh_golden(isolated_workspace, spec, sources)
    v1 = (golden_dir(isolated_workspace, "routing") / "v1.parquet").read_bytes()
    second = refresh_golden(isolated_workspace, spec, sources)
    assert (first.version, first.created) == (1, True) and (second.version, second.created) == (1, False)
    assert (
        first.content_hash
        == second.content_hash
        == read_manifest(isolated_workspace, "routing")["content_hash"]
    )
    assert sorted(os.listdir(golden_dir(isolated_workspace, "routing"))) == [
        "manifest.json",
        "v1.manifest.json",
        "v1.parquet",
    ]
    assert first.quarantine_path is None and not (isolated_workspace.root / "quarantine").exists()
    assert (golden_dir(isolated_workspace, "routing") / "v1.parquet").read_bytes() == v1


def test_added_removed_and_relabelled_rows_make_the_next_version_with_a_correct_diff(
    isolated_workspace, banking, tmp_path
):
    rows, labels = banking
    spec = GoldenSpec("routing", "classification", labels=labels)
    refresh_golden(isolated_workspace, spec, [label_source(write_csv(tmp_path / "v1.csv", rows[:100]))])
    v1 = {item.item_id: item for item in load_golden(isolated_workspace, "routing")}
    v1_bytes = (golden_dir(isolated_workspace, "routing") / "v1.parquet").read_bytes()

    changed = [dict(row) for row in rows[5:160]]  # rows 0-4 removed, 100-159 added
    changed[0]["category"] = (
        "lost_or_stolen_card" if changed[0]["category"] != "lost_or_stolen_card" else "card_arrival"
    )
    # A different test fraction would move items if splits were recomputed: stored ones must not move.
    report = refresh_golden(
        isolated_workspace,
        replace(spec, test_fraction=0.9),
        [label_source(write_csv(tmp_path / "v2.csv", changed))],
    )
    v2 = {item.item_id: item for item in load_golden(isolated_workspace, "routing")}
    detail = read_manifest(isolated_workspace, "routing", 2)["diff"]["detail"]

    assert (report.version, report.created) == (2, True)
    assert set(detail["added"]) == v2.keys() - v1.keys() and len(detail["added"]) == 60
    assert set(detail["removed"]) == v1.keys() - v2.keys() and len(detail["removed"]) == 5
    relabelled_id = next(i for i in v2 if v2[i].text == changed[0]["text"])
    assert detail["relabelled"] == [
        {
            "item_id": relabelled_id,
            "before": rows[5]["category"],
            "after": changed[0]["category"],
            "origin_before": "human",
            "origin_after": "human",
        }
    ]
    assert detail["split_changed"] == []
    assert all(v2[i].split == v1[i].split for i in v1.keys() & v2.keys())
    new_test_share = sum(v2[i].split == "test" for i in detail["added"]) / 60
    assert new_test_share > 0.7  # new items do follow the new fraction
    assert (golden_dir(isolated_workspace, "routing") / "v1.parquet").read_bytes() == v1_bytes
    assert [item.item_id for item in load_golden(isolated_workspace, "routing", version=1)] == sorted(v1)
    index = json.loads((golden_dir(isolated_workspace, "routing") / "manifest.json").read_text())
    assert index["latest"] == 2 and [v["version"] for v in index["versions"]] == [1, 2]


def test_dev_items_hold_only_dev(isolated_workspace, banking, tmp_path):
    rows, labels = banking
    refresh_golden(
        isolated_workspace,
        GoldenSpec("routing", "classification", labels=labels),
        [label_source(write_csv(tmp_path / "b.csv", rows[:80]))],
    )
    everything = load_golden(isolated_workspace, "routing")
    dev = dev_items(isolated_workspace, "routing")
    assert dev and {item.split for item in dev} == {"dev"}
    assert {item.item_id for item in dev} == {item.item_id for item in everything if item.split == "dev"}


def test_versions_are_never_overwritten_and_edits_are_detected(isolated_workspace, banking, tmp_path):
    import pyarrow.parquet as pq

    rows, labels = banking
    refresh_golden(
        isolated_workspace,
        GoldenSpec("routing", "classification", labels=labels),
        [label_source(write_csv(tmp_path / "b.csv", rows[:40]))],
    )
    folder = golden_dir(isolated_workspace, "routing")
    with pytest.raises(VersionExistsError):
        write_new(folder / "v1.parquet", b"not a golden set")
    assert pq.read_table(folder / "v1.parquet").num_rows == 40 and not list(folder.glob(".*tmp"))

    table = pq.read_table(folder / "v1.parquet")
    os.chmod(folder / "v1.parquet", 0o644)
    pq.write_table(table.slice(1), folder / "v1.parquet")
    with pytest.raises(DataError, match="does not match its manifest hash"):
        load_golden(isolated_workspace, "routing")


def test_an_orphan_version_file_is_skipped_not_reused(isolated_workspace, banking, tmp_path):
    rows, labels = banking
    spec = GoldenSpec("routing", "classification", labels=labels)
    folder = golden_dir(isolated_workspace, "routing")
    folder.mkdir(parents=True)
    (folder / "v1.parquet").write_bytes(b"left by a crash before its manifest")
    report = refresh_golden(
        isolated_workspace, spec, [label_source(write_csv(tmp_path / "b.csv", rows[:30]))]
    )
    assert report.version == 2 and versions(isolated_workspace, "routing") == [2]
    assert (folder / "v1.parquet").read_bytes() == b"left by a crash before its manifest"
