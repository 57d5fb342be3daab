"""The audit's judgement: workhorse or frontier, realtime or batch, and what each candidate would cost.

Classification follows the plan where it speaks (``workload``, then ``task_type``) and the logs'
evidence otherwise (JSON outputs, a small fixed set of short answers, long multi-turn or
tool-calling traces, output length); every verdict carries its reason, because a team must be
able to disagree with it.

Money comes in two kinds, never mixed up. The **billed** table is what the provider's invoice
shows: spend per UTC calendar month × use case × model, exact, with partial months marked by
the days the logs cover. The **run-rate** scales the logged spend to a month of 30.44 days over
the log window (first to last row, ÷ the sample rate); projections per candidate × hosting, the
total-cost view and the break-even month are built on it, so they are per *run-rate month*, and
a window under ``audit.min_coverage_days`` marks all of them as an extrapolation.
"""

from __future__ import annotations

import calendar
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from workhorse.config import AuditPlan, Plan
from workhorse.errors import DataError
from workhorse.tasks.audit import usage
from workhorse.tasks.common import contracts, pricing

DAYS_PER_MONTH = 30.4375  # a run-rate month: the mean Gregorian month
RUN_RATE = "run-rate month"  # the basis of every projection, as the tables and reports name it
WORKHORSE_TASKS = {"classification", "extraction", "summarization", "qa"}
SELF_HOSTED_DEFAULT = "hosted_vllm/smollm2-135m-instruct"


@dataclass(frozen=True)
class Verdict:
    use_case: str
    workload: str  # workhorse | frontier | unknown
    workload_reason: str
    latency: str  # realtime | batch
    latency_reason: str


# --------------------------------------------------------------------------- classification


def classify_use_case(name: str, plan: Plan, evidence: dict | None) -> Verdict:
    """Workhorse vs frontier and the latency need of one use case, each with its reason."""
    workload, why = _workload(name, plan, evidence or {})
    latency, latency_why = _latency(name, plan, evidence or {})
    return Verdict(name, workload, why, latency, latency_why)


def _workload(name: str, plan: Plan, ev: dict) -> tuple[str, str]:
    case = plan.use_cases.get(name)
    if case and case.workload:
        return case.workload, f"set in workhorse.yaml (workload: {case.workload})"
    if case and case.task_type in WORKHORSE_TASKS:
        return "workhorse", f"task_type {case.task_type} in workhorse.yaml is routine work"
    return workload_from_evidence(ev)


def workload_from_evidence(ev: dict) -> tuple[str, str]:
    """The playbook's table applied to what the logs show; the first strong sign decides."""
    if not ev.get("sampled"):
        return "unknown", "no successful calls logged to judge from"
    tools, turns = ev.get("tool_share") or 0, ev.get("mean_messages") or 0
    if tools >= 0.2 or turns >= 6:
        return (
            "frontier",
            f"agentic traces: {tools:.0%} of calls carry tool calls, {turns:.1f} messages on average",
        )
    if (ev.get("json_share") or 0) >= 0.8:
        return "workhorse", f"structured extraction: {ev['json_share']:.0%} of outputs are JSON"
    distinct, chars = ev.get("distinct_responses") or 0, ev.get("mean_response_chars") or 0
    if distinct <= 20 and chars <= 40:
        return (
            "workhorse",
            f"classification: {distinct} distinct short answers ({chars:.0f} chars on average)",
        )
    completion = ev.get("mean_completion_tokens") or 0
    if completion <= 400:
        return "workhorse", f"short single-turn outputs ({completion:.0f} tokens on average), e.g. summaries"
    return (
        "frontier",
        f"long free-form outputs ({completion:.0f} tokens on average): confirm in workhorse.yaml",
    )


def _latency(name: str, plan: Plan, ev: dict) -> tuple[str, str]:
    case = plan.use_cases.get(name)
    if case and case.latency:
        return case.latency, f"set in workhorse.yaml (latency: {case.latency})"
    if (ev.get("batch_share") or 0) >= 0.5:
        return "batch", f"{ev['batch_share']:.0%} of calls already go through a batch API"
    hours = ev.get("active_hours") or 0
    if 0 < hours <= 6:
        return "batch", f"calls arrive in {hours} hours of the day: a scheduled job"
    return "realtime", f"calls spread over {hours} hours of the day: someone is waiting"


# --------------------------------------------------------------------------- projections


@dataclass(frozen=True)
class Option:
    """A candidate model under one hosting strategy, and whether it fits the use case."""

    model: str
    hosting: str
    origin: str  # plan | shortlist


def options_for(
    use_case: str, plan: Plan, verdict: Verdict, monthly_in: float, monthly_out: float
) -> list[Option]:
    """The plan's candidates × hostings; else a shortlist from the price map plus self-hosting."""
    named = plan.candidates_for(use_case)
    if named:
        return [Option(c.model, h, "plan") for c in named for h in c.hosting]
    shortlist = pricing.shortlist_candidates(monthly_in, monthly_out)
    found = [Option(p.model, h, "shortlist") for p in shortlist for h in ("api", "batch")]
    return found + [Option(SELF_HOSTED_DEFAULT, "self_hosted", "shortlist")]


def catalog_for(plan: Plan, workspace_root: Path | None) -> pricing.PriceCatalog:
    """Prices from the map + plan overrides; self-hosted candidates at GPU-hour ÷ throughput."""
    hosting = plan.self_hosting
    hosted = {}
    models = {c.model for c in plan.candidates if "self_hosted" in c.hosting} | {SELF_HOSTED_DEFAULT}
    for model in models:
        measured = pricing.measured_tokens_per_hour(workspace_root, model) if workspace_root else None
        hosted[model] = pricing.SelfHosting(
            hosting.gpu_hourly_usd,
            measured or hosting.tokens_per_hour,
            hosting.input_tokens_per_hour,
            hosting.gpus,
            "measured" if measured else "configured",
        )
    return pricing.PriceCatalog(plan.pricing.overrides, hosted, plan.pricing.batch_discount)


def project(
    use_cases: pa.Table, verdicts: dict[str, Verdict], plan: Plan, catalog: pricing.PriceCatalog
) -> pa.Table:
    """One row per workhorse use case × option: monthly cost, savings in $ and %, fit, reason."""
    rows = []
    for uc in use_cases.to_pylist():
        verdict = verdicts[uc["use_case"]]
        if verdict.workload == "frontier":
            continue  # the playbook keeps frontier work on frontier models: nothing to project
        for option in options_for(
            uc["use_case"], plan, verdict, uc["monthly_prompt_tokens"], uc["monthly_completion_tokens"]
        ):
            rows.append(_projection_row(uc, verdict, option, catalog))
    return pa.Table.from_pylist(rows, schema=PROJECTION_SCHEMA)


def _projection_row(uc: dict, verdict: Verdict, option: Option, catalog: pricing.PriceCatalog) -> dict:
    price = catalog.price(option.model, option.hosting)
    current = uc["monthly_cost_usd"]
    cost = price.cost(uc["monthly_prompt_tokens"], uc["monthly_completion_tokens"]) if price else None
    fits, why = True, price.source if price else "unpriced: no price known for this model"
    if option.hosting == "batch" and verdict.latency == "realtime":
        fits, why = False, "realtime use case: batch hosting misses the latency need"
    saving = current - cost if cost is not None and current is not None else None
    return {
        "use_case": uc["use_case"],
        "candidate": option.model,
        "hosting": option.hosting,
        "origin": option.origin,
        "current_monthly_usd": current,
        "projected_monthly_usd": cost,
        "saving_usd": saving,
        "saving_pct": (saving / current * 100) if saving is not None and current else None,
        "fits_latency": fits,
        "note": why,
        "basis": RUN_RATE,
        "extrapolated": uc["extrapolated"],
    }


PROJECTION_SCHEMA = pa.schema(
    [
        ("use_case", pa.string()),
        ("candidate", pa.string()),
        ("hosting", pa.string()),
        ("origin", pa.string()),
        ("current_monthly_usd", pa.float64()),
        ("projected_monthly_usd", pa.float64()),
        ("saving_usd", pa.float64()),
        ("saving_pct", pa.float64()),
        ("fits_latency", pa.bool_()),
        ("note", pa.string()),
        ("basis", pa.string()),
        ("extrapolated", pa.bool_()),
    ]
)


def total_cost_views(projections: pa.Table, plan: Plan) -> list[dict]:
    """Portfolio view per candidate × hosting: fixed costs against variable savings, break-even month."""
    views = []
    for (model, hosting), rows in _group(projections.to_pylist(), ("candidate", "hosting")).items():
        fitting = [r for r in rows if r["fits_latency"] and r["projected_monthly_usd"] is not None]
        if not fitting:
            continue
        fixed = plan.self_hosting.fixed_monthly_usd if hosting == "self_hosted" else 0.0
        view = pricing.total_cost_view(
            sum(r["current_monthly_usd"] for r in fitting),
            sum(r["projected_monthly_usd"] for r in fitting),
            fixed_monthly_usd=fixed,
            one_off_usd=plan.self_hosting.one_off_usd,
        )
        views.append(
            {
                "candidate": model,
                "hosting": hosting,
                "use_cases": len(fitting),
                **view.__dict__,
                "basis": RUN_RATE,
                "extrapolated": any(r["extrapolated"] for r in fitting),
            }
        )
    return views


def _group(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


# --------------------------------------------------------------------------- billed months and the run-rate


@dataclass(frozen=True)
class LogWindow:
    """The time the logs span, which the run-rate is scaled over, and whether it is long enough.

    ``span_days`` is the time between the first and the last row, not the calendar days touched:
    a log cut at any hour ("the last 7 days") gives its true length. ``days``, what the run-rate
    divides by, floors it at one day, so a one-row log still has a rate.
    """

    first_ts: datetime
    last_ts: datetime
    sample_rate: float = 1.0
    min_coverage_days: float = 7.0

    @property
    def span_days(self) -> float:
        return (self.last_ts - self.first_ts).total_seconds() / 86400

    @property
    def days(self) -> float:
        return max(self.span_days, 1.0)

    @property
    def scale(self) -> float:
        """Logged figures × this = per run-rate month."""
        return DAYS_PER_MONTH / self.days / self.sample_rate

    @property
    def extrapolated(self) -> bool:
        return self.span_days < self.min_coverage_days

    def label(self) -> str:
        """What the run-rate is: its window, its length, and the sampling it undoes."""
        span = f"{self.span_days:.1f} days" + (" (counted as 1 day)" if self.span_days < 1 else "")
        sampled = (
            "every call logged"
            if self.sample_rate >= 1
            else f"logs hold {self.sample_rate * 100:g}% of calls, scaled ×{1 / self.sample_rate:g}"
        )
        return (
            f"run-rate over {_utc(self.first_ts)} → {_utc(self.last_ts)} UTC ({span} between the first and "
            f"last row; {sampled}), scaled to a {DAYS_PER_MONTH:.2f}-day month"
        )

    def warning(self) -> str | None:
        """Why the run-rate is an extrapolation, or None when the window is long enough."""
        if not self.extrapolated:
            return None
        return (
            f"extrapolation: only {self.span_days:.1f} days between the first and last row, under the "
            f"{self.min_coverage_days:g}-day minimum (audit.min_coverage_days); the run-rate and every "
            f"projection on it assume those days are typical of a month"
        )

    def as_dict(self) -> dict:
        return {
            "first_ts": self.first_ts.isoformat(),
            "last_ts": self.last_ts.isoformat(),
            "days": self.span_days,
            "sample_rate": self.sample_rate,
            "min_coverage_days": self.min_coverage_days,
            "extrapolated": self.extrapolated,
            "label": self.label(),
            "warning": self.warning(),
        }


def _utc(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def log_window(costs: pa.Table, audit: AuditPlan) -> LogWindow | None:
    """The window of the accepted rows, from the cost groups' first and last times (no row scan)."""
    if not costs.num_rows:
        return None
    first = min(costs.column("first_ts").to_pylist())
    last = max(costs.column("last_ts").to_pylist())
    return LogWindow(first, last, audit.log_sample_rate, audit.min_coverage_days)


def month_coverage(month: str, window: LogWindow) -> dict:
    """The UTC calendar days of ``month`` ("2026-10") that the window covers.

    The first month of the window is covered from the first row's day, the last up to the last
    row's day, both counted whole; the months between are full.
    """
    year, number = (int(part) for part in month.split("-"))
    length = calendar.monthrange(year, number)[1]
    first, last = (ts.astimezone(timezone.utc) for ts in (window.first_ts, window.last_ts))
    start = first.day if (first.year, first.month) == (year, number) else 1
    end = last.day if (last.year, last.month) == (year, number) else length
    days, name = end - start + 1, calendar.month_abbr[number]
    spanned = f"{start}–{end} {name}" if days > 1 else f"{start} {name}"
    coverage = (
        month if days >= length else f"{month} (partial: {days} day{'s' if days > 1 else ''}, {spanned})"
    )
    return {"days_in_month": length, "days_covered": days, "partial": days < length, "coverage": coverage}


BILLED_SCHEMA = pa.schema(
    [
        ("month", pa.string()),
        ("use_case", pa.string()),
        ("model", pa.string()),
        ("requests", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("spend_usd", pa.float64()),
        ("unpriced_tokens", pa.int64()),
        ("fully_priced", pa.bool_()),
        ("sample_rate", pa.float64()),
        ("days_in_month", pa.int64()),
        ("days_covered", pa.int64()),
        ("partial", pa.bool_()),
        ("coverage", pa.string()),
    ]
)


def billed_by_month(costs: pa.Table, window: LogWindow | None) -> pa.Table:
    """Spend per UTC calendar month × use case × model: what the provider's invoice shows.

    Exact sums of the cost groups (hostings merged), never scaled by time; only a sampled log
    is divided by its sample rate, since the invoice counts every call.
    """
    rows = []
    rate = window.sample_rate if window else 1.0
    for (month, use_case, model), group in _group(costs.to_pylist(), ("month", "use_case", "model")).items():
        rows.append(
            {
                "month": month,
                "use_case": use_case,
                "model": model,
                **{
                    k: round(sum(r[k] for r in group) / rate)
                    for k in ("requests", "prompt_tokens", "completion_tokens")
                },
                "spend_usd": sum(r["cost_usd"] for r in group) / rate,
                "unpriced_tokens": round(sum(r["unpriced_tokens"] for r in group) / rate),
                "fully_priced": all(r["unpriced_tokens"] == 0 for r in group),
                "sample_rate": rate,
                **month_coverage(month, window),
            }
        )
    return pa.Table.from_pylist(rows, schema=BILLED_SCHEMA)


def billed_months(billed: pa.Table) -> list[dict]:
    """The billed table's total per calendar month, in month order."""
    months = []
    for (month,), group in _group(billed.to_pylist(), ("month",)).items():
        months.append(
            {k: group[0][k] for k in ("month", "coverage", "partial", "days_covered", "days_in_month")}
            | {
                "spend_usd": sum(r["spend_usd"] for r in group),
                "fully_priced": all(r["fully_priced"] for r in group),
            }
        )
    return sorted(months, key=lambda m: m["month"])


def monthly_use_cases(costs: pa.Table, window: LogWindow | None) -> pa.Table:
    """Per use case: the run-rate of requests, tokens and cost per run-rate month over the log window.

    One window for every use case, the log's: a use case quiet for part of it (a weekly batch
    job) is still measured over the whole span, not over its own first and last call.
    """
    rows = []
    for (use_case,), group in _group(costs.to_pylist(), ("use_case",)).items():
        rows.append(
            {
                "use_case": use_case,
                "requests": sum(r["requests"] for r in group),
                "models": ", ".join(sorted({r["model"] for r in group})),
                "monthly_requests": sum(r["requests"] for r in group) * window.scale,
                "monthly_prompt_tokens": sum(r["prompt_tokens"] for r in group) * window.scale,
                "monthly_completion_tokens": sum(r["completion_tokens"] for r in group) * window.scale,
                "monthly_cost_usd": sum(r["cost_usd"] for r in group) * window.scale,
                "unpriced_tokens": sum(r["unpriced_tokens"] for r in group),
                "fully_priced": all(r["unpriced_tokens"] == 0 for r in group),
                "basis": RUN_RATE,
                "window_start": window.first_ts,
                "window_end": window.last_ts,
                "window_days": window.span_days,
                "sample_rate": window.sample_rate,
                "extrapolated": window.extrapolated,
            }
        )
    return pa.Table.from_pylist(rows)


# --------------------------------------------------------------------------- the whole audit


@dataclass
class AuditResult:
    """What one audit found; tables are small (groups, not rows)."""

    run_id: str
    read: int
    accepted: int
    quarantined: int
    failures: dict[str, int]
    costs: pa.Table
    use_cases: pa.Table
    verdicts: dict[str, Verdict]
    projections: pa.Table
    total_cost: list[dict]
    inputs: list[str]
    unpriced_models: list[str] = field(default_factory=list)
    quarantine_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    billed: pa.Table = field(default_factory=lambda: pa.table({}))  # month × use case × model, as invoiced
    window: LogWindow | None = None  # what the run-rate in ``use_cases`` and the projections is scaled over


def audit_logs(
    paths: Sequence[str | Path],
    plan: Plan,
    *,
    workspace_root: Path | None = None,
    fmt: str | None = None,
    max_bad_ratio: float | None = None,
    persist_rows: bool = True,
    run_id: str | None = None,
) -> AuditResult:
    """Read logs -> contract -> price -> classify -> project; big data never leaves DuckDB."""
    started, run_id = (
        time.perf_counter(),
        run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
    )
    con = contracts.connect()
    rules = [r.model_dump() for r in plan.audit.use_case_rules]
    source, logs = usage.usage_source(con, paths, fmt, rules)
    contract = contracts.load_contract("usage_log")
    if not plan.audit.check_duplicate_ids:
        contract = contract.without("expect_column_values_to_be_unique")
    checked, (grouped, read, failures) = checked_costs(con, source, contract)
    quarantined = read - sum(grouped.column("requests").to_pylist()) if grouped.num_rows else read
    what = ", ".join(str(log.path) for log in logs)
    result = _partial(run_id, read, quarantined, failures, logs)
    _enforce(checked, result, plan, max_bad_ratio, what, workspace_root)
    catalog = catalog_for(plan, workspace_root)
    models = grouped.column("model").to_pylist()
    result.costs = usage.price_costs(
        con, grouped, catalog.prices_table(models), catalog.prices_table(models, "batch")
    )
    result.unpriced_models = sorted({r["model"] for r in result.costs.to_pylist() if r["unpriced_tokens"]})
    _judge(con, checked, result, plan, catalog, read)
    if persist_rows and workspace_root:
        usage.write_canonical(con, checked.accepted_sql, Path(workspace_root) / "usage" / "usage_log.parquet")
    result.seconds["total"] = time.perf_counter() - started
    return result


def checked_costs(con, source: str, contract: contracts.Contract) -> tuple[contracts.CheckedRelation, tuple]:
    """The contract compiled onto the logs, and ``usage.checked_cost_by_month`` of them.

    The duplicate-id scan runs on a second connection beside the aggregate, which assumes no
    duplicates (the usual case) and runs again only when some are found. One after the other,
    the scan's serial parts (fetching 10M hashes, the compiled check) leave a core idle; side by
    side they fill it (timings: benchmarks/NOTES.md).
    """
    if not any(e.type == contracts.UNIQUE for e in contract.expectations):
        checked = contracts.check_relation(con, source, contract)
        return checked, usage.checked_cost_by_month(checked)
    # Imported here, not at the top: binding ThreadPoolExecutor at import time slowed every 10M-row
    # aggregate in the benchmark's fresh processes (benchmarks/NOTES.md). Cause not found.
    from concurrent.futures import ThreadPoolExecutor

    columns = contracts.source_columns(con, source)  # described once for the three uses below
    with ThreadPoolExecutor(1) as pool:
        scan = pool.submit(
            contracts.find_duplicates, contracts.connect(con.cursor()), source, contract, columns
        )
        hopeful = usage.checked_cost_by_month(
            contracts.check_relation(con, source, contract.without(contracts.UNIQUE), columns=columns)
        )
        duplicates = scan.result()
    checked = contracts.check_relation(con, source, contract, duplicates, columns)
    if any(found.num_rows for found in duplicates.values()):
        return checked, usage.checked_cost_by_month(checked)
    return checked, hopeful


def _partial(run_id: str, read: int, quarantined: int, failures: dict, logs) -> AuditResult:
    empty = pa.table({})
    return AuditResult(
        run_id,
        read,
        read - quarantined,
        quarantined,
        failures,
        empty,
        empty,
        {},
        empty,
        [],
        [str(log.path) for log in logs],
    )


def _enforce(
    checked,
    result: AuditResult,
    plan: Plan,
    max_bad_ratio: float | None,
    what: str,
    workspace_root: Path | None,
) -> None:
    """Write the quarantine (when rows failed), then fail past the bad-row ratio."""
    if result.quarantined and workspace_root:
        path = Path(workspace_root) / "quarantine" / f"usage_log-{result.run_id}.parquet"
        result.quarantine_path = checked.write_quarantine(path)
    failed_tables = contracts.table_failures(checked.contract, checked.columns, result.read)
    ratio = plan.audit.max_bad_row_ratio if max_bad_ratio is None else max_bad_ratio
    where = f" (quarantine: {result.quarantine_path})" if result.quarantine_path else ""
    from collections import Counter

    try:
        contracts.check_ratio(
            "usage_log", result.read, result.quarantined, Counter(result.failures), failed_tables, ratio, what
        )
    except Exception as error:
        raise type(error)(f"{error}{where}") from None
    if result.read == 0:
        raise DataError(f"{what}: no usage rows in the input")


def _judge(con, checked, result: AuditResult, plan: Plan, catalog: pricing.PriceCatalog, read: int) -> None:
    evidence = usage.evidence_from_groups(result.costs)
    result.window = log_window(result.costs, plan.audit)
    result.billed = billed_by_month(result.costs, result.window)
    result.use_cases = monthly_use_cases(result.costs, result.window)
    names = result.use_cases.column("use_case").to_pylist() if result.use_cases.num_rows else []
    result.verdicts = {n: classify_use_case(n, plan, evidence.get(n)) for n in names}
    result.projections = project(result.use_cases, result.verdicts, plan, catalog)
    result.total_cost = total_cost_views(result.projections, plan)


# --------------------------------------------------------------------------- persistence


def write_audit_tables(result: AuditResult, folder: Path) -> dict[str, str]:
    """The audit's tables as parquet (small: groups, not rows), overwritten by each audit.

    They live in ``<workspace>/audit/``, not ``usage/``: golden sets read every parquet file
    under ``usage/`` as canonical rows, which stay alone there.
    """
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    verdicts = (
        pa.Table.from_pylist([v.__dict__ for v in result.verdicts.values()])
        if result.verdicts
        else pa.table({})
    )
    costs = result.costs.drop_columns([c for c in result.costs.column_names if c.startswith("ev_")])
    tables = {
        "billed_by_month": result.billed,
        "cost_by_month": costs,
        "use_cases": result.use_cases,
        "verdicts": verdicts,
        "projections": result.projections,
        "total_cost": pa.Table.from_pylist(result.total_cost),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = str(folder / f"{name}.parquet")
        pq.write_table(table, paths[name])
    return paths


@dataclass
class AuditSummary:
    """What the flow returns: counts, money, and where everything was written.

    ``billed_months`` is spend as invoiced, per calendar month; every ``run_rate_*`` figure is
    per run-rate month over the window in ``run_rate`` (its label, and a warning when it is an
    extrapolation).
    """

    run_id: str
    read: int
    accepted: int
    quarantined: int
    billed_months: list[dict]
    billed: list[dict]  # month × use case × model
    run_rate: dict | None
    run_rate_monthly_usd: float
    run_rate_projected_usd: float
    run_rate_saving_usd: float
    use_cases: list[dict]
    unpriced_models: list[str]
    report: str
    tables: dict[str, str]
    quarantine: str | None

    def billed_text(self, months: int = 3) -> str:
        """'billed $135.00 in 2026-10 (partial: 16 days, 5–20 Oct)'; the latest ``months`` of them."""
        shown = [f"${m['spend_usd']:,.2f} in {m['coverage']}" for m in self.billed_months[-months:]]
        earlier = len(self.billed_months) - len(shown)
        return (
            "billed "
            + (", ".join(shown) or "nothing")
            + (f" (+{earlier} earlier months)" if earlier > 0 else "")
        )

    def run_rate_text(self) -> str:
        """The run-rate and the cheapest options' projection, each saying what it is."""
        if not self.run_rate:
            return "no run-rate: no accepted rows"
        window = self.run_rate
        extrapolated = (
            f", an extrapolation: under the {window['min_coverage_days']:g}-day minimum"
            if window["extrapolated"]
            else ""
        )
        return (
            f"run-rate ${self.run_rate_monthly_usd:,.2f}/month over {window['days']:.1f} days of logs "
            f"({window['first_ts'][:10]} → {window['last_ts'][:10]}{extrapolated}), "
            f"${self.run_rate_projected_usd:,.2f}/month with the cheapest fitting options "
            f"(saving ${self.run_rate_saving_usd:,.2f} per run-rate month)"
        )


def summarize(result: AuditResult, report: str, tables: dict[str, str]) -> AuditSummary:
    """Billed months as invoiced; per use case the run-rate and the cheapest fitting option."""
    from workhorse.tasks.common.html import best_options

    best = best_options(result)
    cases = result.use_cases.to_pylist()
    current = sum(c["monthly_cost_usd"] for c in cases)
    projected = sum(
        best[c["use_case"]]["projected_monthly_usd"] if c["use_case"] in best else c["monthly_cost_usd"]
        for c in cases
    )
    rows = [
        {
            "use_case": c["use_case"],
            "workload": result.verdicts[c["use_case"]].workload,
            "run_rate_monthly_usd": round(c["monthly_cost_usd"], 2),
            "best_option": f"{best[c['use_case']]['candidate']} ({best[c['use_case']]['hosting']})"
            if c["use_case"] in best
            else None,
            "run_rate_projected_usd": round(best[c["use_case"]]["projected_monthly_usd"], 2)
            if c["use_case"] in best
            else None,
        }
        for c in cases
    ]
    months = [{**m, "spend_usd": round(m["spend_usd"], 2)} for m in billed_months(result.billed)]
    billed = [{**r, "spend_usd": round(r["spend_usd"], 2)} for r in result.billed.to_pylist()]
    return AuditSummary(
        result.run_id,
        result.read,
        result.accepted,
        result.quarantined,
        months,
        billed,
        result.window.as_dict() if result.window else None,
        round(current, 2),
        round(projected, 2),
        round(current - projected, 2),
        rows,
        result.unpriced_models,
        report,
        tables,
        str(result.quarantine_path) if result.quarantine_path else None,
    )


# --------------------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402  (thin wrappers below the logic they wrap)
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402  (inputs are tables: never hash them)


@task(name="audit-usage-logs", cache_policy=NO_CACHE)
def audit_usage_logs(
    paths: list[str], plan: Plan, workspace_root: str, fmt: str | None, max_bad_ratio: float | None
) -> AuditResult:
    """Read, validate, price, classify and project; fails past the bad-row ratio."""
    return audit_logs(paths, plan, workspace_root=Path(workspace_root), fmt=fmt, max_bad_ratio=max_bad_ratio)


@task(name="write-audit-tables", cache_policy=NO_CACHE)
def store_audit_tables(result: AuditResult, folder: str) -> dict[str, str]:
    """Write the audit's parquet tables."""
    return write_audit_tables(result, Path(folder))
