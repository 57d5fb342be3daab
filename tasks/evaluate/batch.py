"""Provider batch jobs: the ``batch`` hosting of an API model through its batch API.

One code path for every provider LiteLLM's files and batches API knows (OpenAI, Azure, Anthropic,
Vertex, Bedrock, …) and for any OpenAI-compatible batch endpoint given by ``api_base``:

- each request becomes one JSONL line whose ``custom_id`` is ``[run, model, variant, item]`` as
  JSON, so output and error lines map back exactly;
- lines are split by the provider's limits (lines per batch, bytes per file; the plan's
  ``eval.batch`` overrides them) and written and read streaming;
- exactly once: a job's key is ours and is written, with its lines, before any provider call;
  the stage is written before and the provider's id after each call. A restarted run first
  reconciles with the provider (a job caught between "create" and its recorded id is found by
  listing batches for its key in ``metadata``) and creates nothing already created;
- expired or cancelled batches give their partial output; the missing lines, and failed lines
  of a retryable class, are resubmitted in a new job (``max_attempts`` submissions per line),
  and a line that cannot be answered keeps its error class: none is dropped;
- usage in each output line gives the real tokens, priced at the batch price.

The state lives in the store's ``batch_job`` and ``batch_line`` tables (schema version 2).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
import typing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from workhorse import store
from workhorse.errors import WorkhorseError
from workhorse.tasks.common.runner import (
    RETRYABLE,
    CallFailed,
    EvalResponse,
    ModelRequest,
    ModelSpec,
    RetryPolicy,
    call_cost,
    classify,
    response_row,
    retry_after,
)
from workhorse.workspace import Workspace

# (lines per batch, bytes per input file) each provider accepts.
PROVIDER_LIMITS = {
    "openai": (50_000, 200 * 2**20),
    "azure": (100_000, 200 * 2**20),
    "anthropic": (100_000, 256 * 2**20),
    "vertex_ai": (200_000, 1 * 2**30),
    "bedrock": (50_000, 1 * 2**30),
}
BATCH_PROVIDERS = (
    "openai",
    "azure",
    "vertex_ai",
    "bedrock",
    "anthropic",
    "xai",
    "hosted_vllm",
    "litellm_proxy",
)
TERMINAL = ("completed", "expired", "failed", "cancelled")
ENDPOINT = "/v1/chat/completions"
METADATA_KEY = "workhorse_job"
LIST_PAGE = 100


@dataclass(frozen=True)
class BatchSettings:
    """The plan's ``eval.batch`` section, as the client uses it."""

    max_lines: int | None = None
    max_bytes: int | None = None
    wait_s: float = 0.0
    poll_s: float = 30.0
    max_attempts: int = 3
    failed_lines: str = "resubmit"

    @classmethod
    def from_plan(cls, section) -> "BatchSettings":
        return cls(**section.model_dump()) if section is not None else cls()

    def limits(self, provider: str) -> tuple[int, int]:
        lines, size = PROVIDER_LIMITS.get(provider, PROVIDER_LIMITS["openai"])
        return self.max_lines or lines, self.max_bytes or size


@dataclass(repr=False)
class BatchOutcome:
    """What one pass produced: a row per request that is settled, the jobs still running."""

    rows: dict[tuple, EvalResponse] = field(default_factory=dict)
    pending_jobs: list[str] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        return bool(self.pending_jobs)

    def __repr__(self) -> str:
        # asyncio formats a finished future's result with repr: 20,000 rows took 0.3 s of it.
        return f"BatchOutcome({len(self.rows)} rows, pending {self.pending_jobs})"


class BatchPending(WorkhorseError):
    """A run's batches are still running when its ``wait`` ran out: the run ends "waiting for
    batch" and the batch-collector resumes it."""

    def __init__(self, run_id: str, jobs: list[str], workspace_root: str = ""):
        super().__init__(
            f"run {run_id} is waiting for batch: {len(jobs)} job(s) still running ({', '.join(jobs)})"
        )
        self.run_id, self.jobs, self.workspace_root = run_id, jobs, workspace_root


def is_provider_batch(spec: ModelSpec) -> bool:
    """Whether the batch hosting of this model goes through a provider's batch API: a provider
    LiteLLM batches, or any OpenAI-compatible endpoint; a local vLLM engine (``hosted_vllm/``) has
    none, and a provider without one keeps the synchronous path priced at batch rates."""
    if spec.hosting != "batch" or spec.model.startswith("hosted_vllm/"):
        return False
    prefix = spec.model.split("/", 1)[0] if "/" in spec.model else "openai"
    return bool(spec.api_base) or prefix in BATCH_PROVIDERS


def provider_of(spec: ModelSpec) -> str:
    """LiteLLM's ``custom_llm_provider`` for the model: its prefix if LiteLLM batches it, else an
    OpenAI-compatible endpoint (``api_base``)."""
    prefix = spec.model.split("/", 1)[0] if "/" in spec.model else "openai"
    return prefix if prefix in BATCH_PROVIDERS else "openai"


def custom_id(run_id: str, request: ModelRequest) -> str:
    return json.dumps([run_id, request.model.label, request.prompt_variant, request.item_id])


def identity_of(line_id: str) -> tuple[str, str, str]:
    """(model label, prompt variant, item) of a line's ``custom_id``: the request's identity."""
    _, label, variant, item = json.loads(line_id)
    return (label, variant, item)


def batch_line(line_id: str, request: ModelRequest) -> bytes:
    """One input line. ``extra_body`` is flattened into the body, as a synchronous call sends it."""
    params = dict(request.params)
    extra = params.pop("extra_body", None) or {}
    body = {"model": request.model.model.split("/", 1)[-1], "messages": request.messages, **params, **extra}
    line = {"custom_id": line_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


def line_error_type(status_code: int | None) -> str:
    """The runner's error class of a failed line, from its HTTP status."""
    if status_code == 429:
        return "rate_limited"
    if status_code is not None and status_code >= 500:
        return "server_error"
    if status_code is not None and 400 <= status_code < 500:
        return "client_error"
    return "bad_response"


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def sync_spec(spec: ModelSpec) -> ModelSpec:
    """The same model priced at its synchronous list price (LiteLLM's map): what the batch saves."""
    return replace(spec, hosting="api", input_cost_per_token=None, output_cost_per_token=None)


class BatchStore:
    """The jobs and lines of provider batches in the state store; every write is committed at once."""

    def __init__(self, workspace: Workspace):
        self.connection = store.connect(workspace)

    def close(self) -> None:
        self.connection.close()

    def history(self, line_ids: list[str], size: int = 500) -> Iterable[dict[str, list[dict]]]:
        """custom id -> its line rows (one per job it went into, oldest attempt first), chunk by chunk:
        a 100,000-line run never holds every line's row at once."""
        for start in range(0, len(line_ids), size):
            chunk = line_ids[start : start + size]
            cursor = self.connection.execute(
                "SELECT l.custom_id, l.state, l.output, l.prompt_tokens, l.completion_tokens, l.error_type, "
                "l.error_message, j.attempt FROM batch_line l JOIN batch_job j ON j.job_key = l.job_key "
                f"WHERE l.custom_id IN ({','.join('?' * len(chunk))}) ORDER BY j.attempt",
                chunk,
            )
            found: dict[str, list[dict]] = {}
            for row in store.rows_as_dicts(cursor):
                found.setdefault(row["custom_id"], []).append(row)
            yield found

    def jobs(self, run_id: str | None = None, live_only: bool = False) -> list[dict]:
        sql, params = "SELECT * FROM batch_job", []
        clauses = []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if live_only:
            clauses.append("stage <> 'collected'")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return store.rows_as_dicts(self.connection.execute(sql + " ORDER BY job_key", params))

    def job(self, job_key: str) -> dict:
        return store.rows_as_dicts(
            self.connection.execute("SELECT * FROM batch_job WHERE job_key = ?", (job_key,))
        )[0]

    def next_sequence(self, run_id: str) -> int:
        return self.connection.execute(
            "SELECT COUNT(*) FROM batch_job WHERE run_id = ?", (run_id,)
        ).fetchone()[0]

    def add_job(self, job: dict, lines: list[str]) -> None:
        """The job and its lines in one transaction, before anything is sent."""
        with self.connection.transaction(lock="workhorse.batch"):
            columns = ",".join(job)
            self.connection.execute(
                f"INSERT INTO batch_job ({columns}) VALUES ({','.join('?' * len(job))})", list(job.values())
            )
            self.connection.executemany(
                "INSERT INTO batch_line (custom_id, job_key, state) VALUES (?,?,'queued')",
                [(line_id, job["job_key"]) for line_id in lines],
            )

    def mark(self, job_key: str, **values: Any) -> None:
        """Record a job's stage or a provider id: the write before or after a provider call."""
        assignments = ", ".join(f"{name} = ?" for name in values)
        self.connection.execute(
            f"UPDATE batch_job SET {assignments} WHERE job_key = ?", [*values.values(), job_key]
        )

    def settle_lines(self, job_key: str, results: list[tuple]) -> None:
        """(custom id, state, output, prompt tokens, completion tokens, error type, message) per line,
        in one transaction (one commit, not one per line)."""
        with self.connection.transaction(lock="workhorse.batch"):
            self._settle_rows(job_key, results)

    def _settle_rows(self, job_key: str, results: list[tuple]) -> None:
        self.connection.executemany(
            "UPDATE batch_line SET state = ?, output = ?, prompt_tokens = ?, completion_tokens = ?, "
            "error_type = ?, error_message = ? WHERE custom_id = ? AND job_key = ?",
            [(*values, line_id, job_key) for line_id, *values in results],
        )

    def mark_unanswered(self, job_key: str, state: str, error_type: str, message: str) -> int:
        cursor = self.connection.execute(
            "UPDATE batch_line SET state = ?, error_type = ?, error_message = ? "
            "WHERE job_key = ? AND state = 'queued'",
            (state, error_type, message, job_key),
        )
        return cursor.rowcount


class ProviderCalls:
    """LiteLLM's files and batches calls for one endpoint, each with bounded retries on the
    runner's retryable classes (a 429 honours its Retry-After)."""

    def __init__(self, spec: ModelSpec, retry: RetryPolicy = RetryPolicy()):
        self.provider, self.retry = provider_of(spec), retry
        # max_retries=0: the SDK would retry a create whose reply was lost, and create it twice.
        self.options: dict[str, Any] = {"custom_llm_provider": self.provider, "max_retries": 0}
        if spec.api_base:
            self.options["api_base"] = spec.api_base
        if spec.api_key:
            self.options["api_key"] = spec.api_key

    async def _call(self, name: str, attempts: int | None = None, **kwargs):
        import litellm

        litellm.suppress_debug_info = True
        failure = CallFailed("connection", "no attempt made")
        for attempt in range(attempts or self.retry.max_attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt - 1, failure.retry_after_s))
            try:
                return await getattr(litellm, name)(**kwargs, **self.options)
            except Exception as error:  # classified: retried if the class allows, else raised
                failure = classify_provider_error(error)
                if failure.error_type not in RETRYABLE:
                    break
        raise failure

    async def upload(self, path: Path) -> str:
        with path.open("rb") as stream:  # httpx sends a file object in chunks
            created = await self._call("acreate_file", file=(path.name, stream), purpose="batch")
        return created.id

    async def create(self, file_id: str, job_key: str) -> str:
        """One attempt, never retried here: a failed reply may hide a created batch (see ``find``)."""
        batch = await self._call(
            "acreate_batch",
            attempts=1,
            completion_window="24h",
            endpoint=ENDPOINT,
            input_file_id=file_id,
            metadata={METADATA_KEY: job_key},
        )
        return batch.id

    async def retrieve(self, batch_id: str):
        # Without this flag LiteLLM's logging downloads the whole output file of a completed batch
        # on every retrieve, to price it; the client reads that file once and prices it line by line.
        return await self._call(
            "aretrieve_batch", batch_id=batch_id, litellm_metadata={"batch_ignore_default_logging": True}
        )

    async def cancel(self, batch_id: str):
        return await self._call("acancel_batch", batch_id=batch_id)

    async def find(self, job_key: str) -> str | None:
        """The provider's batch made for ``job_key``, if a create went through (listing, newest first)."""
        after = None
        for _ in range(100):
            page = await self._call("alist_batches", limit=LIST_PAGE, after=after)
            for batch in page.data:
                if (batch.metadata or {}).get(METADATA_KEY) == job_key:
                    return batch.id
            if not page.data or not getattr(page, "has_more", False):
                return None
            after = page.data[-1].id
        return None

    async def lines(self, file_id: str) -> AsyncIterator[dict]:
        """The records of an output or error file, read as a stream of chunks."""
        result = await self._call("afile_content", file_id=file_id, stream=True)
        pending = b""
        async for chunk in _chunks(result.stream_iterator):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                if raw.strip():
                    yield json.loads(raw)
        if pending.strip():
            yield json.loads(pending)


def classify_provider_error(error: BaseException) -> CallFailed:
    """The runner's classes; the files/batches calls raise the ``openai`` SDK's own exceptions,
    whose 429 the runner's ``classify`` (written for LiteLLM's) would call a client error."""
    if getattr(error, "status_code", None) == 429:
        return CallFailed("rate_limited", f"{type(error).__name__}: {str(error)[:300]}", retry_after(error))
    return classify(error)


async def _chunks(iterator) -> AsyncIterator[bytes]:
    if hasattr(iterator, "__aiter__"):
        async for chunk in iterator:
            yield chunk
    else:
        for chunk in iterator:
            yield chunk


class BatchClient:
    """Submits, reconciles, polls and collects one run's provider batches (see the module docstring)."""

    def __init__(
        self,
        workspace: Workspace,
        run_id: str,
        settings: BatchSettings = BatchSettings(),
        retry: RetryPolicy = RetryPolicy(),
        sync_specs: dict[str, ModelSpec] | None = None,
    ):
        self.workspace, self.run_id, self.settings, self.retry = workspace, run_id, settings, retry
        self.sync_specs = dict(sync_specs or {})  # label -> the model priced synchronously
        self.store = BatchStore(workspace)

    def close(self) -> None:
        self.store.close()

    async def answer(self, requests: list[ModelRequest], wait_s: float | None = None) -> BatchOutcome:
        """Every request answered through batches, or still running when ``wait_s`` (the plan's
        ``wait_s`` by default) runs out: settled rows by identity, and the jobs left pending."""
        deadline = time.monotonic() + (self.settings.wait_s if wait_s is None else wait_s)
        by_id = {custom_id(self.run_id, r): r for r in requests}
        while True:
            outcome, resubmit = self._settle(by_id)
            if resubmit:
                self._plan_jobs(resubmit)
            live = self.store.jobs(self.run_id, live_only=True)
            mine = [j for j in live if j["model"] in {r.model.label for r in requests}]
            if not mine:
                return outcome
            specs = {r.model.label: r.model for r in requests}
            await asyncio.gather(*(self.drive(job, specs[job["model"]], deadline) for job in mine))
            still = [j["job_key"] for j in mine if self.store.job(j["job_key"])["stage"] != "collected"]
            if still:
                outcome, _ = self._settle(by_id)
                outcome.pending_jobs = still
                return outcome

    # ------------------------------------------------------------------ lines

    def _settle(self, by_id: dict[str, ModelRequest]) -> tuple[BatchOutcome, list[tuple]]:
        """Rows of the settled requests, and the requests to (re)submit: never sent, or whose last
        line is missing or failed retryably with submissions left, as (custom id, request, submissions)."""
        outcome, resubmit = BatchOutcome(), []
        line_ids = list(by_id)
        for start, history in zip(range(0, len(line_ids), 500), self.store.history(line_ids, 500)):
            for line_id in line_ids[start : start + 500]:
                self._settle_line(line_id, by_id[line_id], history.get(line_id, []), outcome, resubmit)
        return outcome, resubmit

    def _settle_line(
        self, line_id: str, request: ModelRequest, lines: list[dict], outcome: BatchOutcome, resubmit: list
    ) -> None:
        """One request's place: settled (answered, or failed for good), in a live job, or to submit."""
        last = lines[-1] if lines else None
        if last is None:
            resubmit.append((line_id, request, 0))
        elif last["state"] == "answered":
            outcome.rows[request.identity] = self._answered_row(request, last)
        elif last["state"] == "queued":
            return  # in a job not collected yet
        elif self._retry_line(last, len(lines)):
            resubmit.append((line_id, request, len(lines)))
        else:
            outcome.rows[request.identity] = self._failed_row(request, last, len(lines))

    def _retry_line(self, last: dict, submissions: int) -> bool:
        if submissions >= self.settings.max_attempts:
            return False
        if last["state"] == "missing":
            return True
        return last["error_type"] in RETRYABLE and self.settings.failed_lines == "resubmit"

    def _answered_row(self, request: ModelRequest, line: dict) -> EvalResponse:
        prompt, completion = line["prompt_tokens"] or 0, line["completion_tokens"] or 0
        return response_row(
            request,
            self.run_id,
            output=line["output"],
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=call_cost(request.model, prompt, completion),
            attempts=line["attempt"],
        )

    def _failed_row(self, request: ModelRequest, line: dict, submissions: int) -> EvalResponse:
        return response_row(
            request,
            self.run_id,
            error_type=line["error_type"] or "timeout",
            error_message=f"{line['error_message']} (after {submissions} batch submission(s))",
            attempts=submissions,
        )

    # ------------------------------------------------------------------ jobs

    def _plan_jobs(self, lines: list[tuple]) -> list[str]:
        """Write the input files (split by the provider's limits) and record each job with its
        lines, before any provider call. ``lines``: (custom id, request, earlier submissions)."""
        by_model: dict[str, list[tuple]] = {}
        for line in lines:
            by_model.setdefault(line[1].model.label, []).append(line)
        keys = []
        for label, group in by_model.items():
            attempt = 1 + max(submissions for _, _, submissions in group)
            max_lines, max_bytes = self.settings.limits(provider_of(group[0][1].model))
            for path, recorded in self._write_parts(label, group, max_lines, max_bytes):
                self.store.add_job(self._job_row(path, group[0][1].model, attempt, len(recorded)), recorded)
                keys.append(path.stem)
        return keys

    def _write_parts(
        self, label: str, lines: Iterable[tuple], max_lines: int, max_bytes: int
    ) -> Iterable[tuple[Path, list[str]]]:
        """Input files of at most ``max_lines`` lines and ``max_bytes`` bytes, written as they fill."""
        folder = self.workspace.run_dir(self.run_id) / "batch"
        folder.mkdir(parents=True, exist_ok=True)
        sequence = self.store.next_sequence(self.run_id)
        stream, path, recorded, size = None, None, [], 0
        for line_id, request, _ in lines:
            line = batch_line(line_id, request)
            if len(line) > max_bytes:
                raise ValueError(f"{label}: item {request.item_id} alone is over the batch file limit")
            if stream is None or len(recorded) >= max_lines or size + len(line) > max_bytes:
                if stream is not None:
                    stream.close()
                    yield path, recorded
                sequence += 1
                path = folder / f"{_safe(self.run_id)}.{sequence:04d}.jsonl"
                stream, recorded, size = path.open("wb"), [], 0
            stream.write(line)
            recorded.append(line_id)
            size += len(line)
        if stream is not None:
            stream.close()
            yield path, recorded

    def _job_row(self, path: Path, spec: ModelSpec, attempt: int, lines: int) -> dict:
        return {
            "job_key": path.stem,
            "run_id": self.run_id,
            "model": spec.label,
            "litellm_model": spec.model,
            "api_base": spec.api_base,
            "attempt": attempt,
            "stage": "planned",
            "input_path": str(path),
            "lines": lines,
            "created_at": now(),
        }

    async def drive(self, job: dict, spec: ModelSpec, deadline: float) -> None:
        """Take one job as far as it goes before ``deadline``: upload, create, poll, collect."""
        calls = ProviderCalls(spec, self.retry)
        key = job["job_key"]
        if job["file_id"] is None:
            self.store.mark(key, stage="uploading")
            job["file_id"] = await calls.upload(Path(job["input_path"]))
            self.store.mark(key, stage="uploaded", file_id=job["file_id"])
        if job["batch_id"] is None:
            job["batch_id"] = await self._create(calls, job)
        status = await self._poll(calls, job, deadline)
        if status is not None:
            await self.collect(calls, job, spec, status)

    async def _create(self, calls: ProviderCalls, job: dict) -> str:
        """Create the job's batch once: a job that may have reached the provider (a create whose
        reply was lost, a run killed mid-call) is looked up there first."""
        key = job["job_key"]
        batch_id = await calls.find(key) if job["stage"] == "creating" else None
        failure = None
        for attempt in range(self.retry.max_attempts):
            if batch_id is not None:
                break
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt - 1, failure.retry_after_s))
            self.store.mark(key, stage="creating")
            try:
                batch_id = await calls.create(job["file_id"], key)
            except CallFailed as error:
                failure = error
                if error.error_type not in RETRYABLE:
                    raise
                batch_id = await calls.find(key)
        if batch_id is None:
            raise failure
        self.store.mark(key, stage="submitted", batch_id=batch_id, submitted_at=now())
        job["stage"] = "submitted"
        return batch_id

    async def _poll(self, calls: ProviderCalls, job: dict, deadline: float):
        """The batch once it ends, or None when ``deadline`` comes first."""
        while True:
            batch = await calls.retrieve(job["batch_id"])
            self.store.mark(job["job_key"], status=batch.status)
            if batch.status in TERMINAL:
                return batch
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(self.settings.poll_s, left))

    async def collect(self, calls: ProviderCalls, job: dict, spec: ModelSpec, batch) -> None:
        """Map the output and error files back line by line; lines in neither are missing (an
        expired or cancelled batch) and a failed batch's lines carry its error. Idempotent: a
        collect killed half-way is simply done again."""
        key, results, tokens = job["job_key"], [], [0, 0]
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                async for record in calls.lines(file_id):
                    results.append(_line_result(record))
                    tokens[0] += results[-1][3] or 0
                    tokens[1] += results[-1][4] or 0
        self.store.settle_lines(key, results)
        if batch.status == "failed":
            errors = getattr(batch, "errors", None)
            self.store.mark_unanswered(key, "failed", "client_error", f"batch failed: {_errors_text(errors)}")
        else:
            self.store.mark_unanswered(key, "missing", "timeout", f"batch {batch.status} before this line")
        self.store.mark(
            key,
            stage="collected",
            status=batch.status,
            completed=sum(r[1] == "answered" for r in results),
            failed=sum(r[1] == "failed" for r in results),
            finished_at=now(),
            cost_usd=call_cost(spec, *tokens),
            sync_cost_usd=call_cost(self.sync_specs.get(spec.label) or sync_spec(spec), *tokens),
        )


def _line_result(record: dict) -> tuple:
    """(custom id, state, output, prompt tokens, completion tokens, error type, message) of one record."""
    response = record.get("response") or {}
    status = response.get("status_code")
    body = response.get("body") or {}
    if status == 200 and not record.get("error"):
        try:
            output = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return (
                record["custom_id"],
                "failed",
                None,
                None,
                None,
                "bad_response",
                "output line has no message",
            )
        usage = body.get("usage") or {}
        return (
            record["custom_id"],
            "answered",
            output,
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            None,
            None,
        )
    error = body.get("error") or record.get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    return (
        record["custom_id"],
        "failed",
        None,
        None,
        None,
        line_error_type(status),
        f"HTTP {status}: {message}",
    )


def _errors_text(errors) -> str:
    data = (errors.get("data") if isinstance(errors, dict) else getattr(errors, "data", None)) or []
    return "; ".join(getattr(e, "message", None) or str(e) for e in data) or "no reason given"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def job_spec(job: dict) -> ModelSpec:
    """The model of a recorded job, for calls outside its run (collector, CLI): the key comes from
    the environment, as LiteLLM finds it (never stored)."""
    return ModelSpec(job["litellm_model"], name=job["model"], api_base=job["api_base"], hosting="batch")


async def cancel_jobs(workspace: Workspace, run_id: str | None = None) -> list[dict]:
    """Cancel every running batch (of one run, or all); their partial output is collected later."""
    batches = BatchStore(workspace)
    try:
        cancelled = []
        for job in batches.jobs(run_id, live_only=True):
            if job["batch_id"]:
                batch = await ProviderCalls(job_spec(job)).cancel(job["batch_id"])
                batches.mark(job["job_key"], status=batch.status)
                cancelled.append({"job": job["job_key"], "batch_id": job["batch_id"], "status": batch.status})
        return cancelled
    finally:
        batches.close()


# ---------------------------------------------------------------------- waiting for batch

WAITING_FILE = "waiting.json"


def waits_for_batch(evaluate):
    """Wrap an eval flow's function: a ``BatchPending`` ends the run "waiting for batch", with its
    parameters in ``runs/<run_id>/waiting.json`` for the batch-collector to resume it (same run id:
    every answer already paid is found again); a run that reaches its verdict clears that file.

    A run that ends, rather than a Prefect pause/suspend, because it frees the worker for the up
    to 24 h a batch takes and survives any restart: the state is the store and that file."""
    signature = inspect.signature(evaluate)

    @functools.wraps(evaluate)
    async def run(*args, **kwargs):
        try:
            summary = await evaluate(*args, **kwargs)
        except BatchPending as pending:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            parameters = {**bound.arguments, "run_id": pending.run_id, "workspace": pending.workspace_root}
            return record_waiting(pending, parameters)
        if isinstance(summary, dict) and summary.get("responses"):
            (Path(summary["responses"]).parent / WAITING_FILE).unlink(missing_ok=True)
        return summary

    # The flow's parameters are read from this signature: its annotations resolved where the flow
    # is defined (they are strings there, and this module does not import what they name).
    hints = typing.get_type_hints(evaluate)
    run.__signature__ = signature.replace(
        parameters=[
            p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
        ],
        return_annotation=hints.get("return", signature.return_annotation),
    )
    return run


def record_waiting(pending: BatchPending, parameters: dict) -> dict:
    workspace = Workspace.resolve(pending.workspace_root)
    path = workspace.run_dir(pending.run_id) / WAITING_FILE
    record = {"run_id": pending.run_id, "jobs": pending.jobs, "since": now(), "parameters": parameters}
    path.write_text(json.dumps(record, indent=2, default=str))
    try:
        from prefect import get_run_logger

        get_run_logger().warning(f"{pending}; the batch-collector deployment resumes it")
    except Exception:  # outside a flow run there is no run logger: the summary says it
        pass
    return {
        "run_id": pending.run_id,
        "status": "waiting for batch",
        "jobs": pending.jobs,
        "waiting": str(path),
        "batches": read_jobs(workspace, pending.run_id),
    }


def waiting_runs(workspace: Workspace) -> list[dict]:
    """The runs ended "waiting for batch", oldest first."""
    found = [json.loads(p.read_text()) for p in (workspace.root / "runs").glob(f"*/{WAITING_FILE}")]
    return sorted(found, key=lambda record: record["since"])


BATCH_COLUMNS = [
    ("batch_id", "batch"),
    ("model", "model"),
    ("status", "status"),
    ("lines", "lines"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("submitted_at", "submitted"),
    ("finished_at", "finished"),
    ("batch_cost_usd", "$ batch"),
    ("sync_cost_usd", "$ same tokens, synchronous"),
]


def batches_html(batches: list[dict] | None) -> str:
    """The report's section on the run's provider batches (nothing when it had none)."""
    if not batches:
        return ""
    from workhorse.tasks.common.html import table_html

    def cell(key: str, value) -> str:
        if value is None:
            return "–"
        return f"{value:.4f}" if key.endswith("_usd") else str(value)[:19]

    rows = [{key: cell(key, batch.get(key)) for key, _ in BATCH_COLUMNS} for batch in batches]
    numeric = ("lines", "completed", "failed", "batch_cost_usd", "sync_cost_usd")
    return "<h2>Provider batches</h2>" + table_html(rows, BATCH_COLUMNS, numeric, "batches")


def read_jobs(workspace: Workspace, run_id: str | None = None) -> list[dict]:
    """The recorded batch jobs (of one run, or all), for reports and the CLI."""
    batches = BatchStore(workspace)
    try:
        return batches.jobs(run_id)
    finally:
        batches.close()


__all__ = [
    "BatchClient",
    "BatchOutcome",
    "BatchPending",
    "BatchSettings",
    "BatchStore",
    "ProviderCalls",
    "batches_html",
    "cancel_jobs",
    "waits_for_batch",
    "waiting_runs",
    "is_provider_batch",
    "read_jobs",
]
