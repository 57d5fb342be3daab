"""Where golden items come from: logged traffic, human label files, and other tools' eval suites.

* ``sample_usage_log``: a stratified sample (time x input length) of one use case's successful
  calls in a canonical usage_log table; the incumbent's answer is the (silver) reference unless a
  human label for that request_id is given.
* ``import_label_file``: CSV/JSONL/JSON written by people, read through a :class:`ColumnMapping`.
* ``import_openai_evals``: OpenAI Evals samples, one JSON per line ``{"input": [...], "ideal": ...}``.
* ``import_promptfoo_csv``: promptfoo test CSV (``vars`` columns plus ``__expected``...).

Every importer returns GoldenItems whose split is already the hash split; scrubbing, dedup and
the contract come after (see golden.py), before anything is stored.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from workhorse.errors import ConfigError, DataError
from workhorse.tasks.golden.item import (
    DEFAULT_TEST_FRACTION,
    TASK_TYPES,
    GoldenItem,
    make_item_id,
    split_for,
    user_messages,
)


@dataclass(frozen=True)
class GoldenSpec:
    """What a use case's golden items must look like (from the plan's use case entry)."""

    use_case: str
    task_type: str
    labels: list[str] | None = None
    json_schema: dict | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION

    def __post_init__(self):
        if self.task_type not in TASK_TYPES:
            raise ConfigError(
                f"use case {self.use_case!r}: unknown task type {self.task_type!r}; "
                f"expected one of {', '.join(TASK_TYPES)}"
            )

    def item(
        self, messages: list[dict], reference, *, source: str, label_origin: str, metadata: dict | None = None
    ) -> GoldenItem:
        """Build an item of this use case; dict/list references become canonical JSON text."""
        item_id = make_item_id(self.use_case, messages)
        if isinstance(reference, (dict, list)):
            reference = json.dumps(reference, sort_keys=True, ensure_ascii=False)
        return GoldenItem(
            item_id=item_id,
            use_case=self.use_case,
            task_type=self.task_type,
            input=messages,
            reference=None if reference is None else str(reference),
            split=split_for(item_id, self.test_fraction),
            source=source,
            label_origin=label_origin,
            labels=self.labels,
            json_schema=self.json_schema,
            metadata=metadata or {},
        )


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a label file hold what.

    ``input``: the text (or a JSON list of messages); ``reference``: the label or expected output
    (objects are stored as JSON); ``id``: an optional row id kept as provenance; ``keep``: columns
    copied into metadata; ``system``: an optional system message put before the input.
    With ``request_id`` instead of ``input``, the file labels logged requests (see
    :func:`read_request_labels`).
    """

    input: str | None = "input"
    reference: str = "reference"
    id: str | None = None
    request_id: str | None = None
    keep: tuple[str, ...] = ()
    system: str | None = None

    @classmethod
    def from_dict(cls, mapping: dict) -> "ColumnMapping":
        mapping = dict(mapping)
        mapping["keep"] = tuple(mapping.get("keep", ()))
        return cls(**mapping)


# ---------------------------------------------------------------- reading files


def read_records(path: Path) -> list[dict]:
    """Rows of a CSV (header row), JSONL, or JSON array file, as dicts.

    Every way a file can be unreadable (binary, not UTF-8, bad or too deep JSON, rows that are
    not objects) is a DataError naming the file and line, never a decoder's own exception.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"label file not found: {path}")
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if path.suffix.lower() == ".json":
        return _objects(_parse_json(text, path, None), path)
    return [
        _object(_parse_json(line, path, number), path, number)
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]


BOMS = ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"), (b"", "utf-8-sig"))


def _read_text(path: Path) -> str:
    """The file as text: UTF-8 (BOM or not) or UTF-16 with its BOM, as spreadsheets save them."""
    data = path.read_bytes()
    encoding = next(name for bom, name in BOMS if data.startswith(bom))
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte {error.start}); binary, compressed, or another "
            "encoding: re-save it as UTF-8 CSV/JSONL"
        ) from None
    if "\x00" in text:
        raise DataError(f"{path}: binary data (NUL bytes), not a CSV/JSONL label file")
    return text


def _parse_json(text: str, path: Path, number: int | None):
    where = f"{path}:{number}" if number else str(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{where}: not JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to be a label record") from None


def _object(value, path: Path, number: int | None) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{path}:{number}: expected a JSON object per record, got {type(value).__name__}")
    return value


def _objects(value, path: Path) -> list[dict]:
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(value).__name__}")
    return [_object(row, path, number) for number, row in enumerate(value, 1)]


def _messages_from(value, system: str | None = None) -> list[dict]:
    """A plain string, a JSON string of messages, or a list of messages -> messages."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, list):
        # Whole messages are kept: tool calls and tool results are part of an agent's input.
        messages = [{**m, "role": m.get("role", "user"), "content": m.get("content")} for m in value]
        return ([{"role": "system", "content": system}] if system else []) + messages
    return user_messages("" if value is None else str(value), system)


def _require_columns(records: list[dict], columns: list[str], path: Path) -> None:
    missing = [column for column in columns if records and column not in records[0]]
    if missing:
        raise ConfigError(f"{path}: column(s) {missing} not found; columns are {sorted(records[0])}")


# ---------------------------------------------------------------- human labels


def import_label_file(path: Path, spec: GoldenSpec, mapping: ColumnMapping) -> list[GoldenItem]:
    """Items from a file people labelled; references are human labels (label_origin=human)."""
    path = Path(path)
    records = read_records(path)
    _require_columns(records, [c for c in (mapping.input, mapping.reference, mapping.id) if c], path)
    source = f"labels:{path.name}"
    return [
        spec.item(
            _messages_from(row[mapping.input], mapping.system),
            _blank_to_none(row[mapping.reference]),
            source=source,
            label_origin="human",
            metadata=_provenance(row, mapping, number),
        )
        for number, row in enumerate(records, 1)
    ]


def _provenance(row: dict, mapping: ColumnMapping, number: int) -> dict:
    metadata = {"row": number}
    if mapping.id:
        metadata["source_id"] = row[mapping.id]
    metadata.update({column: row.get(column) for column in mapping.keep})
    return metadata


def _blank_to_none(value):
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def read_request_labels(path: Path, mapping: ColumnMapping) -> dict[str, str]:
    """request_id -> human reference, for label files that label logged requests by id."""
    records = read_records(Path(path))
    _require_columns(records, [mapping.request_id, mapping.reference], Path(path))
    labels = {}
    for row in records:
        reference = _blank_to_none(row[mapping.reference])
        if reference is not None:
            labels[str(row[mapping.request_id])] = (
                json.dumps(reference, sort_keys=True)
                if isinstance(reference, (dict, list))
                else str(reference)
            )
    return labels


# ---------------------------------------------------------------- OpenAI Evals


def import_openai_evals(path: Path, spec: GoldenSpec) -> list[GoldenItem]:
    """OpenAI Evals samples JSONL: ``{"input": [messages] | "text", "ideal": str | [str, ...]}``.

    A list ``ideal`` means several acceptable answers: the first is the reference, all are kept
    in ``metadata["acceptable_answers"]`` for the QA scorer.
    """
    path = Path(path)
    items = []
    for number, row in enumerate(read_records(path), 1):
        if "input" not in row:
            raise DataError(f"{path}:{number}: an OpenAI Evals sample needs an 'input' field")
        ideal = row.get("ideal")
        metadata = {"row": number}
        if isinstance(ideal, list):
            metadata["acceptable_answers"] = [str(answer) for answer in ideal]
            ideal = ideal[0] if ideal else None
        items.append(
            spec.item(
                _messages_from(row["input"]),
                ideal,
                source=f"openai_evals:{path.name}",
                label_origin="import",
                metadata=metadata,
            )
        )
    return items


# ---------------------------------------------------------------- promptfoo

ASSERTION = re.compile(
    r"^(?P<type>(?:not-)?[a-z][a-z-]*)(?:\((?P<threshold>[0-9.]+)\))?(?::(?P<value>.*))?$", re.S
)
# Assertion types whose value is the expected output itself, per task type.
EXACT_TYPES = {"equals"}
LOOSE_TYPES = {"contains", "icontains", "starts-with"}
LOOSE_TASKS = {"qa", "summarization", "generation"}
KNOWN_TYPES = (
    EXACT_TYPES
    | LOOSE_TYPES
    | {
        "is-json",
        "contains-json",
        "regex",
        "contains-any",
        "contains-all",
        "icontains-any",
        "icontains-all",
        "javascript",
        "python",
        "llm-rubric",
        "similar",
        "levenshtein",
        "rouge-n",
        "bleu",
        "model-graded-closedqa",
        "answer-relevance",
        "factuality",
        "is-valid-openai-tools-call",
        "latency",
        "cost",
        "perplexity",
    }
)
LEGACY_PREFIXES = {"fn": "javascript", "eval": "javascript", "grade": "llm-rubric"}


def parse_promptfoo_assertion(expected: str) -> dict:
    """``"contains: Paris"`` -> ``{"type": "contains", "value": "Paris"}``; a bare value is
    ``equals`` as in promptfoo; ``similar(0.8):x`` keeps its threshold."""
    text = expected.strip()
    match = ASSERTION.match(text)
    if match:
        kind = LEGACY_PREFIXES.get(match["type"], match["type"])
        if kind in KNOWN_TYPES or kind.removeprefix("not-") in KNOWN_TYPES:
            assertion = {"type": kind, "value": (match["value"] or "").strip() or None}
            if match["threshold"]:
                assertion["threshold"] = float(match["threshold"])
            return assertion
    return {"type": "equals", "value": text}


def reference_from_assertions(assertions: list[dict], task_type: str) -> str | None:
    """The expected output promptfoo's assertions pin down: an ``equals`` value, or for free-text
    tasks a ``contains``/``icontains``/``starts-with`` value. Other types give no reference."""
    for assertion in assertions:
        if assertion["type"] in EXACT_TYPES:
            return assertion["value"]
    if task_type in LOOSE_TASKS:
        for assertion in assertions:
            if assertion["type"] in LOOSE_TYPES:
                return assertion["value"]
    return None


@dataclass(frozen=True)
class PromptfooOptions:
    """How promptfoo ``vars`` become messages: a ``{{var}}`` template, or one input variable."""

    prompt: str | None = None
    input_var: str | None = None
    system: str | None = None
    candidates: tuple[str, ...] = field(default=("input", "query", "question", "text", "prompt", "message"))


def _render(template: str, variables: dict) -> str:
    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            raise DataError(f"promptfoo prompt uses {{{{{name}}}}} but the CSV has no column {name!r}")
        return str(variables[name])

    return re.sub(r"\{\{\s*([A-Za-z_][\w]*)\s*\}\}", substitute, template)


def _promptfoo_text(variables: dict, options: PromptfooOptions) -> str:
    if options.prompt:
        return _render(options.prompt, variables)
    if options.input_var:
        if options.input_var not in variables:
            raise ConfigError(f"promptfoo CSV has no var {options.input_var!r}; vars are {sorted(variables)}")
        return str(variables[options.input_var])
    if len(variables) == 1:
        return str(next(iter(variables.values())))
    for name in options.candidates:
        if name in variables:
            return str(variables[name])
    raise ConfigError(
        f"promptfoo CSV has several vars {sorted(variables)}: name the input with input_var or a prompt"
    )


def promptfoo_row_to_item(
    row: dict, spec: GoldenSpec, options: PromptfooOptions, source: str, number: int
) -> GoldenItem:
    """One promptfoo test row: ``__expected*`` are assertions, ``__prefix``/``__suffix`` wrap the
    prompt, ``__description`` and ``__metadata:*`` are kept, every other column is a var."""
    variables = {k: v for k, v in row.items() if k and not k.startswith("__")}
    assertions = [
        parse_promptfoo_assertion(v)
        for k, v in sorted(row.items())
        if k and k.startswith("__expected") and v and v.strip()
    ]
    text = (row.get("__prefix") or "") + _promptfoo_text(variables, options) + (row.get("__suffix") or "")
    metadata = {"row": number, "vars": variables, "assertions": assertions}
    if row.get("__description"):
        metadata["description"] = row["__description"]
    metadata.update({k.split(":", 1)[1]: v for k, v in row.items() if k and k.startswith("__metadata:")})
    return spec.item(
        user_messages(text, options.system),
        reference_from_assertions(assertions, spec.task_type),
        source=source,
        label_origin="import",
        metadata=metadata,
    )


def import_promptfoo_csv(
    path: Path, spec: GoldenSpec, options: PromptfooOptions | None = None
) -> list[GoldenItem]:
    """Items from a promptfoo test CSV (see :func:`promptfoo_row_to_item` for the columns)."""
    path = Path(path)
    options = options or PromptfooOptions()
    try:
        return [
            promptfoo_row_to_item(row, spec, options, f"promptfoo:{path.name}", number)
            for number, row in enumerate(read_records(path), 1)
        ]
    except (ConfigError, DataError) as error:
        message = str(error)
        raise type(error)(message if str(path) in message else f"{path}: {message}") from None


# ---------------------------------------------------------------- logged traffic


@dataclass(frozen=True)
class SampleOptions:
    """How many logged requests to take and how to stratify them.

    Strata are equal-width time windows x equal-count input-length buckets, so a quiet week or
    the rare long prompts still get items. Identical requests count once (the sample is spent
    on distinct inputs); near duplicates are removed after scrubbing. Within a stratum rows are
    ranked by md5(seed, id): the same log gives the same sample, with no random state to carry
    around.
    """

    size: int = 200
    time_buckets: int = 4
    length_buckets: int = 3
    seed: str = "workhorse"


STRATA_SQL = """
WITH base AS (
    SELECT request_id, ts, model, request, response, length(request) AS n_chars
    FROM {source}
    WHERE use_case = $use_case AND status = 'ok' AND request IS NOT NULL AND response IS NOT NULL
    -- a repeated request is one candidate, not many: the sample is spent on distinct inputs
    QUALIFY row_number() OVER (PARTITION BY request ORDER BY md5($seed || request_id)) = 1
), bounds AS (SELECT min(epoch(ts)) AS lo, max(epoch(ts)) AS hi FROM base)
SELECT base.*,
       least($time_buckets - 1, floor((epoch(ts) - lo) / greatest(hi - lo, 1e-9) * $time_buckets))::INT AS time_bucket,
       ntile($length_buckets) OVER (ORDER BY n_chars, request_id) AS length_bucket,
       md5($seed || request_id) AS rank_key
FROM base, bounds
"""  # noqa: E501


def _source_sql(usage) -> tuple[str, object]:
    """A FROM clause for an Arrow table, a parquet file, or a folder of parquet files."""
    if isinstance(usage, (str, Path)):
        path = Path(usage)
        pattern = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
        return "read_parquet('{}', union_by_name=true)".format(pattern.replace("'", "''")), None
    return "usage_table", usage


def allocate(sizes: dict, total: int) -> dict:
    """Largest-remainder proportional allocation, at least one per stratum when total allows."""
    population = sum(sizes.values())
    if population <= total:
        return dict(sizes)
    floor_one = total >= len(sizes)
    quotas = {key: max(int(total * size / population), 1 if floor_one else 0) for key, size in sizes.items()}
    remainders = sorted(sizes, key=lambda key: (-(total * sizes[key] / population) % 1, str(key)))
    for key in remainders:
        if sum(quotas.values()) >= total:
            break
        if quotas[key] < sizes[key]:
            quotas[key] += 1
    while sum(quotas.values()) > total:  # the floors of one can overshoot: trim the largest
        largest = max(quotas, key=lambda key: (quotas[key], str(key)))
        quotas[largest] -= 1
    return {key: min(quota, sizes[key]) for key, quota in quotas.items()}


def stratified_sample(usage, use_case: str, options: SampleOptions = SampleOptions()):
    """The sampled usage rows (pyarrow Table) of one use case, with their stratum columns."""
    import duckdb

    source, table = _source_sql(usage)
    connection = duckdb.connect()
    if table is not None:
        connection.register("usage_table", table)
    params = {
        "use_case": use_case,
        "time_buckets": options.time_buckets,
        "length_buckets": options.length_buckets,
        "seed": options.seed,
    }
    strata = _arrow(connection, STRATA_SQL.format(source=source), params)
    return _take_quotas(connection, strata, options.size)


def _take_quotas(connection, strata, size: int):
    """Keep the first ``quota`` rows (by rank key) of every stratum."""
    import pyarrow as pa

    connection.register("strata", strata)
    counts = _arrow(connection, "SELECT time_bucket, length_bucket, count(*) AS n FROM strata GROUP BY ALL")
    sizes = {(row["time_bucket"], row["length_bucket"]): row["n"] for row in counts.to_pylist()}
    quotas = allocate(sizes, size)
    quota_rows = [{"time_bucket": t, "length_bucket": l, "quota": q} for (t, l), q in quotas.items()]
    connection.register(
        "quotas",
        pa.Table.from_pylist(
            quota_rows,
            schema=pa.schema(
                [("time_bucket", pa.int32()), ("length_bucket", pa.int64()), ("quota", pa.int64())]
            ),
        ),
    )
    return _arrow(
        connection,
        """
        SELECT * EXCLUDE (position, quota) FROM (
            SELECT s.*, q.quota, row_number() OVER (PARTITION BY s.time_bucket, s.length_bucket ORDER BY rank_key) AS position
            FROM strata s JOIN quotas q USING (time_bucket, length_bucket))
        WHERE position <= quota ORDER BY request_id""",  # noqa: E501
    )


def _arrow(connection, query: str, params: dict | None = None):
    """A query's result as a pyarrow Table (duckdb 2 renamed ``arrow()`` to ``to_arrow_table()``)."""
    relation = connection.sql(query, params=params)
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()


def _request_messages(request: str) -> list[dict]:
    """The messages of a logged request: a JSON list, a JSON object with "messages", or text."""
    try:
        value = json.loads(request)
    except (TypeError, json.JSONDecodeError):
        return user_messages(str(request))
    if isinstance(value, dict):
        value = value.get("messages", [])
    return _messages_from(value)


def sample_usage_log(
    usage,
    spec: GoldenSpec,
    options: SampleOptions = SampleOptions(),
    human_labels: dict[str, str] | None = None,
) -> list[GoldenItem]:
    """Golden items from logged traffic: the human label for the request when there is one,
    else the incumbent's logged answer (label_origin=incumbent, a silver reference)."""
    human_labels = human_labels or {}
    items = []
    for row in stratified_sample(usage, spec.use_case, options).to_pylist():
        human = human_labels.get(str(row["request_id"]))
        reference = human if human is not None else (row["response"] or "").strip()
        metadata = {
            "request_id": row["request_id"],
            "ts": str(row["ts"]),
            "model": row["model"],
            "stratum": f"t{row['time_bucket']}-l{row['length_bucket']}",
        }
        if human is not None:  # the incumbent's answer is still what the evaluation replays
            metadata["incumbent_output"] = row["response"]
        items.append(
            spec.item(
                _request_messages(row["request"]),
                reference,
                source="usage_log",
                label_origin="human" if human is not None else "incumbent",
                metadata=metadata,
            )
        )
    return items
