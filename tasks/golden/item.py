"""The golden_item record: one evaluation item, its pyarrow schema, its id and its split.

Ids are content addresses (use case + input messages), so the same question from two sources
is one item, a relabelled item keeps its id, and a refresh is reproducible from its inputs.
The dev/test split is a pure function of the id, so adding items never moves old ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

TASK_TYPES = ("classification", "extraction", "summarization", "qa", "generation")
SPLITS = ("dev", "test")
LABEL_ORIGINS = ("human", "import", "incumbent")
# When two sources give the same item, the more trustworthy reference wins.
ORIGIN_PRIORITY = {"human": 0, "import": 1, "incumbent": 2}
DEFAULT_TEST_FRACTION = 0.5


@dataclass(frozen=True)
class GoldenItem:
    """One golden row. ``input`` is a list of chat messages ``{"role", "content"}``.

    ``reference`` is the expected output as text: the label (classification), a JSON document
    (extraction), a summary or an answer. ``label_origin`` says who gave it: ``human`` (a label
    file), ``import`` (an eval suite), or ``incumbent`` (the closed model's logged answer, a
    silver reference). ``metadata`` keeps provenance (source row id, timestamp) and, for QA,
    ``acceptable_answers``.
    """

    item_id: str
    use_case: str
    task_type: str
    input: list[dict]
    reference: str | None
    split: str
    source: str
    label_origin: str
    labels: list[str] | None = None
    json_schema: dict | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def silver(self) -> bool:
        """True when the reference is the incumbent's answer rather than a human's."""
        return self.label_origin == "incumbent"

    @property
    def text(self) -> str:
        """The user-visible input as one string (for dedup, length checks and display)."""
        return "\n".join(str(message.get("content") or "") for message in self.input)

    def with_split(self, split: str) -> "GoldenItem":
        return replace(self, split=split)


def golden_schema():
    """The pyarrow schema of a stored golden set (JSON columns are strings: stable bytes)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("item_id", pa.string()),
            ("use_case", pa.string()),
            ("task_type", pa.string()),
            ("input", pa.string()),
            ("reference", pa.string()),
            ("labels", pa.list_(pa.string())),
            ("json_schema", pa.string()),
            ("split", pa.string()),
            ("source", pa.string()),
            ("label_origin", pa.string()),
            ("metadata", pa.string()),
        ]
    )


def canonical_json(value) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes and hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_item_id(use_case: str, messages: list[dict]) -> str:
    """A content address for (use case, input messages); 16 hex digits are plenty per use case."""
    digest = hashlib.sha256(f"{use_case}\x1f{canonical_json(messages)}".encode()).hexdigest()
    return f"{use_case}-{digest[:16]}"


def split_for(item_id: str, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """dev or test from the id's hash alone, so membership never depends on the other items."""
    bucket = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return "test" if bucket < test_fraction else "dev"


def user_messages(text: str, system: str | None = None) -> list[dict]:
    """Wrap a plain text input as chat messages."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": text}]


def item_to_row(item: GoldenItem) -> dict:
    """A GoldenItem as a row of :func:`golden_schema` (JSON fields serialised canonically)."""
    row = asdict(item)
    row["input"] = canonical_json(item.input)
    row["json_schema"] = canonical_json(item.json_schema) if item.json_schema is not None else None
    row["metadata"] = canonical_json(item.metadata or {})
    return row


def row_to_item(row: dict) -> GoldenItem:
    """The inverse of :func:`item_to_row`."""
    return GoldenItem(
        item_id=row["item_id"],
        use_case=row["use_case"],
        task_type=row["task_type"],
        input=json.loads(row["input"]),
        reference=row["reference"],
        split=row["split"],
        source=row["source"],
        label_origin=row["label_origin"],
        labels=row.get("labels"),
        json_schema=json.loads(row["json_schema"]) if row.get("json_schema") else None,
        metadata=json.loads(row["metadata"]) if row.get("metadata") else {},
    )


def items_to_table(items: list[GoldenItem]):
    """Items -> pyarrow Table in :func:`golden_schema`, sorted by id for stable bytes."""
    import pyarrow as pa

    rows = [item_to_row(item) for item in sorted(items, key=lambda item: item.item_id)]
    return pa.Table.from_pylist(rows, schema=golden_schema())


def table_to_items(table) -> list[GoldenItem]:
    return [row_to_item(row) for row in table.to_pylist()]


def content_hash(items: list[GoldenItem]) -> str:
    """sha256 over the canonical rows sorted by id: equal content, equal hash, on any machine."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda item: item.item_id):
        digest.update(canonical_json(item_to_row(item)).encode())
        digest.update(b"\n")
    return digest.hexdigest()
