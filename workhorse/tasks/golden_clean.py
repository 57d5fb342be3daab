"""Cleaning golden items before they are stored: PII scrub, exact and near-duplicate removal,
length and script sanity, and the golden_item contract with its use-case row checks.

Near duplicates are found with MinHash over character 5-gram shingles of the normalised text,
banded into an LSH index (64 permutations, 16 bands x 4 rows), and confirmed with the exact
Jaccard similarity; this is O(n) in the number of items instead of comparing every pair.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

from workhorse.tasks.golden_item import ORIGIN_PRIORITY, GoldenItem, make_item_id, split_for
from workhorse.tasks.pii import ScrubReport, scrub_value

NEEDS_REFERENCE = {"classification", "extraction", "summarization", "qa"}


# ---------------------------------------------------------------- PII

def scrub_item(item: GoldenItem, counts: Counter, test_fraction: float) -> GoldenItem:
    """The item with PII replaced in input, reference and metadata; id and split follow the
    scrubbed input, since that is what is stored and what ids must be stable against."""
    messages = scrub_value(item.input, counts)
    item_id = make_item_id(item.use_case, messages)
    return replace(item, input=messages, reference=scrub_value(item.reference, counts),
                   metadata=scrub_value(item.metadata, counts), item_id=item_id,
                   split=split_for(item_id, test_fraction))


def scrub_items(items: list[GoldenItem], test_fraction: float) -> tuple[list[GoldenItem], ScrubReport]:
    report = ScrubReport()
    scrubbed = [scrub_item(item, report.counts, test_fraction) for item in items]
    return scrubbed, report


# ---------------------------------------------------------------- duplicates

def normalise(text: str) -> str:
    """Case, width, punctuation and spacing do not make a different question."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def shingles(text: str, size: int = 5) -> set[int]:
    """Character n-grams of the normalised text as stable 31-bit hashes (crc32, not hash())."""
    text = normalise(text)
    grams = [text] if len(text) <= size else [text[i:i + size] for i in range(len(text) - size + 1)]
    return {zlib.crc32(gram.encode()) & 0x7FFFFFFF for gram in grams}


def jaccard(left: set, right: set) -> float:
    return len(left & right) / len(left | right) if left or right else 1.0


MERSENNE = (1 << 31) - 1


@lru_cache(maxsize=4)
def _permutations(permutations: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE, permutations, dtype=np.uint64)
    return a[:, None], rng.integers(0, MERSENNE, permutations, dtype=np.uint64)[:, None]


def minhash(shingle_set: set[int], permutations: int = 64, seed: int = 7):
    """A MinHash signature: min over shingles of (a*x + b) mod p for ``permutations`` (a, b).
    Shingles and a, b stay below 2**31, so a*x + b never overflows uint64."""
    import numpy as np

    a, b = _permutations(permutations, seed)
    x = np.fromiter(shingle_set, dtype=np.uint64, count=len(shingle_set))
    return ((a * x[None, :] + b) % MERSENNE).min(axis=1)


def candidate_pairs(sets: list[set[int]], bands: int = 16, rows: int = 4) -> set[tuple[int, int]]:
    """Pairs whose signatures agree on at least one band (likely Jaccard above ~0.5)."""
    buckets: dict[tuple, list[int]] = {}
    for index, shingle_set in enumerate(sets):
        signature = minhash(shingle_set, bands * rows)
        for band in range(bands):
            key = (band, signature[band * rows:(band + 1) * rows].tobytes())
            buckets.setdefault(key, []).append(index)
    pairs = set()
    for members in buckets.values():
        pairs.update((members[i], other) for i in range(len(members)) for other in members[i + 1:])
    return pairs


@dataclass
class DedupReport:
    exact: int = 0
    near: int = 0
    conflicting_references: int = 0
    examples: list[dict] = field(default_factory=list)


def _keeper_order(items: list[GoldenItem]) -> list[int]:
    """Indices by preference: a human reference beats an import beats the incumbent, then order."""
    return sorted(range(len(items)), key=lambda i: (ORIGIN_PRIORITY.get(items[i].label_origin, 9), i))


def _drop(kept: GoldenItem, dropped: GoldenItem, kind: str, report: DedupReport) -> None:
    setattr(report, kind, getattr(report, kind) + 1)
    if (dropped.reference or "") != (kept.reference or ""):
        report.conflicting_references += 1
    if len(report.examples) < 20:
        report.examples.append({"kind": kind, "kept": kept.item_id, "dropped": dropped.item_id})


def drop_exact_duplicates(items: list[GoldenItem], report: DedupReport) -> list[GoldenItem]:
    """One item per normalised input text, the most trusted reference kept."""
    kept: dict[str, int] = {}
    for index in _keeper_order(items):
        key = normalise(" ".join(f"{m.get('role')}: {m.get('content') or ''}" for m in items[index].input))
        if key in kept:
            _drop(items[kept[key]], items[index], "exact", report)
        else:
            kept[key] = index
    return [items[index] for index in sorted(kept.values())]


def drop_near_duplicates(items: list[GoldenItem], report: DedupReport, threshold: float = 0.9) -> list[GoldenItem]:
    """Drop items whose shingle Jaccard with a more trusted kept item is >= ``threshold``."""
    sets = [shingles(item.text) for item in items]
    neighbours: dict[int, set[int]] = {}
    for left, right in candidate_pairs(sets):
        if jaccard(sets[left], sets[right]) >= threshold:
            neighbours.setdefault(left, set()).add(right)
            neighbours.setdefault(right, set()).add(left)
    order = _keeper_order(items)
    rank = {index: position for position, index in enumerate(order)}
    dropped: set[int] = set()
    for index in order:  # visited in preference order, so a survivor outranks what it drops
        if index in dropped:
            continue
        for other in sorted(neighbours.get(index, set()) - dropped):
            if rank[other] > rank[index]:
                dropped.add(other)
                _drop(items[index], items[other], "near", report)
    return [item for index, item in enumerate(items) if index not in dropped]


def deduplicate(items: list[GoldenItem], threshold: float = 0.9) -> tuple[list[GoldenItem], DedupReport]:
    report = DedupReport()
    items = drop_exact_duplicates(items, report)
    return drop_near_duplicates(items, report, threshold), report


# ---------------------------------------------------------------- sanity and contract

@dataclass(frozen=True)
class Sanity:
    """Limits for inputs: characters of the message contents and the expected writing system.

    ``script`` is checked cheaply (most letters belong to that Unicode script, e.g. LATIN for
    English or German); it catches mojibake, binary junk and traffic in the wrong language
    family, not the difference between two languages that share a script.
    """

    min_chars: int = 1
    max_chars: int = 32_000
    script: str | None = "LATIN"
    min_script_share: float = 0.6


def input_length_ok(input_json: str, sanity: Sanity) -> bool:
    text = "".join(str(m.get("content") or "") for m in json.loads(input_json))
    return sanity.min_chars <= len(text.strip()) <= sanity.max_chars


def input_script_ok(input_json: str, sanity: Sanity) -> bool:
    text = "".join(str(m.get("content") or "") for m in json.loads(input_json))
    if sum(ch.isprintable() or ch.isspace() for ch in text) < 0.95 * len(text):
        return False
    letters = [ch for ch in text if ch.isalpha()]
    if not letters or sanity.script is None:
        return True
    in_script = sum(unicodedata.name(ch, "").startswith(sanity.script) for ch in letters)
    return in_script / len(letters) >= sanity.min_script_share


def input_is_messages(input_json: str) -> bool:
    """A non-empty list of chat messages with known roles; content is text or content parts,
    and may be empty only on an assistant turn that calls tools."""
    messages = json.loads(input_json)
    return isinstance(messages, list) and bool(messages) and all(map(_message_ok, messages))


def _message_ok(message) -> bool:
    if not isinstance(message, dict) or message.get("role") not in {"system", "user", "assistant", "tool", "developer"}:
        return False
    content = message.get("content")
    return isinstance(content, (str, list)) or (content is None and message["role"] == "assistant")


def reference_present(task_type: str, reference: str | None) -> bool:
    return task_type not in NEEDS_REFERENCE or bool(reference and reference.strip())


def label_in_allowed_set(task_type: str, reference: str | None, labels: list | None) -> bool:
    """Classification references must be one of the use case's labels (and labels must exist)."""
    return task_type != "classification" or (bool(labels) and reference in labels)


def extraction_reference_is_json(task_type: str, reference: str | None) -> bool:
    if task_type != "extraction" or reference is None:
        return True
    json.loads(reference)
    return True


def extraction_reference_matches_schema(task_type: str, reference: str | None, schema: str | None) -> bool:
    """The reference satisfies the use case's JSON schema (an unparseable one fails elsewhere)."""
    if task_type != "extraction" or reference is None or not schema:
        return True
    try:
        document = json.loads(reference)
    except ValueError:
        return True  # reported once, by extraction_reference_is_json
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema)).is_valid(document)


def golden_contract(sanity: Sanity = Sanity()):
    """The golden_item suite plus the row checks that need Python (labels, JSON, schema, sanity)."""
    from workhorse.tasks import contracts

    _register_table_level_split_expectation(contracts)
    contract = contracts.load_contract("golden_item")
    checks = [
        ("input_is_messages", ("input",), input_is_messages),
        ("input_length_ok", ("input",), lambda value: input_length_ok(value, sanity)),
        ("input_script_ok", ("input",), lambda value: input_script_ok(value, sanity)),
        ("reference_present", ("task_type", "reference"), reference_present),
        ("label_in_allowed_set", ("task_type", "reference", "labels"), label_in_allowed_set),
        ("extraction_reference_is_json", ("task_type", "reference"), extraction_reference_is_json),
        ("extraction_reference_matches_schema", ("task_type", "reference", "json_schema"),
         extraction_reference_matches_schema),
    ]
    for name, columns, predicate in checks:
        contract = contract.with_row_check(name, columns, predicate)
    return contract


def _register_table_level_split_expectation(contracts) -> None:
    """``expect_column_distinct_values_to_contain_set`` is a table-level GX expectation that the
    row evaluator does not know; per row it passes, and :func:`check_splits` judges the table."""
    name = "expect_column_distinct_values_to_contain_set"
    if name not in contracts.SQL_EXPECTATIONS:
        contracts.register_sql_expectation(name)(lambda expectation, column: "TRUE")


def check_splits(table, required=("dev", "test")) -> list[str]:
    """Table-level failures: a split with no accepted item."""
    present = set(table.column("split").to_pylist()) if table.num_rows else set()
    return [f"expect_column_distinct_values_to_contain_set(split, set={'|'.join(required)}): "
            f"no accepted item in split {split!r}" for split in required if split not in present]


def validate_items(table, sanity: Sanity = Sanity()):
    """Validate a golden_item table: (ContractResult, table-level failures)."""
    from workhorse.tasks.contracts import validate_table

    result = validate_table(table, golden_contract(sanity), cast=False)
    return result, check_splits(result.accepted)
