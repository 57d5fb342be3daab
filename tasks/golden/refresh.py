"""Golden dataset refresh (playbook step 2): sources -> scrub -> dedup -> contract -> version.

The evaluation step reads golden sets through :func:`load_golden` (or :func:`dev_items` for
prompt tuning); everything else here builds them. The order is the safety argument: PII is
scrubbed right after reading, so the ids, the quarantine file, the versions and the reports
only ever see scrubbed text.

Modules: golden_item (record, ids, splits), golden_sources (logs, label files, OpenAI Evals,
promptfoo), golden_clean (PII, dedup, sanity, contract), golden_versions (immutable versions).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workhorse.config import GOLDEN_SOURCE_KINDS
from workhorse.errors import ConfigError, ContractError
from workhorse.tasks.golden.clean import Sanity, deduplicate, scrub_items, validate_items
from workhorse.tasks.golden.item import GoldenItem, golden_schema, items_to_table, table_to_items
from workhorse.tasks.golden.sources import (
    ColumnMapping,
    GoldenSpec,
    PromptfooOptions,
    SampleOptions,
    import_label_file,
    import_openai_evals,
    import_promptfoo_csv,
    read_request_labels,
    sample_usage_log,
)
from workhorse.tasks.golden.versions import (
    dev_items,
    golden_dir,
    keep_previous_splits,
    load_golden,
    read_manifest,
    versions,
    write_version,
)

__all__ = [
    "GoldenItem",
    "GoldenSpec",
    "SourceSpec",
    "RefreshOptions",
    "RefreshReport",
    "load_golden",
    "dev_items",
    "refresh_golden",
    "golden_schema",
    "versions",
    "read_manifest",
    "specs_from_plan",
    "summary_rows",
    "summary_markdown",
    "refresh_golden_set",
]

SOURCE_KINDS = GOLDEN_SOURCE_KINDS  # one list, declared with the plan's golden section


@dataclass(frozen=True)
class SourceSpec:
    """One input of a golden set, as written under ``golden.sources`` in the plan.

    ``kind``: usage_log (``path`` optional: the workspace's usage/ folder), labels (a label file
    with a column ``mapping``), request_labels (human labels for logged requests, by request_id),
    openai_evals, promptfoo (``prompt`` template or ``input_var``).
    """

    kind: str
    path: str | None = None
    mapping: dict = field(default_factory=dict)
    prompt: str | None = None
    input_var: str | None = None

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(
                f"golden source kind {self.kind!r} is unknown; use one of {', '.join(SOURCE_KINDS)}"
            )
        if self.kind not in ("usage_log",) and not self.path:
            raise ConfigError(f"golden source {self.kind!r} needs a path")

    def describe(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value}


@dataclass(frozen=True)
class RefreshOptions:
    sample: SampleOptions = SampleOptions()
    near_duplicate_threshold: float = 0.9
    sanity: Sanity = Sanity()
    max_bad_ratio: float = 0.25
    # Above this share of rows removed as duplicates the refresh warns: distinct items sharing a
    # template or a context may have been merged, or the source repeats itself a lot.
    max_duplicate_share: float = 0.2


@dataclass
class RefreshReport:
    """What one refresh did, for the summary, the artifacts and the closing numbers."""

    use_case: str
    rows_in: dict = field(default_factory=dict)
    scrubbed: dict = field(default_factory=dict)
    dedup_kept: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    conflicts_resolved: int = 0
    conflicts_kept: int = 0
    dedup_examples: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    quarantined: int = 0
    quarantine_reasons: dict = field(default_factory=dict)
    quarantine_path: str | None = None
    accepted: int = 0
    version: int | None = None
    created: bool = False
    content_hash: str | None = None
    diff: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def duplicates_removed(self) -> int:
        return self.exact_duplicates + self.near_duplicates + self.conflicts_resolved

    @property
    def conflicting_references(self) -> int:
        return self.conflicts_resolved + self.conflicts_kept

    @property
    def seconds(self) -> float:
        return round(sum(self.timings.values()), 3)

    @contextmanager
    def timed(self, stage: str):
        """Seconds per stage (read, scrub, dedup, contract, store) for the benchmark and the logs."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - started, 4)

    def stats(self) -> dict:
        """The numbers that describe the cleaning (stored in the manifest)."""
        return {
            "rows_in": self.rows_in,
            "scrubbed": self.scrubbed,
            "dedup_kept": self.dedup_kept,
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "conflicting_references": self.conflicting_references,
            "conflicts_resolved": self.conflicts_resolved,
            "conflicts_kept": self.conflicts_kept,
            "dedup_examples": self.dedup_examples,
            "quarantined": self.quarantined,
            "quarantine_reasons": self.quarantine_reasons,
        }

    def record_dedup(self, dedup, max_share: float) -> None:
        """Copy the dedup counts, and warn when it removed more than ``max_share`` of the rows."""
        self.dedup_kept, self.exact_duplicates, self.near_duplicates = dedup.kept, dedup.exact, dedup.near
        self.conflicts_resolved, self.conflicts_kept = dedup.conflicts_resolved, dedup.conflicts_kept
        self.dedup_examples = dedup.examples
        if dedup.removed_share > max_share:
            self.warnings.append(
                f"dedup removed {dedup.removed} of {dedup.kept + dedup.removed} rows "
                f"({dedup.removed_share:.0%}, more than golden.max_duplicate_share {max_share:.0%}): "
                f"{dedup.exact} exact, {dedup.near} near, {dedup.conflicts_resolved} conflicting "
                f"references resolved by label origin; check the examples in the manifest"
            )


# ---------------------------------------------------------------- sources


def read_source(
    source: SourceSpec, spec: GoldenSpec, options: RefreshOptions, workspace, human_labels: dict
) -> list[GoldenItem]:
    """Items from one source (request_labels give none: they relabel the usage_log sample)."""
    path = Path(source.path) if source.path else None
    if source.kind == "usage_log":
        usage = path or golden_usage_default(workspace)
        return sample_usage_log(usage, spec, options.sample, human_labels)
    if source.kind == "labels":
        return import_label_file(path, spec, ColumnMapping.from_dict(source.mapping))
    if source.kind == "openai_evals":
        return import_openai_evals(path, spec)
    if source.kind == "promptfoo":
        return import_promptfoo_csv(
            path, spec, PromptfooOptions(prompt=source.prompt, input_var=source.input_var)
        )
    return []


def golden_usage_default(workspace) -> Path:
    """The audit writes canonical usage parquet under <workspace>/usage/."""
    from workhorse.tasks.golden.versions import _workspace

    return _workspace(workspace).subdir("usage")


def collect(
    spec: GoldenSpec, sources: list[SourceSpec], options: RefreshOptions, workspace, report: RefreshReport
) -> list[GoldenItem]:
    """All sources' items in source order (the order breaks ties between duplicates)."""
    human_labels: dict[str, str] = {}
    for source in sources:
        if source.kind == "request_labels":
            human_labels.update(
                read_request_labels(Path(source.path), ColumnMapping.from_dict(source.mapping))
            )
    items: list[GoldenItem] = []
    for source in sources:
        found = read_source(source, spec, options, workspace, human_labels)
        report.rows_in[f"{source.kind}:{Path(source.path).name if source.path else 'usage'}"] = len(found)
        items += found
    return items


# ---------------------------------------------------------------- the refresh


def refresh_golden(
    workspace, spec: GoldenSpec, sources: list[SourceSpec], options: RefreshOptions = RefreshOptions()
) -> RefreshReport:
    """Build the golden set of one use case from its sources and store it as a new version if
    its content changed. Raises ContractError (and writes no version) when a split is empty or
    more than ``max_bad_ratio`` of the rows break the contract; failing rows are quarantined
    either way."""
    report = RefreshReport(spec.use_case)
    with report.timed("read"):
        items = collect(spec, sources, options, workspace, report)
    with report.timed("scrub"):
        items, scrub = scrub_items(items, spec.test_fraction)
        report.scrubbed = scrub.as_dict()
    with report.timed("dedup"):
        items, dedup = deduplicate(items, options.near_duplicate_threshold)
        report.record_dedup(dedup, options.max_duplicate_share)
    with report.timed("contract"):
        found = versions(workspace, spec.use_case)
        items = keep_previous_splits(items, load_golden(workspace, spec.use_case, found[-1]) if found else [])
        accepted = check_contract(workspace, spec.use_case, items, options, report)
    with report.timed("store"):
        store(workspace, spec, sources, accepted, report)
    return report


def store(
    workspace, spec: GoldenSpec, sources: list[SourceSpec], items: list[GoldenItem], report: RefreshReport
) -> None:
    """Write the version (if the content is new) and copy its identity into the report."""
    stored = write_version(
        workspace,
        spec.use_case,
        items,
        [s.describe() for s in sources],
        extra={"refresh": report.stats(), "warnings": report.warnings, "test_fraction": spec.test_fraction},
    )
    report.version, report.created, report.content_hash = (
        stored.version,
        stored.created,
        stored.manifest["content_hash"],
    )
    report.counts, report.diff = stored.manifest["counts"], stored.manifest["diff"] if stored.created else {}


def quarantine_path(workspace, use_case: str) -> Path:
    """Like the audit's: ``<workspace>/quarantine/golden_item-<use case>-<UTC time>.jsonl``, one per
    refresh and never overwritten, so a reviewer can fix labels from any past run."""
    from datetime import datetime, timezone

    from workhorse.tasks.golden.versions import _workspace

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return (
        _workspace(workspace).subdir("quarantine")
        / f"golden_item-{golden_dir(workspace, use_case).name}-{stamp}.jsonl"
    )


def check_contract(
    workspace, use_case: str, items: list[GoldenItem], options: RefreshOptions, report: RefreshReport
) -> list[GoldenItem]:
    """Validate against golden_item; write the quarantine file; return the accepted items."""
    from workhorse.tasks.common.contracts import enforce_bad_row_ratio, write_quarantine

    result, table_failures = validate_items(items_to_table(items), options.sanity)
    report.quarantined, report.accepted = result.quarantined_count, result.accepted_count
    report.quarantine_reasons = dict(result.failures)
    path = quarantine_path(workspace, use_case) if result.quarantined_count else None
    if path:
        report.quarantine_path = str(write_quarantine(result, path))
    if table_failures:
        raise ContractError(
            f"golden set {use_case!r} breaks the golden_item contract: {'; '.join(table_failures)} "
            f"({result.accepted_count} items accepted; quarantine: {path})"
        )
    enforce_bad_row_ratio(result, options.max_bad_ratio, f"golden set {use_case!r} (quarantine: {path})")
    return table_to_items(result.accepted)


# ---------------------------------------------------------------- plan -> specs


def specs_from_plan(
    plan: dict, base_dir: Path | None = None
) -> list[tuple[GoldenSpec, list[SourceSpec], RefreshOptions]]:
    """Golden settings of every use case in a plan (workhorse.yaml as a dict).

    Reads ``use_cases`` (a mapping name -> entry, or a list of entries with ``name``); each entry
    has ``task_type``, ``labels``/``json_schema`` and an optional ``golden`` section with
    ``sources``, ``size``, ``test_fraction``, ``near_duplicate_threshold``, ``max_bad_ratio``,
    ``max_duplicate_share`` (warn when dedup removes more of the rows; default 0.2).
    Use cases marked ``workload: frontier`` are skipped unless they have a ``golden`` section.
    Without ``golden.sources`` the set is sampled from the usage log. Relative paths are
    resolved against ``base_dir`` (the plan's folder).
    """
    entries = plan.get("use_cases") or {}
    if isinstance(entries, dict):
        entries = [{"name": name, **(entry or {})} for name, entry in entries.items()]
    # Frontier work stays on its model: no golden set unless the plan asks for one explicitly.
    chosen = [entry for entry in entries if entry.get("workload") != "frontier" or entry.get("golden")]
    return [_spec_from_entry(entry, base_dir) for entry in chosen]


def _spec_from_entry(
    entry: dict, base_dir: Path | None
) -> tuple[GoldenSpec, list[SourceSpec], RefreshOptions]:
    golden = entry.get("golden") or {}
    spec = GoldenSpec(
        use_case=entry["name"],
        task_type=entry.get("task_type", "generation"),
        labels=entry.get("labels") or None,
        json_schema=entry.get("json_schema"),
        test_fraction=float(golden.get("test_fraction", 0.5)),
    )
    sources = [_source(raw, base_dir) for raw in golden.get("sources") or [{"kind": "usage_log"}]]
    options = RefreshOptions(
        sample=SampleOptions(size=int(golden.get("size", 200))),
        near_duplicate_threshold=float(golden.get("near_duplicate_threshold", 0.9)),
        max_bad_ratio=float(golden.get("max_bad_ratio", 0.25)),
        max_duplicate_share=float(golden.get("max_duplicate_share", 0.2)),
    )
    return spec, sources, options


def _source(raw: dict, base_dir: Path | None) -> SourceSpec:
    raw = dict(raw)
    if raw.get("path") and base_dir and not Path(raw["path"]).is_absolute():
        raw["path"] = str(base_dir / raw["path"])
    return SourceSpec(**raw)


# ---------------------------------------------------------------- reports


def summary_rows(reports: list[RefreshReport]) -> list[dict]:
    """One row per use case for the table artifact and the CLI."""
    return [
        {
            "use_case": r.use_case,
            "version": r.version,
            "new_version": r.created,
            "rows_in": sum(r.rows_in.values()),
            "pii_scrubbed": sum(r.scrubbed.values()),
            "dedup_kept": r.dedup_kept,
            "exact": r.exact_duplicates,
            "near": r.near_duplicates,
            "conflicts_resolved": r.conflicts_resolved,
            "conflicts_kept": r.conflicts_kept,
            "duplicates": r.duplicates_removed,
            "warnings": list(r.warnings),
            "quarantined": r.quarantined,
            "items": r.counts.get("items", 0),
            "dev": r.counts.get("by_split", {}).get("dev", 0),
            "test": r.counts.get("by_split", {}).get("test", 0),
            "silver": r.counts.get("silver", 0),
            "added": r.diff.get("added", 0),
            "removed": r.diff.get("removed", 0),
            "relabelled": r.diff.get("relabelled", 0),
        }
        for r in reports
    ]


def summary_markdown(reports: list[RefreshReport]) -> str:
    """The markdown artifact: counts per use case, cleaning numbers and the diff."""
    lines = ["# Golden dataset refresh", ""]
    for report in reports:
        state = f"new version v{report.version}" if report.created else f"unchanged, still v{report.version}"
        lines += [
            f"## {report.use_case}: {state}",
            "",
            f"- items: {report.counts.get('items', 0)} "
            f"(dev {report.counts.get('by_split', {}).get('dev', 0)}, "
            f"test {report.counts.get('by_split', {}).get('test', 0)}); silver (incumbent) references: "
            f"{report.counts.get('silver', 0)}",
            f"- rows in: {report.rows_in}",
            f"- PII scrubbed: {report.scrubbed}",
            f"- dedup: {report.dedup_kept} kept; removed {report.exact_duplicates} exact, "
            f"{report.near_duplicates} near, {report.conflicts_resolved} conflicting references resolved by "
            f"label origin; {report.conflicts_kept} near-identical questions with another reference kept "
            f"for review",
            f"- quarantined: {report.quarantined}"
            + (f" {report.quarantine_reasons} -> `{report.quarantine_path}`" if report.quarantined else ""),
            f"- content hash: `{report.content_hash}`",
        ]
        if report.created and report.diff:
            lines.append(
                f"- diff vs v{report.diff.get('against')}: +{report.diff['added']} added, "
                f"-{report.diff['removed']} removed, {report.diff['relabelled']} relabelled"
            )
        lines += [f"- **warning:** {warning}" for warning in report.warnings] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402  (thin wrappers below the logic they wrap)
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="refresh-golden-set", task_run_name="refresh-golden-{spec.use_case}", cache_policy=NO_CACHE)
def refresh_golden_set(
    workspace: str | None, spec: GoldenSpec, sources: list[SourceSpec], options: RefreshOptions
) -> RefreshReport:
    """One use case's refresh as a Prefect task (a failure stays with its use case)."""
    return refresh_golden(workspace, spec, sources, options)
