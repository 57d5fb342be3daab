"""The moving parts of an evaluation run: contenders from the plan, shards as Prefect tasks,
the embedded engine (server or offline batch), scores, verdict and published results.

Shards run in one of two places (``Execution``):

- ``threads`` (default): every shard is an async task in the flow's event loop, so an endpoint's
  concurrency limit and circuit breaker are shared by all its shards;
- ``dask``: every shard is a task on a Dask cluster (prefect-dask), for when the client's CPU is
  the bottleneck. Each worker thread runs one shard at a time in its own event loop, so limits and
  breakers cannot be shared: an endpoint's limit is split evenly over the cluster's worker threads
  (counted at submission; an adaptive cluster that grows later can exceed it), and a breaker only
  sees the failures of its own shard. Shard tasks carry no API key: a key from a ModelEndpoint
  block is fetched again on the worker, one from the environment is read from the worker's own
  environment (a LocalCluster inherits the flow's; a remote cluster needs its own). An embedded
  vLLM server the flow starts listens on 127.0.0.1: a remote cluster needs ``engine_api_base``.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import math
import os
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from workhorse.config import EndpointLimits, Plan, resolve
from workhorse.errors import ConfigError
from workhorse.tasks.common.engines import (
    EMBEDDED_LITELLM,
    BatchParams,
    VLLMServer,
    prepare_embedded_model,
    run_offline_batch,
)
from workhorse.tasks.common.limits import provider_of, resolve_limits
from workhorse.tasks.common.pricing import PriceCatalog, plan_catalog, record_throughput
from workhorse.tasks.common.runner import (
    RETRYABLE,
    CircuitBreaker,
    EndpointLimiter,
    EvalResponse,
    ModelRequest,
    ModelSpec,
    ResponseCache,
    Runner,
    call_cost,
    response_row,
)
from workhorse.tasks.evaluate.batch import (
    BatchClient,
    BatchPending,
    BatchSettings,
    is_provider_batch,
    read_jobs,
)
from workhorse.tasks.evaluate.matrix import (
    AS_LOGGED,
    CANDIDATE_VARIANTS,
    Contender,
    replay_incumbent,
    score_rows,
    shards,
)
from workhorse.tasks.evaluate.progress import current_progress
from workhorse.workspace import Workspace


def is_embedded(spec: ModelSpec) -> bool:
    return spec.model == EMBEDDED_LITELLM and not spec.api_base


# The key LiteLLM reads for the commonest providers: asking LiteLLM itself costs its import (seconds).
PROVIDER_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def has_credentials(model: str) -> bool:
    """Whether LiteLLM finds the provider's key in the environment (local vLLM needs none)."""
    if model.startswith("hosted_vllm/"):
        return True
    key_env = PROVIDER_KEY_ENV.get(provider_of(model))
    if key_env:
        return bool(os.environ.get(key_env))
    import litellm

    litellm.suppress_debug_info = True
    return bool(litellm.validate_environment(model=model).get("keys_in_environment"))


def hostings_for(latency: str | None) -> list[str]:
    """A realtime use case cannot wait for a batch: evaluate batch hosting only where it could serve."""
    return ["api", "self_hosted"] if latency == "realtime" else ["api", "self_hosted", "batch"]


def evaluated_use_cases(plan: Plan, workspace: Workspace) -> list[str]:
    """Workhorse use cases that have a golden set (a refused refresh leaves the last good version)."""
    from workhorse.tasks.golden.versions import versions

    return [
        name
        for name, case in plan.use_cases.items()
        if case.workload != "frontier" and versions(workspace, name)
    ]


def contenders_from_plan(
    plan: Plan,
    use_case: str,
    models: list[str] | None,
    hostings: list[str] | None,
    variants: list[str] | None,
    workspace_root: Path | None = None,
) -> tuple[Contender, list[Contender], list[str]]:
    """The incumbent (always, for replay) and the runnable candidates; the rest are listed as skipped."""
    case = plan.use_cases.get(use_case)
    incumbent_model = (case.incumbent if case and case.incumbent else None) or plan.incumbent
    catalog = plan_catalog(plan, workspace_root)
    incumbent = Contender(
        "incumbent",
        candidate_spec(incumbent_model, "api", None, catalog, plan.limits_for(incumbent_model)),
        (AS_LOGGED,),
        callable=has_credentials(incumbent_model),
    )
    skipped = (
        []
        if incumbent.callable
        else [f"incumbent {incumbent_model}: no API key here, only its logged answers are used (replay)"]
    )
    candidates = []
    for candidate in plan.candidates_for(use_case):
        block = endpoint_block(candidate.endpoint)
        for hosting in candidate.hosting:
            if (models and candidate.model not in models) or (hostings and hosting not in hostings):
                continue
            if not (block and block.api_key) and not has_credentials(candidate.model):
                skipped.append(f"candidate {candidate.model} ({hosting}): no API key for its provider here")
                continue
            api_base = candidate.api_base or (block and block.api_base)
            limits = plan.limits_for(candidate.model, candidate)
            spec = candidate_spec(candidate.model, hosting, api_base, catalog, limits)
            if block and block.api_key:  # the key lives in the block, in memory only from here on
                spec = replace(spec, api_key=block.api_key.get_secret_value())
            candidates.append(Contender("candidate", spec, checked_variants(variants)))
    return incumbent, candidates, skipped


def checked_variants(variants: list[str] | None) -> tuple[str, ...]:
    """The prompt variants to tune (all by default); a misspelt one is an error, not a silent skip."""
    unknown = sorted(set(variants or ()) - set(CANDIDATE_VARIANTS))
    if unknown:
        raise ConfigError(f"unknown prompt variant(s) {unknown}; known: {', '.join(CANDIDATE_VARIANTS)}")
    return tuple(variants or CANDIDATE_VARIANTS)


def endpoint_block(name: str | None):
    """The candidate's ModelEndpoint block, if the plan names one (workspace file > Block > environment)."""
    if not name:
        return None
    from workhorse.blocks.endpoints import ModelEndpoint

    try:
        return ModelEndpoint.load(name, _sync=True)  # sync even when called from an async flow
    except ValueError as error:
        raise ConfigError(
            f"the plan names ModelEndpoint block {name!r}, which does not exist "
            f"(create it with `workhorse blocks init`)"
        ) from error


def candidate_spec(
    model: str,
    hosting: str,
    api_base: str | None,
    catalog: PriceCatalog,
    limits: EndpointLimits | None = None,
) -> ModelSpec:
    """The candidate as the runner calls it, priced by the plan's one catalog (overrides, map,
    self-hosting); a price nobody knows stays None, so its cost is recorded as unpriced. Its limits
    are the plan's (``limits``), each one left out taken from the provider's defaults.

    A batch hosting of a provider model goes through its batch API (``tasks/evaluate/batch.py``),
    priced at batch rates; a self-hosted one is a local engine: fewer callers, more time."""
    price = catalog.price(model, hosting)
    prices = (
        {"input_cost_per_token": price.input_per_token, "output_cost_per_token": price.output_per_token}
        if price
        else {}
    )
    limits = limits or EndpointLimits()
    local_engine = model.startswith("hosted_vllm/") and hosting in ("self_hosted", "batch")
    resolved = resolve_limits(
        model, api_base, limits.max_concurrency or (8 if local_engine else None), limits.rpm, limits.tpm
    )
    spec_limits = {"max_concurrency": resolved.max_concurrency, "rpm": resolved.rpm, "tpm": resolved.tpm}
    if local_engine:
        return ModelSpec(
            model=model,
            name=f"{model.split('/')[-1]} ({hosting})",
            api_base=api_base,
            hosting=hosting,
            timeout_s=180,
            **spec_limits,
            **prices,
        )
    name = f"{model} ({hosting})" if hosting != "api" else ""
    return ModelSpec(model=model, name=name, api_base=api_base, hosting=hosting, **spec_limits, **prices)


# Processes with one thread each: the client's CPU work is what is spread out. The scheduler's
# HTTP server (dashboard) takes any free port: two runs on one machine must not fight over 8787.
LOCAL_CLUSTER = {"threads_per_worker": 1, "processes": True, "dashboard_address": "127.0.0.1:0"}


@dataclass(frozen=True)
class Execution:
    """Where the shards run: ``threads`` (the flow's event loop) or ``dask`` (a Dask cluster at
    ``dask_address``, else a LocalCluster of ``dask_workers`` processes with one thread each)."""

    task_runner: str = "threads"
    dask_address: str | None = None
    dask_workers: int = 2

    @property
    def on_dask(self) -> bool:
        return self.task_runner == "dask"


def execution_from(
    plan: Plan,
    task_runner: str | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> Execution:
    """Flow parameter > the plan's ``eval`` section > default (threads)."""
    execution = Execution(
        task_runner=resolve(
            "task_runner", parameter=task_runner, plan_value=plan.eval.task_runner, default="threads"
        ),
        dask_address=resolve("dask_address", parameter=dask_address, plan_value=plan.eval.dask_address),
        dask_workers=resolve(
            "dask_workers", parameter=dask_workers, plan_value=plan.eval.dask_workers, default=2
        ),
    )
    if execution.task_runner not in ("threads", "dask"):
        raise ConfigError(f"task_runner {execution.task_runner!r} is not one of: threads, dask")
    if execution.dask_workers < 1:
        raise ConfigError(f"dask_workers must be at least 1, not {execution.dask_workers}")
    return execution


def key_blocks_for(plan: Plan, use_case: str) -> dict[str, str]:
    """model -> name of the ModelEndpoint block holding its key: what a Dask worker loads the key from."""
    return {c.model: c.endpoint for c in plan.candidates_for(use_case) if c.endpoint}


class EvalContext:
    """Engines and bookkeeping for one run: starts the embedded vLLM server only if needed, and
    the Dask task runner (a LocalCluster, or a client of a running one) when shards go there."""

    def __init__(
        self,
        workspace: Workspace,
        run_id: str,
        shard_size: int,
        engine_api_base: str | None = None,
        execution: Execution = Execution(),
        key_blocks: dict[str, str] | None = None,
        batch_engine: str | None = None,
    ):
        self.workspace, self.run_id, self.shard_size = workspace, run_id, shard_size
        self.engine_api_base, self.batch_engine = engine_api_base, batch_engine
        self.execution, self.key_blocks = execution, dict(key_blocks or {})
        self.server: VLLMServer | None = None
        self.dask = None  # a started prefect_dask.DaskTaskRunner, once the first shard goes there
        self.limits: dict[str, EndpointLimiter] = {}  # per endpoint, shared by every shard
        self.breakers: dict[str, CircuitBreaker] = {}  # per endpoint too: one outage opens one circuit
        self.generated: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # model -> [tokens, seconds]
        # Provider batch jobs: the plan's eval.batch, and each batched model priced synchronously.
        self.batch = BatchSettings()
        self.sync_specs: dict[str, ModelSpec] = {}

    def __enter__(self) -> "EvalContext":
        return self

    def __exit__(self, *exc) -> None:
        if self.dask is not None:
            if not self.execution.dask_address:
                self._freeze_workers()
            self.dask.__exit__(*exc)  # closes the client, and the LocalCluster if this run started one
        if self.server is not None:
            self.server.stop()

    def _freeze_workers(self) -> None:
        """A process that imported LiteLLM spends 2-4 s collecting garbage on exit, past the
        nanny's patience (it kills it, with a warning); frozen objects are skipped: 0.25 s."""
        try:
            self.dask.client.run(gc.freeze)
        except Exception:  # a worker already gone must not hide why the run ended
            pass

    def dask_runner(self):
        """The run's DaskTaskRunner, started on first use (blocking: call it off the event loop)."""
        if self.dask is None:
            from prefect_dask import DaskTaskRunner

            if self.execution.dask_address:
                runner = DaskTaskRunner(address=self.execution.dask_address)
            else:
                runner = DaskTaskRunner(
                    cluster_kwargs=LOCAL_CLUSTER | {"n_workers": self.execution.dask_workers}
                )
            self.dask = runner.__enter__()
        return self.dask

    def server_base(self) -> str:
        if self.engine_api_base:
            return self.engine_api_base
        if self.server is None:
            model_dir = prepare_embedded_model(self.workspace.models_dir)
            self.server = VLLMServer(model_dir, cache_root=self.workspace.subdir("vllm")).start()
            get_run_logger().info(f"vLLM server ready in {self.server.started_in_s:.0f} s")
        return self.server.api_base

    def account(self, label: str, rows: list[EvalResponse], seconds: float) -> None:
        fresh = [r for r in rows if not r.cached and r.error_type is None]
        if fresh:
            self.generated[label][0] += sum(r.completion_tokens or 0 for r in fresh)
            self.generated[label][1] += seconds

    def throughput(self) -> dict[str, float]:
        """Generated tokens per second of each model measured in this run."""
        return {label: tokens / seconds for label, (tokens, seconds) in self.generated.items() if seconds}


async def generate(context: EvalContext, requests: list[ModelRequest], phase: str) -> list[EvalResponse]:
    """Answer all requests: one async task per (model, variant, shard) in the flow's event loop,
    so an endpoint's concurrency limit is shared by all its shards; the embedded model's batch
    hosting goes to one offline engine call for the whole phase, after the served shards.

    A batch request the embedded server also answers in this phase (same prompt and parameters:
    the same model served and batched) takes the served answer, priced at its own hosting's rate:
    greedy decoding gives the same text, and on one machine two engines computing it side by
    side fight for the same cores (30 items took 3.5 min so on a 2-core CPU)."""
    current_progress().expect(phase, requests)
    offline: list[ModelRequest] = []
    provider_batch = [r for r in requests if is_provider_batch(r.model)]
    groups: dict[tuple, list[ModelRequest]] = defaultdict(list)
    for request in requests:
        if is_embedded(request.model) and request.model.hosting == "batch":
            offline.append(request)
        elif not is_provider_batch(request.model):
            groups[(request.model.label, request.prompt_variant)].append(request)
    served = [r for group in groups.values() for r in group]
    served_keys = {r.cache_key for r in served if is_embedded(r.model)}
    twins = [r for r in offline if r.cache_key in served_keys]
    if needs_server(context, served):
        await asyncio.to_thread(context.server_base)
    parts = [
        [_served(context, r) for r in part]
        for group in groups.values()
        for part in shards(group, context.shard_size)
    ]
    # Submitted before the served shards run: the provider works on them meanwhile.
    batched = asyncio.create_task(answer_provider_batch(context, provider_batch)) if provider_batch else None
    rows = [row for part in await answer_shards(context, parts) for row in part]
    if batched is not None:
        rows += await batched
    alone = [r for r in offline if r.cache_key not in served_keys]
    if alone:
        rows += await _offline_batch(context, alone)
    rows += twin_rows(twins, rows)
    current_progress().settle(rows)
    return rows


def twin_rows(twins: list[ModelRequest], answered: list[EvalResponse]) -> list[EvalResponse]:
    """Rows of batch requests answered by their served twin: same output, tokens or error, the batch
    hosting's label and price, and no per-item latency (a batch has none)."""
    by_key = {row.request_key: row for row in answered}
    rows = []
    for request in twins:
        twin = by_key[request.cache_key]
        cost = (
            None
            if twin.error_type
            else call_cost(request.model, twin.prompt_tokens or 0, twin.completion_tokens or 0)
        )
        rows.append(
            response_row(
                request,
                twin.run_id,
                output=twin.output,
                prompt_tokens=twin.prompt_tokens,
                completion_tokens=twin.completion_tokens,
                cost_usd=cost,
                cached=True,
                error_type=twin.error_type,
                error_message=twin.error_message,
            )
        )
    return rows


async def answer_shards(context: EvalContext, parts: list[list[ModelRequest]]) -> list[list[EvalResponse]]:
    """Every shard's rows, in the order of ``parts``, wherever the shards run."""
    if not parts:
        return []
    if context.execution.on_dask:
        return await run_shards_on_dask(context, parts)
    # quote: Prefect would walk every request of every shard looking for futures (~1 s a phase).
    return list(await asyncio.gather(*(run_shard(context, quote(part)) for part in parts)))


async def answer_provider_batch(context: EvalContext, requests: list[ModelRequest]) -> list[EvalResponse]:
    """Requests of a provider's batch hosting through its batch API: answers in the response cache
    are reused (a re-run pays nothing twice), the rest are submitted, polled within the plan's
    ``wait_s`` and collected; still running after it, the run raises ``BatchPending``. A failed
    line of a retryable class becomes one synchronous call where the plan says ``failed_lines: sync``."""
    cache = ResponseCache(context.workspace)
    try:
        done = cache.answers(requests, context.run_id)
        missing = [r for r in requests if r.identity not in done]
        client = BatchClient(context.workspace, context.run_id, context.batch, sync_specs=context.sync_specs)
        try:
            outcome = await client.answer(missing) if missing else None
        finally:
            client.close()
        if outcome is not None and outcome.waiting:
            raise BatchPending(context.run_id, outcome.pending_jobs, str(context.workspace.root))
        for request in missing:
            row = outcome.rows[request.identity]
            if row.error_type is None:
                cache.put(request.cache_key, row)
            done[request.identity] = row
    finally:
        cache.close()
    retry = [r for r in requests if done[r.identity].error_type in RETRYABLE]
    if retry and context.batch.failed_lines == "sync":
        for row in await run_shard(context, quote(retry)):
            if row.error_type is None and not row.cached:  # paid synchronously: at the synchronous price
                sync = context.sync_specs.get(row.model)
                row.cost_usd = (
                    call_cost(sync, row.prompt_tokens or 0, row.completion_tokens or 0) if sync else None
                )
            done[row.identity] = row
    return [done[r.identity] for r in requests]


def batch_setup(plan: Plan, workspace_root: Path, candidates: list[Contender]) -> tuple:
    """The plan's batch settings, and each batched candidate priced at its synchronous API price
    (what the report sets the batch cost against)."""
    catalog = plan_catalog(plan, workspace_root)
    sync_specs = {
        c.spec.label: candidate_spec(c.spec.model, "api", c.spec.api_base, catalog)
        for c in candidates
        if c.spec.hosting == "batch"
    }
    return BatchSettings.from_plan(plan.eval.batch), sync_specs


def batch_jobs_table(workspace: Workspace, run_id: str) -> list[dict]:
    """The run's provider batches as the report and the artifact show them."""
    return [
        {
            "batch_id": job["batch_id"],
            "model": job["model"],
            "status": job["status"] or job["stage"],
            "lines": job["lines"],
            "completed": job["completed"],
            "failed": job["failed"],
            "submitted_at": job["submitted_at"],
            "finished_at": job["finished_at"],
            "batch_cost_usd": job["cost_usd"],
            "sync_cost_usd": job["sync_cost_usd"],
        }
        for job in read_jobs(workspace, run_id)
    ]


def _served(context: EvalContext, request: ModelRequest) -> ModelRequest:
    """An embedded-model request pointed at the running server; with none started (every answer is
    cached) it keeps no address and is answered from the cache."""
    base = context.engine_api_base or (context.server.api_base if context.server else None)
    return (
        replace(request, model=replace(request.model, api_base=base))
        if is_embedded(request.model)
        else request
    )


def shard_runner(workspace: Workspace, run_id: str, requests: list[ModelRequest], **shared) -> Runner:
    """A runner whose checkpoint file is the shard's own (named by its requests), so shards running
    side by side, in one process or several, never append to the same file."""
    shard_key = hashlib.sha256("|".join(map(str, (r.identity for r in requests))).encode()).hexdigest()[:12]
    return Runner(workspace, run_id, checkpoint_name=f"checkpoint-{shard_key}", **shared)


@task(name="run-shard", cache_policy=NO_CACHE)
async def run_shard(context: EvalContext, requests: list[ModelRequest]) -> list[EvalResponse]:
    """One (model, variant) shard through the runner; its wall time feeds measured throughput."""
    runner = shard_runner(
        context.workspace,
        context.run_id,
        requests,
        limits=context.limits,
        breakers=context.breakers,
        on_result=current_progress().record,
    )
    started = time.perf_counter()
    rows = await runner.run(requests)
    context.account(rows[0].model, rows, time.perf_counter() - started)
    return rows


# --------------------------------------------------------------------------- shards on Dask


class ShardJob:
    """All a Dask worker needs for one shard: picklable, and without any API key in it.

    A plain class, not a dataclass: Prefect walks a task's dataclass arguments field by field
    looking for futures, and Dask hashes them the same way to name the task; for a shard of 200
    requests that was ~100 ms of the flow's CPU per shard, taken from the workers' cores.
    """

    def __init__(
        self, workspace: Workspace, run_id: str, requests: list[ModelRequest], key_blocks: dict[str, str]
    ):
        self.workspace, self.run_id, self.requests, self.key_blocks = workspace, run_id, requests, key_blocks
        self.token = uuid.uuid4().hex  # each job is submitted once: its own id names it

    def __dask_tokenize__(self) -> str:
        return self.token


async def run_shards_on_dask(
    context: EvalContext, parts: list[list[ModelRequest]]
) -> list[list[EvalResponse]]:
    """Submit one task per shard to the Dask cluster and wait for all (off the event loop: the
    Dask client is synchronous). The flow keeps the throughput books, as for threads."""
    # The cache table (and SQLite's WAL mode) exist before workers race to create them.
    ResponseCache(context.workspace).close()
    results = await asyncio.to_thread(_submit_and_wait, context, parts)
    for rows, seconds in results:
        if rows:
            context.account(rows[0].model, rows, seconds)
    return [rows for rows, _ in results]


def _submit_and_wait(
    context: EvalContext, parts: list[list[ModelRequest]]
) -> list[tuple[list[EvalResponse], float]]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runner = context.dask_runner()
    slots = sum(runner.client.nthreads().values()) or 1
    # Tasks carry the flow's settings to the workers: make sure those name the flow's API.
    with temporary_settings({PREFECT_API_URL: flow_api_url()}):
        futures = [
            runner.submit(
                run_shard_on_worker,
                {
                    "job": ShardJob(
                        context.workspace,
                        context.run_id,
                        sealed(split_limits(part, slots), context.key_blocks),
                        context.key_blocks,
                    )
                },
            )
            for part in parts
        ]
    return [future.result() for future in futures]


def flow_api_url() -> str:
    """The Prefect API this flow reports to. Without PREFECT_API_URL it is this process's
    temporary server: told nothing, each worker would start one of its own (seconds each), and
    record its task runs there, where none of the flow's blocks are."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer().api_url  # the one instance the flow's client started


def split_limits(requests: list[ModelRequest], slots: int) -> list[ModelRequest]:
    """Each endpoint's limits (concurrency rounded up, requests and tokens per minute) divided among
    ``slots`` shards running at once, so the cluster as a whole stays near what the endpoint allows."""
    specs = {r.model: _split_spec(r.model, slots) for r in requests}
    return [replace(r, model=specs[r.model]) for r in requests]


def _split_spec(spec: ModelSpec, slots: int) -> ModelSpec:
    return replace(
        spec,
        max_concurrency=math.ceil(spec.max_concurrency / slots),
        rpm=spec.rpm / slots if spec.rpm else None,
        tpm=spec.tpm / slots if spec.tpm else None,
    )


def sealed(requests: list[ModelRequest], key_blocks: dict[str, str]) -> list[ModelRequest]:
    """The requests without API keys: task parameters are pickled in clear text to the scheduler
    and the workers. A key must come from a block (fetched again there) or the worker's environment."""
    unsealable = sorted(
        {r.model.label for r in requests if r.model.api_key and r.model.model not in key_blocks}
    )
    if unsealable:
        raise ConfigError(
            f"{', '.join(unsealable)}: the API key comes from neither a ModelEndpoint block nor the "
            "environment, so Dask workers cannot fetch it (it is never shipped in task parameters)"
        )
    specs = {r.model: replace(r.model, api_key=None) for r in requests}
    return [replace(r, model=specs[r.model]) for r in requests]


def unsealed(requests: list[ModelRequest], key_blocks: dict[str, str]) -> list[ModelRequest]:
    """On the worker: each block-keyed model gets its key back from its ModelEndpoint block."""
    keys: dict[str, str | None] = {}
    for model in {r.model.model for r in requests} & set(key_blocks):
        block = endpoint_block(key_blocks[model])
        keys[model] = block.api_key.get_secret_value() if block and block.api_key else None
    specs = {r.model: replace(r.model, api_key=keys.get(r.model.model, r.model.api_key)) for r in requests}
    return [replace(r, model=specs[r.model]) for r in requests]


@task(name="run-shard-on-worker", cache_policy=NO_CACHE)
async def run_shard_on_worker(job: ShardJob) -> tuple[list[EvalResponse], float]:
    """One shard on a Dask worker, with limits and breakers of its own (see the module docstring)."""
    requests = unsealed(job.requests, job.key_blocks)
    started = time.perf_counter()
    rows = await shard_runner(job.workspace, job.run_id, requests).run(requests)
    return rows, time.perf_counter() - started


async def _offline_batch(context: EvalContext, requests: list[ModelRequest]) -> list[EvalResponse]:
    """The embedded model's batch hosting; answers already in the response cache are reused (and
    fresh ones stored there), so a re-run starts no engine and pays nothing twice."""
    cache = ResponseCache(context.workspace)
    try:
        done = cache.answers(requests, context.run_id)
        missing = [r for r in requests if r.identity not in done]
        if missing:
            rows, generate_s = await asyncio.to_thread(
                run_offline_shard, str(context.workspace.root), context.run_id, missing, context.batch_engine
            )
            context.account(requests[0].model.label, rows, generate_s)
            for request, row in zip(missing, rows):
                cache.put(request.cache_key, row)
                done[request.identity] = row
    finally:
        cache.close()
    return [done[r.identity] for r in requests]


def needs_server(context: EvalContext, requests: list[ModelRequest]) -> bool:
    """Whether any request for the embedded model's server has no answer in the response cache yet:
    starting vLLM (a minute on a CPU) for a fully cached re-run would be wasted."""
    embedded = [r for r in requests if is_embedded(r.model)]
    if not embedded:
        return False
    cache = ResponseCache(context.workspace)
    try:
        return len(cache.lookup(r.cache_key for r in embedded)) < len({r.cache_key for r in embedded})
    finally:
        cache.close()


def batch_params(request: ModelRequest) -> BatchParams:
    """The runner's request parameters, as vLLM's offline engine takes them."""
    params = request.params
    choice = params.get("extra_body", {}).get("structured_outputs", {}).get("choice")
    schema = params.get("response_format", {}).get("json_schema", {}).get("schema")
    return BatchParams(
        max_tokens=params.get("max_tokens", 256),
        temperature=params.get("temperature", 0.0),
        json_schema=schema,
        choice=choice,
    )


@task(name="run-offline-batch", cache_policy=NO_CACHE)
def run_offline_shard(
    workspace_root: str, run_id: str, requests: list[ModelRequest], engine: str | None = None
) -> tuple[list[EvalResponse], float]:
    """The embedded model through vLLM's offline engine: continuous batching of the whole set, in
    a running ``OfflineEngine`` (``engine``, its job folder) or one started for this batch.

    A batch has no per-item latency: each row gets the batch's generation time spread over it."""
    workspace = Workspace.resolve(workspace_root)
    result = run_offline_batch(
        prepare_embedded_model(workspace.models_dir),
        [r.messages for r in requests],
        [batch_params(r) for r in requests],
        cache_root=workspace.subdir("vllm"),
        engine=engine,
    )
    per_item_ms = result.generate_s * 1000 / max(1, len(requests))
    rows = []
    for request, output, prompt, completion in zip(
        requests, result.outputs, result.prompt_tokens, result.completion_tokens
    ):
        spec = request.model
        rows.append(
            EvalResponse(
                run_id=run_id,
                item_id=request.item_id,
                model=spec.label,
                hosting=spec.hosting,
                prompt_variant=request.prompt_variant,
                output=output,
                latency_ms=per_item_ms,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=call_cost(spec, prompt, completion),
                error_type=None,
                cached=False,
                attempts=1,
                request_key=request.cache_key,
            )
        )
    return rows, result.generate_s


def replay_for(incumbent: Contender, items, run_id: str, workspace: Workspace | None = None):
    """Replayed incumbent rows, with the tokens, latency and cost the logs recorded for each call,
    so the leaderboard compares the candidates' cost with what the incumbent really cost."""
    replayed, remaining = replay_incumbent(incumbent, items, run_id)
    logged = logged_calls(workspace, [i.metadata.get("request_id") for i in items]) if workspace else {}
    by_id = {item.item_id: item for item in items}
    for row in replayed:
        call = logged.get(by_id[row.item_id].metadata.get("request_id"))
        if call:
            row.prompt_tokens, row.completion_tokens, row.latency_ms, row.cost_usd = call
            if row.cost_usd is None:
                row.cost_usd = call_cost(incumbent.spec, row.prompt_tokens or 0, row.completion_tokens or 0)
    return replayed, remaining


def logged_calls(workspace: Workspace, request_ids: list) -> dict[str, tuple]:
    """request_id -> (prompt tokens, completion tokens, latency ms, cost) from the audited usage log."""
    import duckdb

    path = workspace.root / "usage" / "usage_log.parquet"
    wanted = [str(r) for r in request_ids if r]
    if not path.exists() or not wanted:
        return {}
    rows = duckdb.execute(
        "SELECT request_id, prompt_tokens, completion_tokens, latency_ms, cost_usd FROM read_parquet($path) "
        "WHERE request_id IN (SELECT unnest($ids))",
        {"path": str(path), "ids": wanted},
    ).fetchall()
    return {request_id: tuple(values) for request_id, *values in rows}


@task(name="store-responses", cache_policy=NO_CACHE)
def store_responses(workspace: Workspace, run_id: str, rows: list[EvalResponse]) -> str:
    """responses.parquet as soon as answers exist, before any scoring: paid answers are never lost
    to a scorer's failure (and the checkpoints let a re-run resume without a new call)."""
    import pyarrow.parquet as pq

    from workhorse.tasks.common.runner import responses_table

    path = workspace.run_dir(run_id) / "responses.parquet"
    pq.write_table(responses_table(rows), path)
    return str(path)


@task(name="score-responses", cache_policy=NO_CACHE)
def score_responses(items, rows: list[EvalResponse], options: dict | None = None) -> list[dict]:
    return score_rows(items, rows, options)


def scorer_options(plan: Plan, use_case: str) -> dict:
    """The use case's scorer options from the plan (how an extraction's lists are matched)."""
    case = plan.use_cases.get(use_case)
    return {"list_order": case.list_order} if case else {}


# --------------------------------------------------------------------------- verdict


def metric_value(score_row: dict, metric: str) -> float:
    """A scores row's number for the policy's primary metric (``correct``, ``value`` or a detail)."""
    if metric == "correct":
        return float(score_row["correct"])
    if metric == "value":
        return float(score_row["value"])
    return float(json.loads(score_row["details"]).get(metric, 0.0))


def projected_saving(workspace: Workspace, use_case: str, model: str, hosting: str) -> float | None:
    """The audit's projected monthly saving for this candidate and hosting, when an audit ran."""
    path = workspace.root / "audit" / "projections.parquet"
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    for row in pq.read_table(path).to_pylist():
        if row["use_case"] == use_case and row["candidate"] == model and row["hosting"] == hosting:
            return row["saving_usd"]
    return None


@task(name="decide", cache_policy=NO_CACHE)
def decide(
    plan: Plan,
    use_case: str,
    incumbent: Contender,
    candidates: list[Contender],
    chosen: dict,
    test_scores: list[dict],
    test_rows: list[EvalResponse],
    workspace: Workspace,
):
    """Pair every candidate's chosen variant with the incumbent on the test items the incumbent
    answered and that have a reference; what the incumbent answered is the verdict's first check."""
    from workhorse.tasks.evaluate.decision import verdict

    policy = plan.quality_policy
    task_type = plan.use_cases[use_case].task_type if use_case in plan.use_cases else "classification"
    metric = policy.metric_for(task_type)
    arms = _scores_by_arm(test_scores)
    baseline = arms.get((incumbent.spec.label, AS_LOGGED), {})
    evidence = incumbent_evidence(incumbent, baseline)
    anchored = {i for i, row in baseline.items() if row["error_type"] is None and has_reference(row)}
    if evidence.problem(policy):  # no incumbent to pair with: the absolute bar scores every referenced item
        anchored = {row["item_id"] for row in test_scores if has_reference(row)}
    picked = [
        (c, arms.get((c.spec.label, chosen[(c.spec.label, c.spec.hosting)][0]), {})) for c in candidates
    ]
    shared = sorted(anchored.intersection(*(set(mine) for _, mine in picked)))
    results = [
        _candidate_result(c, mine, shared, metric, test_rows, workspace, use_case) for c, mine in picked
    ]
    scores = [metric_value(baseline[i], metric) if i in baseline else 0.0 for i in shared]
    return verdict(
        use_case,
        scores,
        results,
        policy,
        task_type=task_type,
        incumbent=evidence,
        incumbent_correct=[bool(baseline[i]["correct"]) if i in baseline else False for i in shared],
    )


def has_reference(score_row: dict) -> bool:
    return score_row.get("reference") not in (None, "")


def incumbent_evidence(incumbent: Contender, baseline: dict[str, dict]):
    """What the incumbent answered: rows replayed from the logs or called, and their failures."""
    from workhorse.tasks.evaluate.decision import IncumbentEvidence

    errors = Counter(row["error_type"] for row in baseline.values() if row["error_type"] is not None)
    missing = (
        ""
        if baseline
        else (
            f"no logged answers from {incumbent.spec.model} in the golden set, and no API key here to call it"
            if not incumbent.callable
            else f"{incumbent.spec.model} was not run"
        )
    )
    return IncumbentEvidence(
        answered=len(baseline) - sum(errors.values()),
        failed=sum(errors.values()),
        missing=missing,
        errors=dict(errors),
    )


def _candidate_result(
    contender: Contender,
    mine: dict,
    shared: list[str],
    metric: str,
    test_rows: list[EvalResponse],
    workspace: Workspace,
    use_case: str,
):
    """The candidate's paired scores on ``shared``; its operational figures over every test item
    it was asked."""
    from workhorse.tasks.evaluate.decision import CandidateResult
    from workhorse.tasks.evaluate.scoring import operational_metrics

    variant = next(iter(mine.values()))["prompt_variant"] if mine else ""
    rows = [
        r
        for r in test_rows
        if r.model == contender.spec.label and r.prompt_variant == variant and r.item_id in mine
    ]
    operational = operational_metrics(rows, [mine[r.item_id]["correct"] for r in rows])
    errors = Counter(r.error_type for r in rows if r.error_type)
    operational["errors_text"] = (
        f"every call failed ({', '.join(f'{n} {k}' for k, n in errors.most_common())})"
        if rows
        else "it has no answers"
    )
    return CandidateResult(
        model=contender.spec.model,
        hosting=contender.spec.hosting,
        prompt_variant=variant,
        scores=[metric_value(mine[i], metric) for i in shared],
        correct=[mine[i]["correct"] for i in shared],
        operational=operational,
        projected_monthly_saving_usd=projected_saving(
            workspace, use_case, contender.spec.model, contender.spec.hosting
        ),
    )


def _scores_by_arm(scores: list[dict]) -> dict[tuple, dict[str, dict]]:
    arms: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in scores:
        arms[(row["model"], row["prompt_variant"])][row["item_id"]] = row
    return arms


# --------------------------------------------------------------------------- results


def leaderboard(
    scores: list[dict], rows: list[EvalResponse], task_type: str, labels: list[str]
) -> list[dict]:
    """One line per (model, hosting, prompt variant, split): quality, errors, latency, cost."""
    from workhorse.tasks.evaluate.scoring import classification_metrics, operational_metrics

    by_key = {(r.model, r.prompt_variant, r.item_id): r for r in rows}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for score in scores:
        groups[(score["model"], score["hosting"], score["prompt_variant"], score["split"])].append(score)
    lines = []
    # Test lines first: they carry the verdict; dev lines show how the prompt was chosen.
    for (model, hosting, variant, split), group in sorted(
        groups.items(), key=lambda kv: (kv[0][3] != "test", kv[0])
    ):
        correct = [g["correct"] for g in group]
        ops = operational_metrics([by_key[(model, variant, g["item_id"])] for g in group], correct)
        # An arm that answered nothing was not evaluated: its zeros would read as a measured 0 %.
        evaluated = ops["answered"] > 0
        line = {
            "model": model,
            "hosting": hosting,
            "prompt_variant": variant,
            "split": split,
            "items": len(group),
            "answered": ops["answered"],
            "accuracy": sum(correct) / len(group) if evaluated else None,
            "score": sum(g["value"] for g in group) / len(group) if evaluated else None,
            "error_rate": ops["error_rate"],
            "latency_p50_ms": ops["latency_p50_ms"],
            "latency_p95_ms": ops["latency_p95_ms"],
            "cost_per_1k_items": ops["cost_per_1k_items"],
            "cost_per_correct": ops["cost_per_correct"],
        }
        if task_type == "classification" and evaluated:
            metrics = classification_metrics(
                [g["reference"] for g in group], [g["prediction"] for g in group], labels
            )
            line["macro_f1"] = metrics["macro_f1"]
        lines.append(line)
    return lines


@task(name="publish-results", cache_policy=NO_CACHE)
def publish_results(
    workspace: Workspace,
    run_id: str,
    use_case: str,
    task_type: str,
    labels: list[str],
    rows: list[EvalResponse],
    scores: list[dict],
    chosen: dict,
    verdict,
    skipped: list[str],
    throughput: dict[str, float],
    judged=None,
    judge: dict | None = None,
) -> dict:
    """scores.parquet, verdict.json, report.html and the Prefect artifacts; responses.parquet is
    already written (``store_responses``, before scoring) and only named here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workhorse.tasks.evaluate.judge import judge_markdown
    from workhorse.tasks.evaluate.report import verdict_markdown, write_eval_report

    out = workspace.run_dir(run_id)
    pq.write_table(pa.Table.from_pylist(scores), out / "scores.parquet")
    board = leaderboard(scores, rows, task_type, labels)
    batches = batch_jobs_table(workspace, run_id)
    summary = {
        "run_id": run_id,
        "use_case": use_case,
        "task_type": task_type,
        "verdict": _verdict_dict(verdict),
        "chosen_variants": {label: {"variant": v, "dev_scores": s} for (label, _), (v, s) in chosen.items()},
        "skipped": skipped,
        "tokens_per_s": throughput,
        "leaderboard": board,
        "batches": batches,
        "responses": str(out / "responses.parquet"),
        "scores": str(out / "scores.parquet"),
    }
    if judged is not None:  # the judge's calls, verdicts and cost, apart from the contenders'
        from workhorse.tasks.evaluate.judge import store_judgements

        store_judgements(judged, out)
        summary["judge"] = {**judge, "judgements": str(out / "judgements.parquet")}
    (out / "verdict.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["report"] = str(write_eval_report(out / "report.html", summary, scores, labels))
    _artifacts(use_case, board, verdict_markdown(summary) + judge_markdown(summary.get("judge")), batches)
    return summary


def record_self_hosted_throughput(
    workspace: Workspace, candidates: list[Contender], throughput: dict[str, float]
) -> None:
    """Generated tokens/s of each self-hosted candidate, under its model name: what the next
    audit and eval price self-hosting from (GPU rent ÷ measured throughput)."""
    for contender in candidates:
        if contender.spec.hosting == "self_hosted" and contender.spec.label in throughput:
            record_throughput(workspace.root, contender.spec.model, throughput[contender.spec.label])


def _verdict_dict(verdict) -> dict:
    fields = (
        "decision",
        "best_candidate",
        "hosting",
        "prompt_variant",
        "diff",
        "ci_low",
        "ci_high",
        "p_value",
        "n",
        "projected_monthly_saving_usd",
        "reason",
        "metric",
        "summary",
    )
    return {
        **{name: getattr(verdict, name, None) for name in fields},
        "candidates": list(getattr(verdict, "candidates", ())),
    }


def _artifacts(use_case: str, board: list[dict], markdown: str, batches: list[dict] = ()) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = "eval-" + "".join(c if c.isalnum() else "-" for c in use_case.lower())
    create_table_artifact(key=f"{key}-leaderboard", table=board, description=f"Leaderboard for {use_case}")
    create_markdown_artifact(key=f"{key}-verdict", markdown=markdown, description=f"Verdict for {use_case}")
    if batches:
        create_table_artifact(
            key=f"{key}-batches", table=list(batches), description=f"Provider batches for {use_case}"
        )
