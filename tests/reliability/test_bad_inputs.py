"""Every reader against the hostile corpus: a clear workhorse error naming the file, or rows that
are accepted or quarantined with a reason; never another exception type, never a silent loss."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.reliability.corpus import CONTROL, INJECTIONS, NAMES, SCRIPT
from workhorse.config import Plan, load_plan
from workhorse.errors import ContractError, WorkhorseError
from workhorse.tasks.audit import usage
from workhorse.tasks.audit.assessment import audit_logs
from workhorse.tasks.common.html import write_report
from workhorse.tasks.golden import sources as gs
from workhorse.tasks.monitor.window import read_traffic_file

SPEC = gs.GoldenSpec("ticket-routing", "classification", labels=["billing", "shipping"])


def _audit(path: Path, root: Path):
    return audit_logs([path], Plan(), workspace_root=root, max_bad_ratio=1.0)


# reader name -> call(path, workspace root); each is a public entry point that reads a user's file.
READERS = {
    "detect_format": lambda p, root: usage.detect_format(p),
    "read_usage": lambda p, root: usage.read_usage([p]),
    **{
        f"read_usage[{fmt}]": (lambda fmt: lambda p, root: usage.read_usage([p], fmt))(fmt)
        for fmt in usage.FORMATS
    },
    "audit": _audit,
    "read_records": lambda p, root: gs.read_records(p),
    "import_label_file": lambda p, root: gs.import_label_file(
        p, SPEC, gs.ColumnMapping(input="request", reference="response")
    ),
    "import_openai_evals": lambda p, root: gs.import_openai_evals(p, SPEC),
    "import_promptfoo_csv": lambda p, root: gs.import_promptfoo_csv(
        p, SPEC, gs.PromptfooOptions(input_var="request")
    ),
    "load_plan": lambda p, root: load_plan(p),
    "read_traffic_file": lambda p, root: read_traffic_file(p),
}

# Rows each readable log holds: what the audit must account for (read == accepted + quarantined).
EXPECTED_READ = {
    "truncated.jsonl": 3,
    "truncated.json": 1,
    "latin1.csv": 1,
    "latin1.jsonl": 1,
    "huge_line.jsonl": 1,
    "injection.csv": 5,
    "injection.jsonl": 5,
    "control_chars.jsonl": 2,
    "control_chars.csv": 2,
    "parquet.jsonl": 2,
    "parquet.csv": 2,
}


def call_reader(reader: str, path: Path, root: Path):
    """The reader's result, or None after a WorkhorseError that names the file."""
    try:
        return READERS[reader](path, root)
    except WorkhorseError as error:
        assert path.name in str(error), f"{reader}: the error does not name the file: {error}"
        return None


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_reader_gives_a_clear_error_or_rows(reader, name, corpus, tmp_path):
    """Any other exception type (KeyError, UnicodeDecodeError, RecursionError, ArrowInvalid,
    duckdb's BinderException...) escapes ``call_reader`` and fails the test."""
    result = call_reader(reader, corpus[name], tmp_path)
    if reader == "audit" and result is not None:
        assert_accounted(result, name)


def assert_accounted(result, name: str) -> None:
    """No silent loss: every row read is accepted or quarantined, and a quarantined row says why."""
    assert result.read == result.accepted + result.quarantined
    if name in EXPECTED_READ:
        assert result.read == EXPECTED_READ[name]
    if result.quarantined:
        reasons = pq.read_table(result.quarantine_path).column("_reason").to_pylist()
        assert len(reasons) == result.quarantined and all(reasons)


@pytest.mark.parametrize("reader", ["import_label_file", "import_openai_evals", "import_promptfoo_csv"])
@pytest.mark.parametrize(
    "name", ["injection.jsonl", "control_chars.jsonl", "latin1.jsonl", "huge_line.jsonl"]
)
def test_importers_keep_every_record(reader, name, corpus, tmp_path):
    """A file the importer accepts yields one item per record: nothing dropped on the way."""
    items = call_reader(reader, corpus[name], tmp_path)
    if items is not None:
        assert len(items) == len(gs.read_records(corpus[name]))


@pytest.mark.parametrize("name", ["truncated.csv", "yaml.csv", "header_only.csv", "scalar.jsonl"])
def test_audit_names_missing_columns(name, corpus, tmp_path):
    """A file that is not a usage log fails as a contract error listing what it lacks, and its
    rows are quarantined (none silently dropped)."""
    with pytest.raises(ContractError, match=r"expect_column_to_exist\(model\): the column is missing"):
        _audit(corpus[name], tmp_path)
    for quarantine in (tmp_path / "quarantine").glob("*.parquet"):
        assert all(pq.read_table(quarantine).column("_reason").to_pylist())


@pytest.mark.parametrize("name", ["utf16_bom.csv", "png.csv", "gzip.jsonl", "empty.jsonl"])
def test_usage_errors_say_what_is_wrong(name, corpus):
    with pytest.raises(WorkhorseError, match=r"UTF-16|binary|empty"):
        usage.read_usage([corpus[name]])


def test_golden_reader_decodes_utf16_with_bom(corpus):
    """Spreadsheets save 'Unicode text' as UTF-16 with a BOM: read it rather than refuse it."""
    assert len(gs.read_records(corpus["utf16_bom.jsonl"])) == 3


@pytest.mark.parametrize("name", ["injection.jsonl", "control_chars.jsonl"])
def test_audit_report_escapes_hostile_text(name, corpus, tmp_path):
    """Use case names and prompts reach the HTML report only escaped (no script, no formula)."""
    result = _audit(corpus[name], tmp_path)
    assert result.accepted == result.read
    report = Path(write_report.fn(result, Plan(), str(tmp_path / "report.html"))).read_text()
    assert SCRIPT not in report and "<script>alert" not in report
    hostile = INJECTIONS if name.startswith("injection") else [SCRIPT]
    assert any(html.escape(text) in report or html.escape(text, quote=False) in report for text in hostile)


@pytest.mark.parametrize("name", ["control_chars.jsonl", "control_chars.csv"])
def test_control_characters_survive_as_data(name, corpus):
    """Prompts with NUL, ANSI escapes and bidi overrides are data: kept exactly, not dropped."""
    requests = usage.read_usage([corpus[name]]).column("request").to_pylist()
    assert json.loads(requests[0])[0]["content"] == CONTROL
