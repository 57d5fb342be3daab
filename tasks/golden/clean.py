"""Cleaning golden items before they are stored: PII scrub, exact and near-duplicate removal,
length and script sanity, and the golden_item contract with its use-case row checks.

Duplicates are judged on what makes an item that item: its question and its reference.
- Same normalised input (case, width, punctuation, spacing ignored): one item is kept, the most
  trusted reference (human > import > incumbent, then source order); a dropped copy with another
  reference is counted as a resolved conflict, not as a duplicate.
- Near duplicates: MinHash over character 5-gram shingles, banded into an LSH index (64
  permutations, 16 bands x 4 rows), confirmed with the exact Jaccard similarity; O(n) in the
  number of items instead of comparing every pair. A confirmed pair asks the same question only
  if what differs between them does too: questions that share a long context (a table, a
  transcript, a system prompt) are compared without it, and another number is another question.
  Same question and same reference: the less trusted copy is dropped. Same question, another
  reference: both are kept and counted as a conflict for a reviewer; nothing distinct is deleted.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

from workhorse.tasks.golden.item import ORIGIN_PRIORITY, GoldenItem, make_item_id, split_for
from workhorse.tasks.golden.pii import ScrubReport, scrub_value

NEEDS_REFERENCE = {"classification", "extraction", "summarization", "qa"}


# ---------------------------------------------------------------- PII


def scrub_item(item: GoldenItem, counts: Counter, test_fraction: float) -> GoldenItem:
    """The item with PII replaced in input, reference and metadata; id and split follow the
    scrubbed input, since that is what is stored and what ids must be stable against."""
    messages = scrub_value(item.input, counts)
    item_id = make_item_id(item.use_case, messages)
    return replace(
        item,
        input=messages,
        reference=scrub_value(item.reference, counts),
        metadata=scrub_value(item.metadata, counts),
        item_id=item_id,
        split=split_for(item_id, test_fraction),
    )


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
    grams = [text] if len(text) <= size else [text[i : i + size] for i in range(len(text) - size + 1)]
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
            key = (band, signature[band * rows : (band + 1) * rows].tobytes())
            buckets.setdefault(key, []).append(index)
    pairs = set()
    for members in buckets.values():
        pairs.update((members[i], other) for i in range(len(members)) for other in members[i + 1 :])
    return pairs


@dataclass
class DedupReport:
    """What dedup did. ``kept + exact + near + conflicts_resolved`` is the number of items in;
    ``conflicts_kept`` are among ``kept`` (near-identical questions with another reference)."""

    kept: int = 0
    exact: int = 0
    near: int = 0
    conflicts_resolved: int = 0
    conflicts_kept: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return self.exact + self.near + self.conflicts_resolved

    @property
    def conflicting_references(self) -> int:
        return self.conflicts_resolved + self.conflicts_kept

    @property
    def removed_share(self) -> float:
        """The share of the items in that dedup removed (0 for an empty set)."""
        return self.removed / (self.kept + self.removed) if self.kept + self.removed else 0.0


EXAMPLES_PER_KIND = 10
SEGMENT_BREAK = re.compile(r"\n+|(?<=[.!?])\s+")
NUMBER = re.compile(r"\d+")
# Shared text this long, and this many times longer than the part that differs, is a context (a
# table under several questions), not the rest of one message with an edit at its end.
CONTEXT_MIN_CHARS = 300
CONTEXT_RATIO = 5


def segments(text: str) -> list[str]:
    """The normalised lines and sentences of a text: the pieces a shared context is made of."""
    return [part for part in map(normalise, SEGMENT_BREAK.split(text)) if part]


def distinguishing_parts(left: list[str], right: list[str]) -> tuple[str, str, int]:
    """What each side says that the other does not (its segments minus the shared ones), and
    the length of what they share."""
    shared = set(left) & set(right)
    return (
        " ".join(s for s in left if s not in shared),
        " ".join(s for s in right if s not in shared),
        sum(len(s) for s in left if s in shared),
    )


def same_question(left: list[str], right: list[str], threshold: float) -> bool:
    """Whether two texts whose shingle Jaccard is >= ``threshold`` ask the same question.

    Another number (year, quarter, amount, id) is another question. Where the shared segments
    are a context, many times longer than what differs (a table, a transcript, a document), the
    differing parts are judged like two questions asked alone: shingle Jaccard >= ``threshold``
    or a few misspelt words. Otherwise the texts are one message with an edit, and their whole
    similarity decides, as it does where one side only adds a segment to the other.
    """
    mine, theirs, shared = distinguishing_parts(left, right)
    if NUMBER.findall(mine) != NUMBER.findall(theirs):
        return False
    if not mine or not theirs or shared < max(CONTEXT_MIN_CHARS, CONTEXT_RATIO * max(len(mine), len(theirs))):
        return True
    return misspelt_only(mine, theirs) or jaccard(shingles(mine), shingles(theirs)) >= threshold


def misspelt_only(mine: str, theirs: str) -> bool:
    """The same words but a few misspelt ones (one word in eight at most). Short questions need
    this: one typo in 60 characters changes ~10 of their shingles, too many for any threshold."""
    left, right = mine.split(), theirs.split()
    changed = [(a, b) for a, b in zip(left, right) if a != b]
    if len(left) != len(right) or len(changed) > max(1, len(left) // 8):
        return False
    return all(_misspelling(a, b) for a, b in changed)


def _misspelling(left: str, right: str) -> bool:
    """One edit apart, two for words of eight letters or more; 'Q1'/'Q2' or 'Al'/'Ed' are not typos."""
    longest = max(len(left), len(right))
    return longest >= 4 and edit_distance(left, right) <= (1 if longest < 8 else 2)


def edit_distance(left: str, right: str) -> int:
    """Levenshtein distance of two words (short strings: the quadratic table is cheap)."""
    previous = list(range(len(right) + 1))
    for i, a in enumerate(left, 1):
        current = [i]
        for j, b in enumerate(right, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def same_reference(left: GoldenItem, right: GoldenItem) -> bool:
    return normalise(left.reference or "") == normalise(right.reference or "")


def input_key(item: GoldenItem) -> str:
    return normalise(" ".join(f"{m.get('role')}: {m.get('content') or ''}" for m in item.input))


def _keeper_order(items: list[GoldenItem]) -> list[int]:
    """Indices by preference: a human reference beats an import beats the incumbent, then order."""
    return sorted(range(len(items)), key=lambda i: (ORIGIN_PRIORITY.get(items[i].label_origin, 9), i))


def _note(report: DedupReport, kind: str, kept: GoldenItem, other: GoldenItem) -> None:
    """Count one decision and keep a few examples (ids, origins, references) for the manifest."""
    setattr(report, kind, getattr(report, kind) + 1)
    if sum(example["kind"] == kind for example in report.examples) < EXAMPLES_PER_KIND:
        report.examples.append(
            {
                "kind": kind,
                "kept": kept.item_id,
                "other": other.item_id,
                "origins": [kept.label_origin, other.label_origin],
                "references": [(kept.reference or "")[:120], (other.reference or "")[:120]],
            }
        )


def drop_exact_duplicates(items: list[GoldenItem], report: DedupReport) -> list[GoldenItem]:
    """One item per normalised input text, the most trusted reference kept: the same input
    cannot be asked twice, and its id would collide. A copy that disagrees is a resolved conflict."""
    kept: dict[str, int] = {}
    for index in _keeper_order(items):
        key = input_key(items[index])
        if key not in kept:
            kept[key] = index
            continue
        survivor = items[kept[key]]
        kind = "exact" if same_reference(survivor, items[index]) else "conflicts_resolved"
        _note(report, kind, survivor, items[index])
    return [items[index] for index in sorted(kept.values())]


def similar_pairs(items: list[GoldenItem], threshold: float) -> dict[int, set[int]]:
    """Neighbours whose whole texts have a shingle Jaccard >= ``threshold`` (LSH candidates, confirmed)."""
    sets = [shingles(item.text) for item in items]
    neighbours: dict[int, set[int]] = {}
    for left, right in candidate_pairs(sets):
        if jaccard(sets[left], sets[right]) >= threshold:
            neighbours.setdefault(left, set()).add(right)
            neighbours.setdefault(right, set()).add(left)
    return neighbours


def drop_near_duplicates(
    items: list[GoldenItem], report: DedupReport, threshold: float = 0.9
) -> list[GoldenItem]:
    """Drop items that ask a more trusted kept item's question again (near-identical where they
    differ) with the same reference; with another reference both stay, counted as a conflict."""
    neighbours = similar_pairs(items, threshold)
    order = _keeper_order(items)
    rank = {index: position for position, index in enumerate(order)}
    parts = {index: segments(items[index].text) for index in neighbours}
    dropped: set[int] = set()
    conflicts: dict[int, int] = {}  # item -> the more trusted item whose question it repeats
    for index in order:  # visited in preference order, so a survivor outranks what it drops
        if index in dropped:
            continue
        for other in sorted(neighbours.get(index, set()) - dropped):
            if rank[other] < rank[index] or not same_question(parts[index], parts[other], threshold):
                continue
            if same_reference(items[index], items[other]):
                dropped.add(other)
                _note(report, "near", items[index], items[other])
            else:
                conflicts.setdefault(other, index)
    for other, index in sorted(conflicts.items(), key=lambda pair: rank[pair[0]]):
        if other not in dropped:  # a conflict that a later pair resolved as a duplicate is gone
            _note(report, "conflicts_kept", items[index], items[other])
    return [item for index, item in enumerate(items) if index not in dropped]


def deduplicate(items: list[GoldenItem], threshold: float = 0.9) -> tuple[list[GoldenItem], DedupReport]:
    report = DedupReport()
    items = drop_near_duplicates(drop_exact_duplicates(items, report), report, threshold)
    report.kept = len(items)
    return items, report


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
    if not isinstance(message, dict) or message.get("role") not in {
        "system",
        "user",
        "assistant",
        "tool",
        "developer",
    }:
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
    from workhorse.tasks.common import contracts

    _register_table_level_split_expectation(contracts)
    contract = contracts.load_contract("golden_item")
    checks = [
        ("input_is_messages", ("input",), input_is_messages),
        ("input_length_ok", ("input",), lambda value: input_length_ok(value, sanity)),
        ("input_script_ok", ("input",), lambda value: input_script_ok(value, sanity)),
        ("reference_present", ("task_type", "reference"), reference_present),
        ("label_in_allowed_set", ("task_type", "reference", "labels"), label_in_allowed_set),
        ("extraction_reference_is_json", ("task_type", "reference"), extraction_reference_is_json),
        (
            "extraction_reference_matches_schema",
            ("task_type", "reference", "json_schema"),
            extraction_reference_matches_schema,
        ),
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
    return [
        f"expect_column_distinct_values_to_contain_set(split, set={'|'.join(required)}): "
        f"no accepted item in split {split!r}"
        for split in required
        if split not in present
    ]


def validate_items(table, sanity: Sanity = Sanity()):
    """Validate a golden_item table: (ContractResult, table-level failures)."""
    from workhorse.tasks.common.contracts import validate_table

    result = validate_table(table, golden_contract(sanity), cast=False)
    return result, check_splits(result.accepted)
