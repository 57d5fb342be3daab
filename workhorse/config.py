"""The migration plan (``workhorse.yaml``): a typed loader with clear errors, and setting precedence.

The plan is what a team reviews in git: use cases (task type, labels or JSON schema, latency
need, owner), the incumbent, the candidates, self-hosting costs, the quality policy, the
rollout steps, the alert channel. Sections that later steps own (rollout, monitoring, ...) accept
keys this module does not know yet, so adding one never breaks an older plan.

Precedence of any setting, written once in ``resolve``: flow parameter > workspace file (the
plan) > Prefect Block > environment variable > default.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from workhorse.dburl import refuse_literal_password
from workhorse.errors import ConfigError

if TYPE_CHECKING:
    from workhorse.workspace import Workspace

PLAN_FILE = "workhorse.yaml"
TaskType = Literal["classification", "extraction", "summarization", "qa", "generation"]
Hosting = Literal["api", "batch", "self_hosted"]


class _Section(BaseModel):
    # Later steps add keys to their sections; unknown keys are kept, not rejected.
    model_config = ConfigDict(extra="allow")


class UseCase(_Section):
    task_type: TaskType = Field(description="What the calls do; decides metrics and workhorse vs frontier.")
    workload: Optional[Literal["workhorse", "frontier"]] = Field(
        None, description="Force the classification; else it follows task_type, then the logs' evidence.")
    labels: list[str] = Field(default_factory=list, description="Allowed answers of a classification.")
    json_schema: Optional[dict[str, Any]] = Field(None, description="Schema of an extraction's output.")
    list_order: Literal["multiset", "ordered"] = Field(
        "multiset", description="How an extraction's lists are matched: as multisets, or in order "
        "(longest common subsequence).")
    latency: Optional[Literal["realtime", "batch"]] = Field(None, description="Latency need; else inferred.")
    owner: Optional[str] = Field(None, description="The migration champion for this use case.")
    incumbent: Optional[str] = Field(None, description="Model in production, when not the plan's incumbent.")
    candidates: list[str] = Field(default_factory=list, description="Candidate models for this use case only.")
    system_prompt: Optional[str] = None

    @model_validator(mode="after")
    def _labels_for_classification(self) -> "UseCase":
        if self.task_type == "classification" and len(self.labels) == 1:
            raise ValueError("a classification needs at least two labels")
        return self


class Candidate(_Section):
    model: str = Field(description="LiteLLM model string, e.g. deepinfra/Qwen/Qwen3-14B.")
    hosting: list[Hosting] = Field(default_factory=lambda: ["api"], description="Strategies to project.")
    api_base: Optional[str] = None
    endpoint: Optional[str] = Field(None, description="Name of a ModelEndpoint block with this model's key "
                                                      "(and base URL, unless api_base is set here).")
    notes: Optional[str] = None

    @field_validator("hosting", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SelfHostingPlan(_Section):
    gpu: str = "H100"
    gpu_hourly_usd: float = Field(2.0, gt=0, description="Rent of one GPU per hour.")
    gpus: int = Field(1, ge=1)
    tokens_per_hour: float = Field(158_760, gt=0, description="Generated tokens/hour per GPU unless measured.")
    input_tokens_per_hour: Optional[float] = Field(None, gt=0)
    engineering_fte: float = Field(0.5, ge=0, description="People running the serving stack.")
    fte_monthly_usd: float = Field(15_000, ge=0)
    other_fixed_monthly_usd: float = Field(0, ge=0, description="Monitoring, storage, networking.")
    one_off_usd: float = Field(0, ge=0, description="Migration work paid once.")

    @property
    def fixed_monthly_usd(self) -> float:
        """Always-on GPUs + engineering + the rest: what self-hosting costs at any volume."""
        return (self.gpu_hourly_usd * 730 * self.gpus + self.engineering_fte * self.fte_monthly_usd
                + self.other_fixed_monthly_usd)


class PricingPlan(_Section):
    overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="model -> {input_cost_per_token, output_cost_per_token, ...}.")
    batch_discount: float = Field(0.5, gt=0, le=1, description="Batch price = list x this, when the map has none.")

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

    url: SecretStr = Field(description="postgresql://user@host:5432/litellm (the proxy's DATABASE_URL); write the "
                                       "password as ${VAR}, expanded at connect time, or leave it to PGPASSWORD.")
    since: Optional[datetime] = Field(None, description='Read rows with "startTime" >= since (UTC unless it has an offset).')
    until: Optional[datetime] = Field(None, description='Read rows with "startTime" < until (UTC unless it has an offset).')


class AuditPlan(_Section):
    max_bad_row_ratio: float = Field(0.05, ge=0, le=1, description="Fail the audit past this share of bad rows.")
    use_case_rules: list[UseCaseRule] = Field(default_factory=list,
                                              description="Assign a use case to rows without a use_case tag.")
    check_duplicate_ids: bool = Field(True, description="Quarantine duplicated request ids; off saves a hash "
                                      "of every id (the costliest check at 10M rows) when ids are known unique.")
    log_sample_rate: float = Field(1.0, gt=0, le=1, description="Share of all calls the logs hold (costs scale by 1/x).")
    min_coverage_days: float = Field(7.0, gt=0, description="Days between the first and last logged call below which "
                                     "the run-rate and every projection on it are marked as an extrapolation "
                                     "(still shown, with the reason); billed months are exact whatever the span.")
    spend_logs_db: Optional[SpendLogsDb] = Field(None, description="Also read LiteLLM_SpendLogs from the proxy's database.")

    @field_validator("spend_logs_db")
    @classmethod
    def _no_password_in_plan(cls, source: Optional[SpendLogsDb]) -> Optional[SpendLogsDb]:
        if source:
            refuse_literal_password(source.url.get_secret_value())
        return source


class QualityPolicy(_Section):
    non_inferiority_margin: float = Field(0.02, ge=0, le=1)
    min_items: int = Field(100, ge=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    min_score: Optional[float] = Field(
        None, ge=0, le=1, description="Absolute bar on the primary metric, used only when the incumbent "
        "cannot be evaluated (no key and no logged answers); the verdict says it used it.")


class Guardrails(_Section):
    """Thresholds of the rollout analysis: a breach needs significance AND a minimum effect."""

    alpha: float = Field(0.01, gt=0, lt=1, description="Significance level of every test (loop runs repeat tests).")
    max_error_rate_increase: float = Field(0.02, ge=0, le=1, description="Tolerated error-rate excess (absolute).")
    critical_error_rate: float = Field(0.25, gt=0, le=1, description="Candidate error rate that reverts at once.")
    latency_p95_increase: float = Field(0.25, ge=0, description="Tolerated p95 latency excess (relative).")
    latency_min_increase_ms: float = Field(50.0, ge=0, description="Smaller p95 excesses are never a breach.")
    latency_critical_ratio: float = Field(4.0, gt=1, description="p95 ratio that reverts at once.")
    max_invalid_rate_increase: float = Field(0.05, ge=0, le=1, description="Tolerated excess of invalid outputs.")
    min_agreement: float = Field(0.8, ge=0, le=1, description="Shadow: least agreement with the incumbent.")
    max_cost_ratio: float = Field(1.5, gt=0, description="Candidate cost share / traffic share tolerated.")
    min_critical_requests: int = Field(10, ge=1, description="Candidate requests needed before anything reverts.")


class RolloutPolicy(_Section):
    """Steps, bake time, minimum requests and counters of a staged rollout (Argo Rollouts' semantics)."""

    steps: list[Any] = Field(default_factory=lambda: ["shadow", 5, 10, 25, 50, 100],
                             description="'shadow' first (optional), then increasing percentages ending at 100.")
    bake_time: float = Field(600.0, ge=0, description="Seconds (or '10m', '1h') each step runs before it can pass.")
    min_requests: int = Field(200, ge=1, description="Requests per arm in a step before it can pass.")
    failure_limit: int = Field(1, ge=0, description="Revert when failed analyses exceed this (whole rollout).")
    consecutive_error_limit: int = Field(1, ge=0, description="Revert when failed analyses in a row exceed this.")
    inconclusive_limit: int = Field(2, ge=0, description="Pause when inconclusive analyses in a step exceed this.")
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


class EvalPlan(_Section):
    """How an evaluation runs: where its shards run (the flow's parameters and the CLI's options override
    it) and how much of dev prompt tuning uses."""

    task_runner: Optional[Literal["threads", "dask"]] = Field(
        None, description="threads (default): every shard in the flow's event loop; dask: shards on a Dask cluster.")
    dask_address: Optional[str] = Field(None, description="Scheduler of a running Dask cluster (tcp://host:8786); "
                                                          "else a LocalCluster is started for the run.")
    dask_workers: Optional[int] = Field(None, ge=1, description="Worker processes of that LocalCluster, one thread "
                                                                "each (default 2).")
    variants: Optional[list[str]] = Field(
        None, description="Prompt variants tuned on dev (default all: zero-shot, few-shot, constrained, "
        "few-shot-constrained); the flow's parameter overrides it.")
    tuning_items: Optional[int] = Field(
        None, ge=1, description="Tune prompt variants on at most this many dev items (a stable sample by item id): "
        "enough to rank variants at a fraction of the calls; the verdict still takes the whole test split.")


class Plan(_Section):
    """The whole ``workhorse.yaml``."""

    company: Optional[str] = None
    owner: Optional[str] = Field(None, description="Overall migration champion.")
    incumbent: str = "gpt-4o-mini"
    use_cases: dict[str, UseCase] = Field(default_factory=dict)
    candidates: list[Candidate] = Field(default_factory=list)
    self_hosting: SelfHostingPlan = Field(default_factory=SelfHostingPlan)
    pricing: PricingPlan = Field(default_factory=PricingPlan)
    audit: AuditPlan = Field(default_factory=AuditPlan)
    quality_policy: QualityPolicy = Field(default_factory=QualityPolicy)
    eval: EvalPlan = Field(default_factory=EvalPlan)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    monitoring: _Section = Field(default_factory=_Section)
    alerts: _Section = Field(default_factory=_Section)
    state_url: Optional[str] = Field(
        None, description="Shared state store (rollout, cache, incidents, traffic): postgresql://user@host/db; "
                          "${VAR} is expanded at connect time, so keep the password in the environment. "
                          "Default: the workspace's state.db (SQLite).")

    @field_validator("state_url")
    @classmethod
    def _no_password_in_plan(cls, url: Optional[str]) -> Optional[str]:
        # The plan lives in git and its state URL is pinned in the workspace: no password there.
        return refuse_literal_password(url)

    def owner_of(self, use_case: str) -> Optional[str]:
        case = self.use_cases.get(use_case)
        return (case.owner if case else None) or self.owner

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
        raise ConfigError(f"no migration plan at {path} (expected a {PLAN_FILE} file or a folder holding one)")
    return None


def load_plan(path: str | os.PathLike | None = None, workspace_root: Path | None = None) -> Plan:
    """Read and check ``workhorse.yaml``; an absent plan is the empty plan (all defaults)."""
    file = find_plan(path, workspace_root)
    if file is None:
        return Plan()
    return parse_plan(_read_yaml(file), str(file))


def plan_workspace(workspace: str | os.PathLike | None = None,
                   plan_path: str | os.PathLike | None = None) -> tuple["Workspace", Plan]:
    """The workspace, bound to the state store its plan names, and the plan."""
    from workhorse.workspace import Workspace

    ws = Workspace.resolve(workspace)
    plan = load_plan(plan_path, ws.root)
    if plan.state_url:  # a plan without one leaves an existing binding alone
        ws.pin_state_url(plan.state_url)
    return ws, plan


MAX_PLAN_BYTES = 1 << 20  # a plan is reviewed by people in git; a bigger file is some other file


def _read_yaml(file: Path) -> Any:
    """The YAML in ``file``; every way it can be unreadable is a ConfigError naming the file."""
    if file.stat().st_size > MAX_PLAN_BYTES:
        raise ConfigError(f"{file}: {file.stat().st_size} bytes is too big for a migration plan (limit 1 MiB)")
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: not UTF-8 text (byte {error.start}); is it a plan?") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {error}") from error
    except RecursionError:
        raise ConfigError(f"{file}: YAML nested too deeply to be a migration plan") from None


def parse_plan(data: Any, source: str = "workhorse.yaml") -> Plan:
    """Validate plan data; the error lists every wrong key with its path in the file."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the plan must be a mapping of sections, not {type(data).__name__}")
    try:
        return Plan.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{source}: {problems}") from None


def resolve(name: str, *, parameter: Any = None, plan_value: Any = None,
            block: Callable[[], Any] | None = None, env: str | None = None, default: Any = None) -> Any:
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
