"""The migration plan (``workhorse.yaml``): a typed loader with clear errors, and setting precedence.

The plan is what a team reviews in git: use cases (task type, labels or JSON schema, latency
need, owner), the incumbent, the candidates, self-hosting costs, the quality policy, the
rollout steps, monitoring rules and the alert channel. Every section is typed and declares its keys:
a key the model does not know is an error naming its path, its line in the file and the declared
key it most resembles, never a silently ignored setting.

Precedence of any setting, written once in ``resolve``: flow parameter > workspace file (the
plan) > Prefect Block > environment variable > default.
"""

from __future__ import annotations

import difflib
import os
import types
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Optional, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from workhorse.dburl import refuse_literal_password
from workhorse.errors import ConfigError

if TYPE_CHECKING:
    from workhorse.workspace import Workspace

PLAN_FILE = "workhorse.yaml"
TaskType = Literal["classification", "extraction", "summarization", "qa", "generation"]
Hosting = Literal["api", "batch", "self_hosted"]
GoldenSourceKind = Literal["usage_log", "labels", "request_labels", "openai_evals", "promptfoo"]
GOLDEN_SOURCE_KINDS: tuple[str, ...] = get_args(GoldenSourceKind)

# Which per-item number each task type is judged on: "correct" (0/1), "value", or a key of
# ItemScore.details (see scoring.py).
DEFAULT_PRIMARY_METRIC = {
    "classification": "correct",
    "extraction": "correct",
    "summarization": "rougeL",
    "qa": "f1",
    "generation": "correct",
}


class _Section(BaseModel):
    # A misspelt key must fail loudly: silently taking the default is the worse outcome.
    model_config = ConfigDict(extra="forbid")


class GoldenColumns(_Section):
    """Which columns of a label file hold what (``golden.sources[].mapping``)."""

    input: Optional[str] = Field("input", description="Column of the text (or a JSON list of messages).")
    reference: str = Field("reference", description="Column of the label or expected output.")
    id: Optional[str] = Field(None, description="Column of a row id, kept as provenance.")
    request_id: Optional[str] = Field(
        None,
        description="Column of a logged request's id: the file labels "
        "logged requests instead of holding inputs.",
    )
    keep: list[str] = Field(default_factory=list, description="Columns copied into the item's metadata.")
    system: Optional[str] = Field(None, description="Column of a system message put before the input.")


class GoldenSource(_Section):
    """One input of a golden set."""

    kind: GoldenSourceKind = Field(
        description="usage_log, labels, request_labels, openai_evals or promptfoo."
    )
    path: Optional[str] = Field(
        None,
        description="The file (relative to the plan's folder); usage_log: default "
        "the workspace's usage/ folder.",
    )
    mapping: GoldenColumns = Field(default_factory=GoldenColumns, description="Columns of a label file.")
    prompt: Optional[str] = Field(None, description="promptfoo: the prompt template the variables fill.")
    input_var: Optional[str] = Field(None, description="promptfoo: the variable that holds the input.")


class GoldenPlan(_Section):
    """How a use case's golden set is built (``golden_dataset_refresh``)."""

    sources: list[GoldenSource] = Field(
        default_factory=list, description="Inputs; none: sampled from the usage log."
    )
    size: int = Field(200, ge=1, description="Items sampled from the usage log.")
    test_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of items in the test split (the rest: dev)."
    )
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="Similarity from which two items are near-duplicates."
    )
    max_bad_ratio: float = Field(
        0.25, ge=0, le=1, description="Fail the refresh past this share of bad rows."
    )
    max_duplicate_share: float = Field(
        0.2, ge=0, le=1, description="Warn when dedup removes more of the rows."
    )


class JudgePlan(_Section):
    """A use case's LLM judge (``use_cases.<name>.judge``): how answers are graded where a reference
    metric says too little (summaries, free text). See tasks/evaluate/judge.py."""

    kind: Literal["pairwise", "rubric"] = Field(
        description="pairwise: incumbent vs candidate, judged in both orders; rubric: each answer graded."
    )
    model: str = Field(description="LiteLLM model string of the judge, or 'embedded' (the embedded model).")
    api_base: Optional[str] = Field(None, description="OpenAI-compatible base URL of the judge.")
    rubric: Optional[str] = Field(None, description="Rubric text (rubric judges; a default one otherwise).")
    rubric_file: Optional[str] = Field(None, description="File holding the rubric (relative to the plan).")
    prompt_file: Optional[str] = Field(
        None, description="Prompt template replacing the shipped one (relative to the plan's folder)."
    )
    scale: int = Field(5, ge=2, le=10, description="Rubric grades run from 1 to this.")
    human_labels: Optional[str] = Field(
        None,
        description="Pairwise: CSV/JSONL of human preferences (input, reference, answer_a, answer_b, "
        "preferred = A|B|tie) the judge is calibrated on.",
    )
    min_agreement: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Least agreement with human labels or references (rubric: Spearman correlation) "
        "before the judge's verdict is trusted.",
    )
    max_position_inconsistency: float = Field(
        0.2, ge=0, le=1, description="Most pairs whose two orders disagree before the judge is distrusted."
    )
    min_calibration_items: int = Field(
        10, ge=1, description="Fewer labelled or reference-decided items: the judge counts as uncalibrated."
    )

    @model_validator(mode="after")
    def _one_rubric(self) -> "JudgePlan":
        if self.rubric and self.rubric_file:
            raise ValueError("give the rubric as text or as a file, not both")
        return self


class UseCase(_Section):
    task_type: TaskType = Field(description="What the calls do; decides metrics and workhorse vs frontier.")
    workload: Optional[Literal["workhorse", "frontier"]] = Field(
        None, description="Force the classification; else it follows task_type, then the logs' evidence."
    )
    labels: list[str] = Field(default_factory=list, description="Allowed answers of a classification.")
    json_schema: Optional[dict[str, Any]] = Field(None, description="Schema of an extraction's output.")
    list_order: Literal["multiset", "ordered"] = Field(
        "multiset",
        description="How an extraction's lists are matched: as multisets, or in order "
        "(longest common subsequence).",
    )
    latency: Optional[Literal["realtime", "batch"]] = Field(None, description="Latency need; else inferred.")
    owner: Optional[str] = Field(None, description="The migration champion for this use case.")
    incumbent: Optional[str] = Field(None, description="Model in production, when not the plan's incumbent.")
    candidates: list[str] = Field(
        default_factory=list, description="Candidate models for this use case only."
    )
    system_prompt: Optional[str] = Field(None, description="System message put before every prompt variant.")
    golden: Optional[GoldenPlan] = Field(
        None,
        description="Golden set sources and size; a frontier use case gets "
        "a golden set only with this section.",
    )
    judge: Optional[JudgePlan] = Field(
        None, description="An LLM judge whose verdict replaces the reference metric's (see README: Judges)."
    )

    @model_validator(mode="after")
    def _labels_for_classification(self) -> "UseCase":
        if self.task_type == "classification" and len(self.labels) == 1:
            raise ValueError("a classification needs at least two labels")
        return self


class EndpointLimits(_Section):
    """What an endpoint allows; a figure left out comes from the provider's defaults (see
    tasks/common/limits.py), and for any api_base from the general ones (16 in flight, no rate)."""

    max_concurrency: Optional[int] = Field(None, ge=1, description="Requests in flight at once.")
    rpm: Optional[float] = Field(None, gt=0, description="Requests per minute the endpoint allows.")
    tpm: Optional[float] = Field(
        None, gt=0, description="Tokens per minute (prompt + expected completion) it allows."
    )


class Candidate(EndpointLimits):
    model: str = Field(description="LiteLLM model string, e.g. deepinfra/Qwen/Qwen3-14B.")
    hosting: list[Hosting] = Field(default_factory=lambda: ["api"], description="Strategies to project.")
    api_base: Optional[str] = Field(
        None, description="Base URL of an OpenAI-compatible server (vLLM: .../v1)."
    )
    endpoint: Optional[str] = Field(
        None,
        description="Name of a ModelEndpoint block with this model's key "
        "(and base URL, unless api_base is set here).",
    )
    notes: Optional[str] = Field(None, description="Free text for the reviewers of the plan.")

    @field_validator("hosting", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SelfHostingPlan(_Section):
    gpu: str = "H100"
    gpu_hourly_usd: float = Field(2.0, gt=0, description="Rent of one GPU per hour.")
    gpus: int = Field(1, ge=1)
    tokens_per_hour: float = Field(
        158_760, gt=0, description="Generated tokens/hour per GPU unless measured."
    )
    input_tokens_per_hour: Optional[float] = Field(None, gt=0)
    engineering_fte: float = Field(0.5, ge=0, description="People running the serving stack.")
    fte_monthly_usd: float = Field(15_000, ge=0)
    other_fixed_monthly_usd: float = Field(0, ge=0, description="Monitoring, storage, networking.")
    one_off_usd: float = Field(0, ge=0, description="Migration work paid once.")

    @property
    def fixed_monthly_usd(self) -> float:
        """Always-on GPUs + engineering + the rest: what self-hosting costs at any volume."""
        return (
            self.gpu_hourly_usd * 730 * self.gpus
            + self.engineering_fte * self.fte_monthly_usd
            + self.other_fixed_monthly_usd
        )


class PricingPlan(_Section):
    overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="model -> {input_cost_per_token, output_cost_per_token, ...}."
    )
    batch_discount: float = Field(
        0.5, gt=0, le=1, description="Batch price = list x this, when the map has none."
    )

    @field_validator("overrides")
    @classmethod
    def _complete(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, entry in value.items():
            missing = {"input_cost_per_token", "output_cost_per_token"} - set(entry)
            if missing:
                raise ValueError(f"override for {model!r} lacks {sorted(missing)}")
        return value


class UseCaseRule(_Section):
    use_case: str
    model: Optional[str] = Field(None, description="Regex on the logged model.")
    tag: Optional[str] = Field(None, description="Regex on the logged metadata (tags, user, key alias).")


class SpendLogsDb(_Section):
    """The LiteLLM proxy's PostgreSQL database, whose ``LiteLLM_SpendLogs`` table the audit reads directly."""

    url: SecretStr = Field(
        description="postgresql://user@host:5432/litellm (the proxy's DATABASE_URL); write the "
        "password as ${VAR}, expanded at connect time, or leave it to PGPASSWORD."
    )
    since: Optional[datetime] = Field(
        None, description='Read rows with "startTime" >= since (UTC unless it has an offset).'
    )
    until: Optional[datetime] = Field(
        None, description='Read rows with "startTime" < until (UTC unless it has an offset).'
    )


class AuditPlan(_Section):
    max_bad_row_ratio: float = Field(
        0.05, ge=0, le=1, description="Fail the audit past this share of bad rows."
    )
    use_case_rules: list[UseCaseRule] = Field(
        default_factory=list, description="Assign a use case to rows without a use_case tag."
    )
    check_duplicate_ids: bool = Field(
        True,
        description="Quarantine duplicated request ids; off saves a hash "
        "of every id (the costliest check at 10M rows) when ids are known unique.",
    )
    log_sample_rate: float = Field(
        1.0, gt=0, le=1, description="Share of all calls the logs hold (costs scale by 1/x)."
    )
    min_coverage_days: float = Field(
        7.0,
        gt=0,
        description="Days between the first and last logged call below which "
        "the run-rate and every projection on it are marked as an extrapolation "
        "(still shown, with the reason); billed months are exact whatever the span.",
    )
    spend_logs_db: Optional[SpendLogsDb] = Field(
        None, description="Also read LiteLLM_SpendLogs from the proxy's database."
    )

    @field_validator("spend_logs_db")
    @classmethod
    def _no_password_in_plan(cls, source: Optional[SpendLogsDb]) -> Optional[SpendLogsDb]:
        if source:
            refuse_literal_password(source.url.get_secret_value())
        return source


class QualityPolicy(_Section):
    """The ``quality_policy`` section: what "good enough to migrate" means (see tasks/decision.py)."""

    model_config = ConfigDict(frozen=True)  # with _Section's extra="forbid"
    non_inferiority_margin: float = Field(
        0.02,
        ge=0,
        le=1,
        description="How much worse than the incumbent a "
        "candidate may be, absolute on the primary metric (0.02: 2 pp).",
    )
    min_items: int = Field(
        100, ge=1, description="Paired test items a candidate needs before it may migrate."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the bootstrap confidence interval.")
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Failed calls tolerated, candidate and incumbent."
    )
    max_p95_latency_ms: Optional[float] = Field(
        None, gt=0, description="A candidate slower than this at p95 is kept out."
    )
    primary_metric: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PRIMARY_METRIC),
        description="task type -> the per-item number the verdict is judged on (correct, value or a "
        "score detail such as f1); unnamed task types keep the default.",
    )
    n_resamples: int = Field(2000, ge=100, description="Bootstrap resamples.")
    seed: int = Field(0, description="Seed of the bootstrap: the same items give the same verdict.")
    min_score: Optional[float] = Field(
        None,
        ge=0,
        le=1,
        description="Absolute bar on the primary metric, used only when the incumbent "
        "cannot be evaluated (no key and no logged answers); the verdict says it used it.",
    )

    @field_validator("primary_metric", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        return {**DEFAULT_PRIMARY_METRIC, **value} if isinstance(value, Mapping) else value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Any | None) -> "QualityPolicy":
        """From a plain dict, a pydantic section (``model_dump``) or None; any problem is a ConfigError."""
        if isinstance(data, cls):
            return data
        data = dict(data.model_dump() if hasattr(data, "model_dump") else data or {})
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"quality_policy: unknown keys {unknown} (known: {sorted(cls.model_fields)})")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = ", ".join(
                f"{'.'.join(map(str, e['loc']))}={e.get('input')!r} ({e['msg']})" for e in error.errors()
            )
            raise ConfigError(f"quality_policy: invalid {problems}") from None

    def metric_for(self, task_type: str) -> str:
        return self.primary_metric.get(task_type, "value")


class Guardrails(_Section):
    """Thresholds of the rollout analysis: a breach needs significance AND a minimum effect."""

    alpha: float = Field(
        0.01, gt=0, lt=1, description="Significance level of every test (loop runs repeat tests)."
    )
    max_error_rate_increase: float = Field(
        0.02, ge=0, le=1, description="Tolerated error-rate excess (absolute)."
    )
    critical_error_rate: float = Field(
        0.25, gt=0, le=1, description="Candidate error rate that reverts at once."
    )
    latency_p95_increase: float = Field(0.25, ge=0, description="Tolerated p95 latency excess (relative).")
    latency_min_increase_ms: float = Field(50.0, ge=0, description="Smaller p95 excesses are never a breach.")
    latency_critical_ratio: float = Field(4.0, gt=1, description="p95 ratio that reverts at once.")
    max_invalid_rate_increase: float = Field(
        0.05, ge=0, le=1, description="Tolerated excess of invalid outputs."
    )
    min_agreement: float = Field(0.8, ge=0, le=1, description="Shadow: least agreement with the incumbent.")
    max_cost_ratio: float = Field(1.5, gt=0, description="Candidate cost share / traffic share tolerated.")
    min_critical_requests: int = Field(
        10, ge=1, description="Candidate requests needed before anything reverts."
    )


class RolloutPolicy(_Section):
    """Steps, bake time, minimum requests and counters of a staged rollout (Argo Rollouts' semantics)."""

    steps: list[Any] = Field(
        default_factory=lambda: ["shadow", 5, 10, 25, 50, 100],
        description="'shadow' first (optional), then increasing percentages ending at 100.",
    )
    bake_time: float = Field(
        600.0, ge=0, description="Seconds (or '10m', '1h') each step runs before it can pass."
    )
    min_requests: int = Field(200, ge=1, description="Requests per arm in a step before it can pass.")
    failure_limit: int = Field(
        1, ge=0, description="Revert when failed analyses exceed this (whole rollout)."
    )
    consecutive_error_limit: int = Field(
        1, ge=0, description="Revert when failed analyses in a row exceed this."
    )
    inconclusive_limit: int = Field(
        2, ge=0, description="Pause when inconclusive analyses in a step exceed this."
    )
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @field_validator("bake_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        units = {"s": 1, "m": 60, "h": 3600}
        if isinstance(value, str) and value[-1:] in units:
            return float(value[:-1]) * units[value[-1]]
        return value

    @field_validator("steps")
    @classmethod
    def _ordered(cls, value: list[Any]) -> list[Any]:
        shadow = value[:1] == ["shadow"]
        numbers = value[1:] if shadow else value
        if not numbers or any(isinstance(n, bool) or not isinstance(n, int) for n in numbers):
            raise ValueError("steps are 'shadow' (first, optional) then integer percentages")
        if numbers != sorted(set(numbers)) or numbers[0] <= 0 or numbers[-1] != 100:
            raise ValueError("percentages must increase strictly, start above 0 and end at 100")
        return value


class BatchPlan(_Section):
    """How the ``batch`` hosting of a provider model goes through its batch API (``eval.batch``)."""

    max_lines: Optional[int] = Field(
        None, ge=1, description="Lines per batch; default the provider's limit (OpenAI: 50,000)."
    )
    max_bytes: Optional[int] = Field(
        None, ge=1024, description="Bytes per input file; default the provider's limit (OpenAI: 200 MB)."
    )
    wait_s: float = Field(
        0,
        ge=0,
        description="How long the eval polls for its batches; past it the run ends 'waiting for batch' "
        "and the batch-collector deployment resumes it.",
    )
    poll_s: float = Field(30, gt=0, description="Seconds between two looks at a running batch.")
    max_attempts: int = Field(
        3, ge=1, description="Submissions of a line (expired, cancelled or failed) before its error stands."
    )
    failed_lines: Literal["resubmit", "sync"] = Field(
        "resubmit",
        description="A line the provider failed (retryable class): into a new batch, or a synchronous call.",
    )


class EvalPlan(_Section):
    """How an evaluation runs: where its shards run (the flow's parameters and the CLI's options override
    it) and how much of dev prompt tuning uses."""

    task_runner: Optional[Literal["threads", "dask"]] = Field(
        None,
        description="threads (default): every shard in the flow's event loop; "
        "dask: shards on a Dask cluster.",
    )
    dask_address: Optional[str] = Field(
        None,
        description="Scheduler of a running Dask cluster (tcp://host:8786); "
        "else a LocalCluster is started for the run.",
    )
    dask_workers: Optional[int] = Field(
        None, ge=1, description="Worker processes of that LocalCluster, one thread each (default 2)."
    )
    variants: Optional[list[str]] = Field(
        None,
        description="Prompt variants tuned on dev (default all: zero-shot, few-shot, constrained, "
        "few-shot-constrained); the flow's parameter overrides it.",
    )
    tuning_items: Optional[int] = Field(
        None,
        ge=1,
        description="Tune prompt variants on at most this many dev items (a stable sample by item id): "
        "enough to rank variants at a fraction of the calls; the verdict still takes the whole test split.",
    )
    batch: BatchPlan = Field(
        default_factory=BatchPlan, description="Provider batch jobs: limits, waiting, resubmission."
    )


class AlertRule(_Section):
    """One guardrail on one metric. Numeric metrics cross ``warning``/``critical``; drift metrics
    carry their own statistical test and breach with ``severity``."""

    metric: str = Field(description="Key of the metric in a window's metrics row.")
    direction: Literal["above", "below"] = Field("above", description="Breach when the value is above/below.")
    warning: Optional[float] = Field(None, description="Threshold of a warning.")
    critical: Optional[float] = Field(None, description="Threshold of a critical breach (reverts a rollout).")
    severity: Literal["warning", "critical"] = Field("warning", description="Severity of a drift breach.")
    min_requests: int = Field(20, ge=1, description="Fewer requests in the window is 'insufficient', not ok.")
    report_only: bool = Field(False, description="Record and show in artifacts, never page Slack.")
    enabled: bool = Field(True, description="Off: the rule is not evaluated.")


class DriftSettings(_Section):
    """Evidently-style tests: small samples by p-value, large ones by a distance (p-values of big
    samples flag differences nobody cares about)."""

    alpha: float = Field(
        0.01, gt=0, lt=1, description="K-S / chi-squared p-value under which inputs drifted."
    )
    distance: float = Field(
        0.1, gt=0, description="Normed Wasserstein / Jensen-Shannon limit for large samples."
    )
    large_sample: int = Field(1000, ge=10, description="Window size from which distances replace p-values.")
    min_samples: int = Field(30, ge=5, description="Fewer window or golden samples: no drift test.")


DEFAULT_RULES: dict[str, dict] = {
    "error_rate": {"metric": "error_rate", "warning": 0.05, "critical": 0.15},
    "latency_p95": {"metric": "latency_p95_ratio", "warning": 1.5, "critical": 2.0},
    "validity": {"metric": "validity", "direction": "below", "warning": 0.95, "critical": 0.85},
    "shadow_agreement": {"metric": "agreement", "direction": "below", "warning": 0.90, "critical": 0.80},
    "cost_per_request": {"metric": "cost_per_request_ratio", "warning": 1.5, "report_only": True},
    "input_drift": {"metric": "input_length_drift", "severity": "warning"},
    "output_drift": {"metric": "output_label_drift", "severity": "warning"},
}


class MonitorSettings(_Section):
    """The ``monitoring:`` section, with defaults for every key; a rule in the plan overrides only
    the keys it names (a rule of a new name needs its ``metric``)."""

    window_minutes: int = Field(15, ge=1, description="Length of one monitoring window.")
    cooldown_minutes: int = Field(
        60, ge=0, description="An open incident re-alerts after this, or on escalation."
    )
    baseline_windows: int = Field(
        12, ge=1, description="Earlier windows whose median p95/cost is the baseline."
    )
    drift: DriftSettings = Field(default_factory=DriftSettings)
    rules: dict[str, AlertRule] = Field(default_factory=dict, description="Rule name -> its guardrail.")
    migrated: Union[list[str], dict[str, Optional[str]]] = Field(
        default_factory=dict,
        description="Use cases already served by an open model outside a rollout: a list "
        "of names, or name -> model; the weekly re-evaluation watches them.",
    )

    @model_validator(mode="before")
    @classmethod
    def _over_default_rules(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("rules") or {}, Mapping):
            return data  # not a mapping: left to the field's own error
        rules: dict[str, Any] = {name: dict(rule) for name, rule in DEFAULT_RULES.items()}
        for name, override in (data.get("rules") or {}).items():
            if isinstance(override, BaseModel):
                override = override.model_dump()
            rules[name] = (
                {**rules.get(name, {}), **override}
                if isinstance(override, Mapping)
                else (rules.get(name) if override is None else override)
            )
        return {**data, "rules": rules}


class AlertsPlan(_Section):
    """The ``alerts:`` section: where Slack messages go. The webhook itself belongs in a block or
    the environment (see tasks/alerts.py for the precedence)."""

    slack_block: Optional[str] = Field(None, description="Name of the SlackAlerts block holding the webhook.")
    slack_webhook_url: Optional[str] = Field(
        None,
        description="The webhook URL itself; prefer a block or "
        "WORKHORSE_SLACK_WEBHOOK_URL: the plan is in git.",
    )
    slack_channel: Optional[str] = Field(None, description="Channel the messages name, e.g. #llm-migration.")
    mention: Optional[str] = Field(None, description="Put before each message, e.g. <!here> or <@U123>.")


class Plan(_Section):
    """The whole ``workhorse.yaml``."""

    company: Optional[str] = Field(None, description="Named in reports.")
    owner: Optional[str] = Field(None, description="Overall migration champion.")
    incumbent: str = Field("gpt-4o-mini", description="Model in production (LiteLLM string).")
    use_cases: dict[str, UseCase] = Field(default_factory=dict)
    candidates: list[Candidate] = Field(default_factory=list)
    limits: dict[str, EndpointLimits] = Field(
        default_factory=dict,
        description="Model or provider (gpt-4o-mini, openai, anthropic) -> its limits: for the incumbent, "
        "judges and any model called; a candidate's own figures win.",
    )
    self_hosting: SelfHostingPlan = Field(default_factory=SelfHostingPlan)
    pricing: PricingPlan = Field(default_factory=PricingPlan)
    audit: AuditPlan = Field(default_factory=AuditPlan)
    quality_policy: QualityPolicy = Field(default_factory=QualityPolicy)
    eval: EvalPlan = Field(default_factory=EvalPlan)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    monitoring: MonitorSettings = Field(default_factory=MonitorSettings)
    alerts: AlertsPlan = Field(default_factory=AlertsPlan)
    state_url: Optional[str] = Field(
        None,
        description="Shared state store (rollout, cache, incidents, traffic): postgresql://user@host/db; "
        "${VAR} is expanded at connect time, so keep the password in the environment. "
        "Default: the workspace's state.db (SQLite).",
    )

    _file: Optional[Path] = PrivateAttr(None)

    @field_validator("state_url")
    @classmethod
    def _no_password_in_plan(cls, url: Optional[str]) -> Optional[str]:
        # The plan lives in git and its state URL is pinned in the workspace: no password there.
        return refuse_literal_password(url)

    @property
    def folder(self) -> Optional[Path]:
        """The folder of the file the plan was read from (relative paths start there); None for a dict."""
        return self._file.parent if self._file else None

    def owner_of(self, use_case: str) -> Optional[str]:
        case = self.use_cases.get(use_case)
        return (case.owner if case else None) or self.owner

    def limits_for(self, model: str, own: Optional[EndpointLimits] = None) -> EndpointLimits:
        """A model's limits: its own figures (a candidate's), then ``limits`` by model, then by provider."""
        layers = [
            own,
            self.limits.get(model),
            self.limits.get(model.split("/", 1)[0]) if "/" in model else None,
        ]
        merged = {}
        for name in EndpointLimits.model_fields:
            merged[name] = next(
                (getattr(x, name) for x in layers if x and getattr(x, name) is not None), None
            )
        return EndpointLimits(**merged)

    def candidates_for(self, use_case: str) -> list[Candidate]:
        """Per-use-case candidates if named there, else the plan's."""
        case = self.use_cases.get(use_case)
        if case and case.candidates:
            by_model = {c.model: c for c in self.candidates}
            return [by_model.get(m, Candidate(model=m)) for m in case.candidates]
        return list(self.candidates)


def find_plan(path: str | os.PathLike | None = None, workspace_root: Path | None = None) -> Path | None:
    """Where the plan is: an explicit file or folder > the workspace's > the current folder's."""
    options = [Path(path)] if path else []
    options += [workspace_root / PLAN_FILE] if workspace_root else []
    options.append(Path.cwd() / PLAN_FILE)
    for option in options:
        file = option / PLAN_FILE if option.is_dir() else option
        if file.is_file():
            return file
    if path:
        raise ConfigError(
            f"no migration plan at {path} (expected a {PLAN_FILE} file or a folder holding one)"
        )
    return None


def load_plan(path: str | os.PathLike | None = None, workspace_root: Path | None = None) -> Plan:
    """Read and check ``workhorse.yaml``; an absent plan is the empty plan (all defaults)."""
    file = find_plan(path, workspace_root)
    if file is None:
        return Plan()
    data, lines = _read_yaml(file)
    plan = parse_plan(data, str(file), lines)
    plan._file = file
    return plan


def plan_from(plan: str | os.PathLike | dict | Plan | None, workspace_root: Path | None = None) -> Plan:
    """A flow's ``plan`` parameter as a Plan: a Plan as it is, a dict validated (tests, API callers),
    a file or folder read, None the workspace's plan (else the defaults)."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, dict):
        return parse_plan(plan, "plan parameter")
    return load_plan(plan, workspace_root)


def plan_workspace(
    workspace: str | os.PathLike | None = None, plan: str | os.PathLike | dict | Plan | None = None
) -> tuple["Workspace", Plan]:
    """The workspace, bound to the state store its plan names, and the plan (as ``plan_from`` reads it)."""
    from workhorse.workspace import Workspace

    ws = Workspace.resolve(workspace)
    plan = plan_from(plan, ws.root)
    if plan.state_url:  # a plan without one leaves an existing binding alone
        ws.pin_state_url(plan.state_url)
    return ws, plan


MAX_PLAN_BYTES = 1 << 20  # a plan is reviewed by people in git; a bigger file is some other file


KeyLines = Mapping[
    tuple[str, ...], int
]  # path of a key in the document ("0" for a list's first item) -> line


def _read_yaml(file: Path) -> tuple[Any, KeyLines]:
    """The YAML in ``file`` and the line of each key; every way it can be unreadable is a ConfigError
    naming the file."""
    if file.stat().st_size > MAX_PLAN_BYTES:
        raise ConfigError(
            f"{file}: {file.stat().st_size} bytes is too big for a migration plan (limit 1 MiB)"
        )
    try:
        data, lines = _load_with_lines(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: not UTF-8 text (byte {error.start}); is it a plan?") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {error}") from error
    except RecursionError:
        raise ConfigError(f"{file}: YAML nested too deeply to be a migration plan") from None
    return data or {}, lines


def _load_with_lines(text: str) -> tuple[Any, KeyLines]:
    """``yaml.safe_load`` that keeps the node tree, whose marks give each key's line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), _key_lines(node)
    finally:
        loader.dispose()


def _key_lines(root: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key and list item, by path; a node reached again through an
    alias is walked once (a billion-laughs plan must not expand here either)."""
    lines: dict[tuple[str, ...], int] = {}
    stack, seen = [((), root)], set()
    while stack:
        path, node = stack.pop()
        if id(node) in seen or not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            pairs = [
                (key.value, key.start_mark.line, value)
                for key, value in node.value
                if isinstance(key, yaml.ScalarNode)
            ]
        else:
            pairs = [(str(i), item.start_mark.line, item) for i, item in enumerate(node.value)]
        for key, line, value in pairs:
            lines.setdefault(path + (key,), line + 1)
            stack.append((path + (key,), value))
    return lines


MAX_PROBLEMS_SHOWN = 10  # a CSV read as a plan has a wrong key per column; the first few say enough


def parse_plan(data: Any, source: str = "workhorse.yaml", lines: KeyLines | None = None) -> Plan:
    """Validate plan data; the error gives every wrong key's path, its line in the file when
    ``lines`` are known, and for an unknown key the declared key it most resembles."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the plan must be a mapping of sections, not {type(data).__name__}")
    try:
        return Plan.model_validate(data)
    except ValidationError as error:
        problems = [_problem(e, source, lines or {}) for e in error.errors()]
        more = len(problems) - MAX_PROBLEMS_SHOWN
        shown = problems[:MAX_PROBLEMS_SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        raise ConfigError("\n".join(shown)) from None


def _problem(error: Mapping[str, Any], source: str, lines: KeyLines) -> str:
    """``<file> line <n>: <what>`` for one validation error."""
    loc = tuple(str(part) for part in error["loc"])
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f"{source} line {line}" if line else source
    path = ".".join(loc)
    if error["type"] != "extra_forbidden":
        return f"{where}: {path}: {error['msg']}"
    declared = _declared_keys(loc[:-1])
    close = difflib.get_close_matches(loc[-1], declared, n=1)
    hint = (
        (f"did you mean {close[0]}?" if close else f"known keys: {', '.join(declared)}") if declared else ""
    )
    return f"{where}: unknown key {path}" + (f" ({hint})" if hint else "")


def _declared_keys(path: tuple[str, ...]) -> list[str]:
    """The keys the section at ``path`` (inside a Plan) declares; [] where the path is not a section."""
    annotation: Any = Plan
    for part in path:
        annotation = _unwrap_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if part not in annotation.model_fields:
                return []
            annotation = annotation.model_fields[part].annotation
        elif get_origin(annotation) in (dict, list):  # the part is a use case's name or a list index
            annotation = get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap_optional(annotation)
    return (
        list(annotation.model_fields)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel)
        else []
    )


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


def resolve(
    name: str,
    *,
    parameter: Any = None,
    plan_value: Any = None,
    block: Callable[[], Any] | None = None,
    env: str | None = None,
    default: Any = None,
) -> Any:
    """The one precedence rule: flow parameter > workspace file > Block > environment > default.

    ``block`` is a callable so a Prefect Block is only loaded (an API call) when the earlier
    sources are silent; a missing block counts as silent.
    """
    for value in (parameter, plan_value):
        if value is not None:
            return value
    if block is not None:
        try:
            value = block()
        except (ValueError, LookupError):  # Prefect raises ValueError for an unknown block name
            value = None
        if value is not None:
            return value
    if env and os.environ.get(env) not in (None, ""):
        return os.environ[env]
    return default
