"""Monitoring (playbook step 5): one traffic window -> metrics per use case and model -> rule results.

Metrics per (use case, model): requests, error rate, latency p50/p95, cost and cost per request,
validity (extraction: the response parses and satisfies the schema; classification: the label is
one of the allowed ones), agreement with the incumbent on shadow traffic, and drift against the
golden set (input length; output label or field distribution). Baselines come from earlier
windows (stored in state.db, breached windows excluded so an incident never raises its own bar)
and else from the last eval run's leaderboard.

"No traffic in window" is its own state: a rule over an empty or too small window says
``no_data``/``insufficient``, which neither opens nor resolves an incident — silence is never
read as zero errors.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from workhorse.config import DEFAULT_RULES, AlertRule, DriftSettings, MonitorSettings  # noqa: F401  (re-exported)
from workhorse.errors import ConfigError
from workhorse.store import connect

ALL_MODELS = "*"  # the model key of use-case-wide metrics (input drift, no traffic)
SEVERITIES = ("warning", "critical")
WINDOWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_windows (
    use_case TEXT NOT NULL, model TEXT NOT NULL, window_end TEXT NOT NULL,
    requests INTEGER NOT NULL, error_rate REAL, latency_p95_ms REAL, cost_per_request REAL,
    breached INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (use_case, model, window_end)
);
"""


# --- settings: the plan's monitoring section (its models live in workhorse.config) -----------


def monitor_settings(section: MonitorSettings | dict | None) -> MonitorSettings:
    """Defaults overlaid by the plan; a rule in the plan overrides only the keys it names."""
    if isinstance(section, MonitorSettings):
        return section
    try:
        return MonitorSettings.model_validate(dict(section or {}))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"workhorse.yaml monitoring: {problems}") from None


# --- what a use case needs for validity and drift ---------------------------------------------


@dataclass
class UseCaseProfile:
    """What monitoring knows about a use case: its contract and its golden baseline."""

    name: str
    task_type: str = "generation"
    labels: list[str] = field(default_factory=list)
    json_schema: dict | None = None
    incumbent: str | None = None
    golden_lengths: list[int] = field(default_factory=list)
    golden_categories: list[str] = field(default_factory=list)
    golden_version: Any = None


def profiles_from_plan(plan, workspace, names: list[str] | None = None) -> dict[str, UseCaseProfile]:
    """One profile per workhorse use case of the plan, with its golden baseline when there is one."""
    profiles = {}
    for name, case in plan.use_cases.items():
        if (names and name not in names) or case.workload == "frontier":
            continue
        profile = UseCaseProfile(
            name, case.task_type, list(case.labels), case.json_schema, case.incumbent or plan.incumbent
        )
        profiles[name] = with_golden_baseline(profile, workspace)
    return profiles


def with_golden_baseline(profile: UseCaseProfile, workspace) -> UseCaseProfile:
    """Add the golden set's input lengths and reference categories (none when no golden set yet)."""
    from workhorse.errors import WorkhorseError
    from workhorse.tasks.golden.refresh import load_golden, read_manifest

    try:
        items = load_golden(workspace, profile.name)
    except (WorkhorseError, FileNotFoundError, KeyError):
        return profile  # no golden set: drift reports 'no baseline', never 'no drift'
    profile.golden_lengths = [input_length(item.input) for item in items]
    profile.golden_categories = [c for item in items for c in categories(profile, item.reference)]
    profile.golden_version = read_manifest(workspace, profile.name)["version"]
    if not profile.labels and items and items[0].labels:
        profile.labels = list(items[0].labels)
    if profile.json_schema is None and items and items[0].json_schema:
        profile.json_schema = items[0].json_schema
    return profile


def input_length(messages: Any) -> int:
    """Characters of the user turns: system prompts change with prompt variants, inputs do not."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            return len(messages)
    if not isinstance(messages, list):
        return 0
    users = [m for m in messages if isinstance(m, dict) and m.get("role", "user") == "user"]
    return sum(len(str(m.get("content") or "")) for m in users or messages if isinstance(m, dict))


def categories(profile: UseCaseProfile, output: str | None) -> list[str]:
    """The categorical content of an output: its label, or the enum fields of an extraction."""
    from workhorse.tasks.evaluate.scoring import INVALID_LABEL, parse_json_object, parse_label

    if profile.task_type == "classification" and profile.labels:
        label = parse_label(output, profile.labels)
        return [] if label == INVALID_LABEL else [label]
    if profile.task_type == "extraction" and profile.json_schema:
        parsed = parse_json_object(output) or {}
        enums = [k for k, p in (profile.json_schema.get("properties") or {}).items() if "enum" in p]
        return [f"{k}={parsed[k]}" for k in enums if k in parsed]
    return []


def is_valid(profile: UseCaseProfile, output: str | None) -> bool:
    """The output honours the use case's contract (a parseable schema-valid JSON, an allowed label)."""
    from workhorse.tasks.evaluate.scoring import INVALID_LABEL, NOT_JSON, parse_json, parse_label

    if profile.task_type == "extraction":  # any JSON shape: a list of entities is as valid as an object
        parsed = parse_json(output)
        return parsed is not NOT_JSON and _schema_valid(parsed, profile.json_schema)
    if profile.task_type == "classification" and profile.labels:
        return parse_label(output, profile.labels) != INVALID_LABEL
    return bool(output and output.strip())


def _schema_valid(value, schema: dict | None) -> bool:
    import jsonschema

    return not schema or jsonschema.Draft202012Validator(schema).is_valid(value)


# --- drift tests ------------------------------------------------------------------------------


@dataclass
class Drift:
    """The result of one drift test; ``drifted`` is None when there was too little to test."""

    method: str
    statistic: float | None
    threshold: float
    p_value: float | None = None
    drifted: bool | None = None
    window_n: int = 0
    baseline_n: int = 0

    def describe(self) -> str:
        if self.drifted is None:
            return f"not tested ({self.window_n} window / {self.baseline_n} golden samples)"
        test = f"{self.method} {self.statistic:.3f}"
        limit = (
            f"p={self.p_value:.2g} < {self.threshold}"
            if self.p_value is not None and self.drifted
            else (f"p={self.p_value:.2g}" if self.p_value is not None else f"limit {self.threshold}")
        )
        return f"{test}, {limit} (n={self.window_n} vs golden {self.baseline_n})"


def numeric_drift(window: list[float], baseline: list[float], settings: DriftSettings) -> Drift:
    """K-S two-sample test for small windows, Wasserstein distance / baseline std for large ones."""
    from scipy import stats

    n, m = len(window), len(baseline)
    if n < settings.min_samples or m < settings.min_samples:
        return Drift("ks", None, settings.alpha, window_n=n, baseline_n=m)
    if n <= settings.large_sample:
        result = stats.ks_2samp(window, baseline)
        return Drift(
            "ks",
            float(result.statistic),
            settings.alpha,
            float(result.pvalue),
            bool(result.pvalue < settings.alpha),
            n,
            m,
        )
    spread = statistics.pstdev(baseline) or 1.0
    distance = float(stats.wasserstein_distance(window, baseline)) / spread
    return Drift("wasserstein", distance, settings.distance, None, distance > settings.distance, n, m)


def categorical_drift(window: list[str], baseline: list[str], settings: DriftSettings) -> Drift:
    """Chi-squared goodness of fit against the golden proportions for small windows,
    Jensen-Shannon distance for large ones. Golden counts are smoothed by 0.5 so a category
    the golden set never saw gives a finite, large statistic instead of a division by zero."""
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    n, m = len(window), len(baseline)
    if n < settings.min_samples or m < settings.min_samples:
        return Drift("chi2", None, settings.alpha, window_n=n, baseline_n=m)
    keys = sorted(set(window) | set(baseline))
    seen, golden = Counter(window), Counter(baseline)
    observed = [seen[k] for k in keys]
    weights = [golden[k] + 0.5 for k in keys]
    if n > settings.large_sample:
        distance = float(jensenshannon(observed, weights, base=2))
        return Drift("jensen-shannon", distance, settings.distance, None, distance > settings.distance, n, m)
    expected = [w * n / sum(weights) for w in weights]
    result = stats.chisquare(observed, expected)
    return Drift(
        "chi2",
        float(result.statistic),
        settings.alpha,
        float(result.pvalue),
        bool(result.pvalue < settings.alpha),
        n,
        m,
    )


# --- metrics of one window --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def window_rows(traffic: pa.Table, start: datetime, end: datetime, use_cases=None) -> list[dict]:
    """The rows of [start, end) as dicts; the arm is 'incumbent' where the log has none."""
    mask = pc.and_(
        pc.greater_equal(traffic["ts"], pa.scalar(start, traffic.schema.field("ts").type)),
        pc.less(traffic["ts"], pa.scalar(end, traffic.schema.field("ts").type)),
    )
    rows = traffic.filter(mask).to_pylist()
    return [r for r in rows if not use_cases or r.get("use_case") in use_cases]


def group_metrics(rows: list[dict], profile: UseCaseProfile, drift: DriftSettings) -> dict:
    """Requests, errors, latency, cost, validity and output drift of one (use case, model)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    latencies = [float(r["latency_ms"]) for r in ok if r.get("latency_ms") is not None]
    costs = [float(r["cost_usd"]) for r in rows if r.get("cost_usd") is not None]
    answered = [r.get("response") for r in ok if r.get("response") is not None]
    valid = sum(is_valid(profile, text) for text in answered)
    outputs = [c for text in answered for c in categories(profile, text)]
    return {
        "requests": len(rows),
        "errors": len(rows) - len(ok),
        "error_rate": (len(rows) - len(ok)) / len(rows) if rows else None,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "cost_usd": sum(costs) if costs else None,
        "cost_per_request": sum(costs) / len(costs) if costs else None,
        "validity": valid / len(answered) if answered else None,
        "validity_n": len(answered),
        "arms": sorted({r.get("arm") or "incumbent" for r in rows}),
        # Only outputs with categories (labels, enum fields) have a distribution to compare.
        **(
            {
                "output_label_drift": categorical_drift(outputs, profile.golden_categories, drift)
                if profile.golden_categories
                else None
            }
            if has_categories(profile)
            else {}
        ),
    }


def has_categories(profile: UseCaseProfile) -> bool:
    schema = profile.json_schema or {}
    return (profile.task_type == "classification" and bool(profile.labels)) or (
        profile.task_type == "extraction"
        and any("enum" in p for p in (schema.get("properties") or {}).values())
    )


def shadow_agreement(rows: list[dict], profile: UseCaseProfile) -> dict[str, tuple[float, int]]:
    """Per non-incumbent model: the share of its answers that agree with the incumbent's answer
    to the same request in the window (paired by request text), and the number of pairs."""
    incumbent = {
        r["request"]: r.get("response")
        for r in rows
        if (r.get("arm") or "incumbent") == "incumbent" and r.get("status") == "ok" and r.get("request")
    }
    pairs: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        if (
            row.get("arm") in ("shadow", "candidate")
            and row.get("status") == "ok"
            and row.get("request") in incumbent
        ):
            pairs[row["model"]].append(_same_answer(profile, row.get("response"), incumbent[row["request"]]))
    return {model: (sum(agreed) / len(agreed), len(agreed)) for model, agreed in pairs.items()}


def _same_answer(profile: UseCaseProfile, a: str | None, b: str | None) -> bool:
    """Classification: same label; extraction: same JSON value; else the same normalised text."""
    from workhorse.tasks.evaluate.scoring import NOT_JSON, parse_json, parse_label

    if profile.task_type == "classification" and profile.labels:
        return parse_label(a, profile.labels) == parse_label(b, profile.labels)
    if profile.task_type == "extraction":
        parsed = parse_json(a)
        return parsed is not NOT_JSON and parsed == parse_json(b)
    return " ".join((a or "").split()).casefold() == " ".join((b or "").split()).casefold()


def window_metrics(
    rows: list[dict],
    profiles: dict[str, UseCaseProfile],
    settings: MonitorSettings,
    known_groups: set[tuple[str, str]] = frozenset(),
) -> list[dict]:
    """One metrics row per (use case, model) with traffic or an open incident, plus one
    use-case-wide row (model '*') with the input drift or the 'no traffic in window' state."""
    by_case: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row.get("use_case") in profiles:
            by_case[row["use_case"]].append(row)
    metrics = []
    for name, profile in profiles.items():
        case_rows = by_case.get(name, [])
        agreement = shadow_agreement(case_rows, profile)
        by_model: dict[str, list[dict]] = defaultdict(list)
        for row in case_rows:
            by_model[row["model"]].append(row)
        models = set(by_model) | {m for u, m in known_groups if u == name and m != ALL_MODELS}
        for model in sorted(models):
            metrics.append(_model_row(name, model, by_model.get(model, []), profile, settings, agreement))
        metrics.append(_case_row(name, case_rows, profile, settings))
    return metrics


def _model_row(use_case, model, rows, profile, settings, agreement) -> dict:
    row = {"use_case": use_case, "model": model, **group_metrics(rows, profile, settings.drift)}
    if model != profile.incumbent:  # agreement is the candidate's quality proxy against the incumbent
        row["agreement"], row["agreement_n"] = agreement.get(model, (None, 0))
    row["state"] = "ok" if rows else "no traffic in window"
    return row


def _case_row(use_case, rows, profile, settings) -> dict:
    """Use-case-wide: input drift over distinct requests (shadow copies would count twice)."""
    distinct = {r.get("request"): r for r in rows if r.get("request")}
    lengths = [input_length(request) for request in distinct]
    drift = numeric_drift(lengths, profile.golden_lengths, settings.drift) if profile.golden_lengths else None
    return {
        "use_case": use_case,
        "model": ALL_MODELS,
        "requests": len(rows),
        "input_length_drift": drift,
        "input_length_p50": percentile(lengths, 50),
        "golden_length_p50": percentile(profile.golden_lengths, 50),
        "state": "ok" if rows else "no traffic in window",
    }


# --- baselines --------------------------------------------------------------------------------


def add_baselines(metrics: list[dict], history: dict, eval_baseline: dict) -> list[dict]:
    """Ratios of p95 latency and cost per request to the baseline: the median of earlier
    healthy windows, else the last eval run's figure for the model, else none (rule is no_data)."""
    for row in (r for r in metrics if r["model"] != ALL_MODELS):
        past = history.get((row["use_case"], row["model"]), {})
        evaluated = eval_baseline.get((row["use_case"], row["model"]), {})
        for metric, key in (
            ("latency_p95_ms", "latency_p95_ratio"),
            ("cost_per_request", "cost_per_request_ratio"),
        ):
            base, source = _baseline(past.get(metric), evaluated.get(metric))
            row[f"{metric}_baseline"], row[f"{metric}_baseline_source"] = base, source
            value = row.get(metric)
            row[key] = value / base if value is not None and base else None
    return metrics


def _baseline(windows: list[float] | None, evaluated: float | None) -> tuple[float | None, str | None]:
    if windows:
        return statistics.median(windows), f"median of {len(windows)} earlier windows"
    if evaluated:
        return evaluated, "last eval run"
    return None, None


def eval_baselines(workspace, use_cases) -> dict[tuple[str, str], dict]:
    """p95 latency and cost per request per (use case, model) from each use case's latest
    verdict.json (test split), so the first monitoring window already has a bar."""
    found: dict[tuple[str, str], tuple[float, dict]] = {}
    for path in Path(workspace.root, "runs").glob("*/verdict.json"):
        try:
            verdict = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if verdict.get("use_case") not in use_cases:
            continue
        for entry in verdict.get("leaderboard") or []:
            if entry.get("split", "test") != "test":
                continue
            key = (verdict["use_case"], entry.get("model"))
            cost = entry.get("cost_per_1k_items")
            figures = {
                "latency_p95_ms": entry.get("latency_p95_ms"),
                "cost_per_request": cost / 1000 if cost else None,
            }
            if key not in found or path.stat().st_mtime > found[key][0]:
                found[key] = (path.stat().st_mtime, figures)
    return {key: figures for key, (_, figures) in found.items()}


def window_history(connection, settings: MonitorSettings, before: datetime) -> dict:
    """Earlier healthy windows' p95 latency and cost per request per (use case, model)."""
    connection.ensure(WINDOWS_SCHEMA)
    rows = connection.execute(
        "SELECT use_case, model, latency_p95_ms, cost_per_request FROM monitor_windows "
        "WHERE window_end < ? AND breached = 0 AND requests > 0 ORDER BY window_end DESC",
        (before.isoformat(),),
    ).fetchall()
    history: dict = defaultdict(lambda: defaultdict(list))
    for use_case, model, p95, cost in rows:
        entry = history[(use_case, model)]
        if p95 is not None and len(entry["latency_p95_ms"]) < settings.baseline_windows:
            entry["latency_p95_ms"].append(p95)
        if cost is not None and len(entry["cost_per_request"]) < settings.baseline_windows:
            entry["cost_per_request"].append(cost)
    return history


def record_windows(connection, metrics: list[dict], end: datetime, breached: set[tuple[str, str]]) -> None:
    """Remember this window as a future baseline; a re-run of the same window replaces it."""
    connection.ensure(WINDOWS_SCHEMA)
    for row in metrics:
        if row["model"] == ALL_MODELS:
            continue
        connection.execute(
            "INSERT INTO monitor_windows VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (use_case, model, window_end) "
            "DO UPDATE SET requests = excluded.requests, error_rate = excluded.error_rate, "
            "latency_p95_ms = excluded.latency_p95_ms, cost_per_request = excluded.cost_per_request, "
            "breached = excluded.breached",
            (
                row["use_case"],
                row["model"],
                end.isoformat(),
                row["requests"],
                row.get("error_rate"),
                row.get("latency_p95_ms"),
                row.get("cost_per_request"),
                int((row["use_case"], row["model"]) in breached),
            ),
        )


# --- rules ------------------------------------------------------------------------------------


@dataclass
class RuleResult:
    """A rule over one metrics row: ok, breach (with severity), no_data or insufficient."""

    use_case: str
    model: str
    rule: str
    state: Literal["ok", "breach", "no_data", "insufficient"]
    severity: str | None = None
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    detail: str = ""
    report_only: bool = False

    @property
    def key(self) -> str:
        return f"{self.use_case}|{self.model}|{self.rule}"

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def evaluate_rules(metrics: list[dict], settings: MonitorSettings) -> list[RuleResult]:
    """Every enabled rule over every metrics row that carries its metric."""
    results = []
    for row in metrics:
        for name, rule in settings.rules.items():
            if rule.enabled and rule.metric in row:
                results.append(evaluate(name, rule, row))
    return results


def evaluate(name: str, rule: AlertRule, row: dict) -> RuleResult:
    """One rule over one row; too few requests or no value is a state of its own, never ok."""
    base = dict(use_case=row["use_case"], model=row["model"], rule=name, report_only=rule.report_only)
    value = row.get(rule.metric)
    if not row.get("requests"):
        return RuleResult(**base, state="no_data", detail="no traffic in window")
    if isinstance(value, Drift) or (value is None and rule.metric.endswith("_drift")):
        return _evaluate_drift(base, rule, value)
    if row["requests"] < rule.min_requests:
        return RuleResult(
            **base,
            state="insufficient",
            value=value,
            detail=f"{row['requests']} requests < {rule.min_requests} needed",
        )
    if value is None:
        return RuleResult(
            **base, state="no_data", detail=f"no {rule.metric} in window (no baseline or no samples)"
        )
    severity = _severity(rule, value)
    threshold = rule.critical if severity == "critical" else rule.warning
    baseline = row.get("latency_p95_ms_baseline" if "latency" in rule.metric else "cost_per_request_baseline")
    return RuleResult(
        **base,
        state="breach" if severity else "ok",
        severity=severity,
        value=value,
        threshold=threshold if severity else rule.warning,
        baseline=baseline if rule.metric.endswith("_ratio") else None,
        detail=_detail(rule.metric, row),
    )


def _severity(rule: AlertRule, value: float) -> str | None:
    crosses = (lambda limit: value > limit) if rule.direction == "above" else (lambda limit: value < limit)
    if rule.critical is not None and crosses(rule.critical):
        return "critical"
    if rule.warning is not None and crosses(rule.warning):
        return "warning"
    return None


def _evaluate_drift(base: dict, rule: AlertRule, drift: Drift | None) -> RuleResult:
    if drift is None:
        return RuleResult(**base, state="no_data", detail="no golden baseline")
    if drift.drifted is None:
        return RuleResult(**base, state="insufficient", detail=drift.describe())
    return RuleResult(
        **base,
        state="breach" if drift.drifted else "ok",
        severity=rule.severity if drift.drifted else None,
        value=drift.statistic,
        threshold=drift.threshold,
        detail=drift.describe(),
    )


def _detail(metric: str, row: dict) -> str:
    """The numbers behind a metric, for the alert text and the artifact."""
    n = row["requests"]
    if metric == "error_rate":
        return f"{row['errors']} of {n} requests failed"
    if metric == "latency_p95_ratio":
        return (
            f"p95 {row['latency_p95_ms']:,.0f} ms vs baseline {row['latency_p95_ms_baseline']:,.0f} ms "
            f"({row['latency_p95_ms_baseline_source']}); p50 {row['latency_p50_ms']:,.0f} ms"
        )
    if metric == "validity":
        valid = round(row["validity"] * row["validity_n"])
        return f"{valid} of {row['validity_n']} answers honour the contract"
    if metric == "agreement":
        return f"agrees with the incumbent on {row['agreement']:.0%} of {row['agreement_n']} shadow pairs"
    if metric == "cost_per_request_ratio":
        return (
            f"${row['cost_per_request']:.6f}/request vs baseline ${row['cost_per_request_baseline']:.6f} "
            f"({row['cost_per_request_baseline_source']})"
        )
    return f"{n} requests"


def window_bounds(now: datetime | None, minutes: int) -> tuple[datetime, datetime]:
    """[end - minutes, end) with end = now in UTC."""
    end = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return end - timedelta(minutes=minutes), end


def open_state_db(workspace):
    """The workspace's state store with the monitoring tables."""
    connection = connect(workspace)
    connection.ensure(WINDOWS_SCHEMA)
    return connection
