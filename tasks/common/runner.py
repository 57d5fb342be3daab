"""One async runner for every model call workhorse makes.

Requests go through ``litellm.acompletion`` (``hosted_vllm/<name>`` for a local vLLM server,
any LiteLLM provider string otherwise) with:

- limits per endpoint from the plan (``limits.py``: concurrency that adapts down on 429s and
  recovers, requests and tokens per minute; in-process: Prefect's global limits are slow),
- bounded retries with exponential backoff and jitter that honour ``Retry-After``,
- a circuit breaker per endpoint: a provider that is down gets a probe per cool-down, not a storm,
- a per-call timeout and an error class for every failure (``ERROR_TYPES``),
- a response cache in ``state.db`` keyed by hash(model, params, messages): a re-run pays nothing,
- an append-only checkpoint per run: a killed run resumes without paying again,
- a cost per call from LiteLLM's price map, or explicit per-token prices (self-hosted models).

Every request yields exactly one ``EvalResponse`` row, answered or with its error class.
API keys live only in memory: rows, cache and checkpoint never hold them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from workhorse import store
from workhorse.tasks.common.limits import EndpointLimiter, Limits, expected_tokens
from workhorse.tasks.common.throughput import current as current_meter
from workhorse.workspace import Workspace

ERROR_TYPES = (
    "timeout",
    "rate_limited",
    "server_error",
    "bad_response",
    "connection",
    "client_error",
    "circuit_open",
)
RETRYABLE = frozenset(ERROR_TYPES) - {"client_error"}
# The failures that say "the endpoint is unwell" (not "this request is bad"): they trip the breaker.
TRIPPING = frozenset({"timeout", "server_error", "connection"})


@dataclass(frozen=True)
class ModelSpec:
    """A model at an endpoint. ``model`` is a LiteLLM string such as ``openai/gpt-4o-mini``."""

    model: str
    name: str = ""
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    hosting: str = "api"
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    max_concurrency: int = 16
    timeout_s: float = 60.0
    rpm: float | None = None
    tpm: float | None = None

    @property
    def label(self) -> str:
        return self.name or self.model

    @property
    def endpoint(self) -> str:
        """What the limits are shared by: one server, or one provider."""
        return self.api_base or self.model.split("/", 1)[0]

    @property
    def limits(self) -> Limits:
        return Limits(self.max_concurrency, self.rpm, self.tpm)

    @classmethod
    def from_endpoint(cls, endpoint) -> "ModelSpec":
        """The spec of a ``ModelEndpoint`` block (a plain copy of its fields, the key revealed only here)."""
        key = endpoint.api_key.get_secret_value() if endpoint.api_key else None
        return cls(
            model=endpoint.model,
            api_base=endpoint.api_base,
            api_key=key,
            hosting=endpoint.hosting,
            input_cost_per_token=endpoint.input_cost_per_token,
            output_cost_per_token=endpoint.output_cost_per_token,
            max_concurrency=endpoint.max_concurrency,
            timeout_s=endpoint.timeout_s,
            rpm=getattr(endpoint, "rpm", None),
            tpm=getattr(endpoint, "tpm", None),
        )


@dataclass(frozen=True)
class ModelRequest:
    item_id: str
    model: ModelSpec
    messages: list[dict]
    params: dict = field(default_factory=dict)
    prompt_variant: str = "default"

    @property
    def identity(self) -> tuple[str, str, str]:
        """One row per (model, prompt variant, item) in a run."""
        return (self.model.label, self.prompt_variant, self.item_id)

    @functools.cached_property
    def cache_key(self) -> str:
        # The endpoint is not part of the key: a local server gets a new port every start.
        payload = {"model": self.model.model, "params": self.params, "messages": self.messages}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class EvalResponse:
    """One row of the ``eval_response`` table."""

    run_id: str
    item_id: str
    model: str
    hosting: str
    prompt_variant: str
    output: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    error_type: str | None
    cached: bool
    attempts: int = 0
    error_message: str | None = None
    request_key: str = ""

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.model, self.prompt_variant, self.item_id)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 20.0
    # A provider asking for more than this is treated as down for this run.
    max_retry_after_s: float = 120.0
    # Consecutive tripping failures at one endpoint that open its circuit, and how long it stays open.
    breaker_threshold: int = 8
    breaker_cooldown_s: float = 1.0

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with full jitter, never shorter than the server's Retry-After."""
        backoff = random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))
        if retry_after_s is None:
            return backoff
        return min(max(retry_after_s, backoff), self.max_retry_after_s)


class CallFailed(Exception):
    """A single attempt failed; carries its class and the server's Retry-After."""

    def __init__(self, error_type: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """Per endpoint: ``threshold`` consecutive tripping failures open the circuit for ``cooldown_s``.

    While open, calls fail at once with ``circuit_open`` (retryable after the cool-down, so they
    still count against ``max_attempts``); then one probe goes through (half-open): its success
    closes the circuit, its failure opens it again. A down provider sees a probe per cool-down
    instead of concurrency × attempts requests. Every check is O(1).
    """

    def __init__(self, endpoint: str, threshold: int = 8, cooldown_s: float = 1.0, clock=time.monotonic):
        self.endpoint, self.threshold, self.cooldown_s, self.clock = endpoint, threshold, cooldown_s, clock
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        self.opened = 0  # how many times it opened: reported, and what tests look at

    def admit(self) -> bool:
        """Let a call through (True when it is the half-open probe), or raise ``circuit_open``."""
        if self.failures < self.threshold:
            return False
        wait = self.open_until - self.clock()
        if wait <= 0 and not self.probing:
            self.probing = True
            return True
        raise CallFailed(
            "circuit_open",
            f"circuit open for {self.endpoint} after {self.failures} failures",
            retry_after_s=wait if wait > 0 else self.cooldown_s,
        )

    def record(self, error_type: str | None, probe: bool) -> None:
        """Feed back an admitted call's outcome (None: answered, or failed for its own reasons)."""
        if probe:
            self.probing = False
        if error_type not in TRIPPING:
            self.failures = 0
            return
        self.failures += 1
        if self.failures == self.threshold or (probe and self.failures > self.threshold):
            self.open_until = self.clock() + self.cooldown_s
            self.opened += 1

    def release(self, probe: bool) -> None:
        """An admitted call was cancelled: it says nothing about the endpoint."""
        if probe:
            self.probing = False


def classify(error: BaseException) -> CallFailed:
    """Map an exception from LiteLLM/httpx/asyncio to one of ``ERROR_TYPES``."""
    if isinstance(error, CallFailed):
        return error
    # An error can be LiteLLM's only once LiteLLM is imported: the lean path never imports it.
    litellm = sys.modules.get("litellm")
    message = f"{type(error).__name__}: {str(error)[:300]}"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)) or (
        litellm and isinstance(error, litellm.Timeout)
    ):
        return CallFailed("timeout", message)
    if litellm and isinstance(error, litellm.RateLimitError):
        return CallFailed("rate_limited", message, retry_after(error))
    # LiteLLM reports an unparsable body and a dropped connection as HTTP 500: look inside first.
    if _looks_like_bad_body(message):
        return CallFailed("bad_response", message)
    if _is_connection_error(error, litellm):
        return CallFailed("connection", message)
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and status >= 500:
        return CallFailed("server_error", message, retry_after(error))
    if isinstance(status, int) and 400 <= status < 500:
        return CallFailed("client_error", message)
    return CallFailed("bad_response", message)


def _is_connection_error(error: BaseException, litellm) -> bool:
    if isinstance(error, (ConnectionError, OSError)) or (
        litellm and isinstance(error, litellm.APIConnectionError)
    ):
        return True
    return "Connection error" in str(error) or "Server disconnected" in str(error)


def _looks_like_bad_body(message: str) -> bool:
    markers = (
        "JSONDecodeError",
        "Expecting value",
        "Unterminated string",
        "Expecting ',' delimiter",
        "Expecting property name",
        "Invalid control character",
        "Extra data",
    )
    return any(marker in message for marker in markers)


def retry_after(error: BaseException) -> float | None:
    """Seconds from a Retry-After header carried by a LiteLLM/OpenAI exception, if any."""
    for holder in (getattr(error, "response", None), error):
        headers = getattr(holder, "headers", None) or getattr(holder, "litellm_response_headers", None)
        value = headers.get("retry-after") if headers is not None else None
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def call_cost(spec: ModelSpec, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost of one call: explicit prices first, else LiteLLM's map; unknown stays None, never 0."""
    if spec.input_cost_per_token is not None and spec.output_cost_per_token is not None:
        return prompt_tokens * spec.input_cost_per_token + completion_tokens * spec.output_cost_per_token
    prices = _map_prices(spec.model)
    if prices is None:
        return None
    if prices == "litellm":
        return _litellm_cost(spec.model, prompt_tokens, completion_tokens)
    return prompt_tokens * prices[0] + completion_tokens * prices[1]


# Price-map fields that make a price depend on more than two per-token figures (tiers, long prompts).
_TIERED = ("above_", "tiered", "_tiers")


@functools.lru_cache(maxsize=1024)
def _map_prices(model: str) -> tuple[float, float] | str | None:
    """A model's (input, output) per-token prices read once from the map, where two figures say it
    all; "litellm" where LiteLLM must work it out (tiers); None where nobody prices it."""
    from workhorse.tasks.common.pricing import lookup_entry

    found = lookup_entry(model)
    if found and not any(marker in field for field in found[1] for marker in _TIERED):
        return found[1]["input_cost_per_token"], found[1]["output_cost_per_token"]
    if _litellm_cost(model, 1, 1) is None:
        return None
    return "litellm"


def _litellm_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    import litellm

    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:
        return None
    return prompt_cost + completion_cost


class Checkpoint:
    """Append-only JSONL of finished rows; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None

    def load(self) -> dict[tuple, EvalResponse]:
        done: dict[tuple, EvalResponse] = {}
        if not self.path.exists():
            return done
        names = {f.name for f in fields(EvalResponse)}
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    row = EvalResponse(**{k: v for k, v in json.loads(line).items() if k in names})
                except (json.JSONDecodeError, TypeError):
                    continue
                done[row.identity] = row
        return done

    def append(self, row: EvalResponse) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        # Flushed per row: the OS keeps it even if this process is killed the next instant.
        self._file.write(json.dumps(row.__dict__) + "\n")  # every field a scalar: no deep copy
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    latency_ms REAL,
    created_at TEXT
);
"""


CACHE_BATCH = 256  # answers per write to the cache, and at least one write a second
CACHE_FLUSH_S = 1.0


class ResponseCache:
    """Successful answers in the state store, shared by every run of the workspace."""

    def __init__(self, workspace: Workspace):
        self.connection = store.connect(workspace)
        self.connection.ensure(CACHE_SCHEMA)
        self._pending: dict[str, tuple] = {}
        self._flushed_at = time.monotonic()

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple]:
        self.flush()
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT key, output, prompt_tokens, completion_tokens, cost_usd, latency_ms "
                f"FROM response_cache WHERE key IN ({marks})"
            )
            for key, *values in self.connection.execute(query, chunk):
                found[key] = tuple(values)
        return found

    def answers(self, requests: list[ModelRequest], run_id: str) -> dict[tuple, EvalResponse]:
        """Rows for the requests already answered, by identity. The cost is recomputed at the
        request's current price (the plan's overrides may have changed since the answer was paid)."""
        hits = self.lookup(r.cache_key for r in requests)
        rows = {}
        for request in (r for r in requests if r.cache_key in hits):
            output, prompt_tokens, completion_tokens, cost, latency = hits[request.cache_key]
            if prompt_tokens is not None and completion_tokens is not None:
                cost = call_cost(request.model, prompt_tokens, completion_tokens)
            rows[request.identity] = response_row(
                request,
                run_id,
                output=output,
                latency_ms=latency,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost,
                cached=True,
            )
        return rows

    def put(self, key: str, row: EvalResponse) -> None:
        """Store an answer; written in batches (one statement per batch, not per answer), at least
        once a second: a kill loses at most that second to the cache, and the run's checkpoint,
        flushed per row, is what a killed run resumes from."""
        self._pending[key] = (
            key,
            row.model,
            row.output,
            row.prompt_tokens,
            row.completion_tokens,
            row.cost_usd,
            row.latency_ms,
            datetime.now(timezone.utc).isoformat(),
        )
        if len(self._pending) >= CACHE_BATCH or time.monotonic() - self._flushed_at >= CACHE_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self._pending:
            rows, self._pending = list(self._pending.values()), {}
            self.connection.executemany(
                "INSERT INTO response_cache (key, model, output, prompt_tokens, completion_tokens, cost_usd, "
                "latency_ms, created_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (key) DO UPDATE SET "
                "model = excluded.model, output = excluded.output, prompt_tokens = excluded.prompt_tokens, "
                "completion_tokens = excluded.completion_tokens, cost_usd = excluded.cost_usd, "
                "latency_ms = excluded.latency_ms, created_at = excluded.created_at",
                rows,
            )

    def close(self) -> None:
        self.flush()
        self.connection.close()


@dataclass
class RunStats:
    requests: int = 0
    calls: int = 0
    cached: int = 0
    resumed: int = 0
    answered: int = 0
    failed: int = 0
    retries: int = 0
    errors_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Runner:
    """Runs model requests for one run id inside a workspace."""

    def __init__(
        self,
        workspace: Workspace,
        run_id: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        use_cache: bool = True,
        progress: bool = False,
        checkpoint_name: str = "checkpoint",
        limits: dict[str, EndpointLimiter] | None = None,
        breakers: dict[str, CircuitBreaker] | None = None,
        lean: bool = True,
        on_result: Callable[[EvalResponse], None] | None = None,
    ):
        self.workspace = workspace
        self.run_id = run_id
        self.retry = retry
        self.use_cache = use_cache
        self.progress = progress
        self.stats = RunStats()
        # Shards of one run running side by side each keep their own file: appends never interleave.
        self.checkpoint = Checkpoint(workspace.run_dir(run_id) / f"{checkpoint_name}.jsonl")
        # Runners of one event loop (the shards of a flow) pass one dict: an endpoint's limit holds for all.
        self.limiters: dict[str, EndpointLimiter] = {} if limits is None else limits
        self.breakers: dict[str, CircuitBreaker] = {} if breakers is None else breakers
        # OpenAI-compatible endpoints (an api_base) skip LiteLLM: see http_path.py. Off: LiteLLM for all.
        self.lean = lean
        self._http = _http_pool()
        # Told of every row as it is settled (answered, failed, cached or resumed): eval progress.
        self.on_result = on_result or (lambda row: None)

    async def run(self, requests: list[ModelRequest]) -> list[EvalResponse]:
        """Answer every request (in input order), reusing the checkpoint and the cache."""
        _require_unique(requests)
        self.stats.requests = len(requests)
        done = {k: row for k, row in self.checkpoint.load().items() if row.error_type is None}
        self.stats.resumed = sum(r.identity in done for r in requests)
        pending = [r for r in requests if r.identity not in done]
        cache = ResponseCache(self.workspace) if self.use_cache else None
        try:
            done.update(self._from_cache(cache, pending))
            for request in requests:
                if request.identity in done:
                    self.on_result(done[request.identity])
            to_call = [r for r in pending if r.identity not in done]
            done.update(await self._call_all(to_call, cache))
        finally:
            await self._http.close()
            self.checkpoint.close()
            if cache is not None:
                cache.close()
        return [done[r.identity] for r in requests]

    def _from_cache(self, cache: ResponseCache | None, pending: list[ModelRequest]) -> dict:
        if cache is None:
            return {}
        rows = cache.answers(pending, self.run_id)
        for row in rows.values():
            self.checkpoint.append(row)
        self.stats.cached = len(rows)
        return rows

    async def _call_all(self, requests: list[ModelRequest], cache: ResponseCache | None) -> dict:
        # Identical requests in one run (same key) are paid for once.
        by_key: dict[str, list[ModelRequest]] = defaultdict(list)
        for request in requests:
            by_key[request.cache_key].append(request)
        rows: dict[tuple, EvalResponse] = {}
        meter = current_meter()
        if meter is not None and by_key:
            meter.begin()
        with _progress_bar(self.progress, len(requests), self.run_id) as advance:

            async def answer(group: list[ModelRequest]) -> None:
                first = await self._call_with_retries(group[0])
                if cache is not None and first.error_type is None:
                    cache.put(group[0].cache_key, first)
                if meter is not None and first.error_type is None:
                    meter.add(first.latency_ms, first.prompt_tokens, first.completion_tokens)
                for request in group:
                    row = first if request is group[0] else self._copy_for(request, first)
                    self.checkpoint.append(row)
                    rows[request.identity] = row
                    self.on_result(row)
                    advance()

            try:
                await asyncio.gather(*(answer(group) for group in by_key.values()))
            finally:
                if meter is not None and by_key:
                    meter.end()
        return rows

    async def _call_with_retries(self, request: ModelRequest) -> EvalResponse:
        failure = CallFailed("connection", "no attempt made")
        for attempt in range(self.retry.max_attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt - 1, failure.retry_after_s))
            try:
                row = await self._call_once(request)
                row.attempts = attempt + 1
                self.stats.answered += 1
                return row
            except Exception as error:  # every failure is classified, none escapes unrecorded
                failure = classify(error)
                self.stats.errors_by_type[failure.error_type] += 1
                if failure.error_type not in RETRYABLE:
                    break
        self.stats.failed += 1
        return self._row(
            request, error_type=failure.error_type, error_message=str(failure), attempts=attempt + 1
        )

    async def _call_once(self, request: ModelRequest) -> EvalResponse:
        spec = request.model
        limiter = self.limiter(spec)
        ticket = await limiter.acquire(expected_tokens(request.messages, request.params))
        breaker = self._breaker(spec.endpoint)
        try:  # checked after the wait for a slot: the circuit may have opened meanwhile
            probe = breaker.admit()
        except CallFailed as failure:
            limiter.release(ticket, failure.error_type)
            raise
        self.stats.calls += 1
        started = time.perf_counter()
        try:
            # The outer guard in case the client's own timeout fails.
            async with asyncio.timeout(spec.timeout_s + 5):
                output, prompt_tokens, completion_tokens = await self._answer(request)
        except Exception as error:
            failure = classify(error)
            breaker.record(failure.error_type, probe)
            limiter.release(ticket, failure.error_type)
            raise failure from error
        except BaseException:
            breaker.release(probe)
            limiter.release(ticket, "cancelled")
            raise
        breaker.record(None, probe)
        latency_ms = (time.perf_counter() - started) * 1000
        limiter.release(ticket, None, used_tokens=prompt_tokens + completion_tokens)
        return self._row(
            request,
            output=output,
            latency_ms=latency_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=call_cost(spec, prompt_tokens, completion_tokens),
        )

    async def _answer(self, request: ModelRequest) -> tuple[str, int, int]:
        """The answer's text and token counts, by the lean path where it takes the request, else LiteLLM."""
        from workhorse.tasks.common import http_path

        spec = request.model
        if self.lean and http_path.takes(spec.model, spec.api_base, request.params):
            answer = await self._http.complete(
                spec.model, spec.api_base, spec.api_key, request.messages, request.params, spec.timeout_s
            )
            return http_path.content_and_usage(answer)
        response = await _litellm_call(spec, request)
        usage = getattr(response, "usage", None)
        return (
            _content_of(response),
            getattr(usage, "prompt_tokens", None) or 0,
            getattr(usage, "completion_tokens", None) or 0,
        )

    def limiter(self, spec: ModelSpec) -> EndpointLimiter:
        """The endpoint's limiter, made from the first spec that reaches it (runners of one event
        loop pass one dict, so an endpoint's limits hold for all of them)."""
        limiter = self.limiters.get(spec.endpoint)
        if limiter is None:
            limiter = self.limiters[spec.endpoint] = EndpointLimiter(spec.endpoint, spec.limits)
        return limiter

    def _breaker(self, endpoint: str) -> CircuitBreaker:
        breaker = self.breakers.get(endpoint)
        if breaker is None:
            breaker = self.breakers[endpoint] = CircuitBreaker(
                endpoint, self.retry.breaker_threshold, self.retry.breaker_cooldown_s
            )
        return breaker

    def _row(self, request: ModelRequest, **values: Any) -> EvalResponse:
        return response_row(request, self.run_id, **values)

    def _copy_for(self, request: ModelRequest, answered: EvalResponse) -> EvalResponse:
        values = {
            k: v for k, v in asdict(answered).items() if k not in ("item_id", "model", "prompt_variant")
        }
        return EvalResponse(
            **{
                **values,
                "item_id": request.item_id,
                "model": request.model.label,
                "prompt_variant": request.prompt_variant,
                "cached": True,
            }
        )


def response_row(request: ModelRequest, run_id: str, **values: Any) -> EvalResponse:
    """The eval_response row of one request; ``values`` fill in what the call returned."""
    base = dict(
        run_id=run_id,
        item_id=request.item_id,
        model=request.model.label,
        hosting=request.model.hosting,
        prompt_variant=request.prompt_variant,
        output=None,
        latency_ms=None,
        prompt_tokens=None,
        completion_tokens=None,
        cost_usd=None,
        error_type=None,
        cached=False,
        request_key=request.cache_key,
    )
    return EvalResponse(**{**base, **values})


def _http_pool():
    from workhorse.tasks.common.http_path import HttpPool

    return HttpPool()


async def _litellm_call(spec: ModelSpec, request: ModelRequest) -> Any:
    import litellm

    litellm.suppress_debug_info = True  # its banners would bury our own logs
    return await litellm.acompletion(
        model=spec.model,
        messages=request.messages,
        api_base=spec.api_base,
        api_key=spec.api_key,
        timeout=spec.timeout_s,
        max_retries=0,
        **request.params,
    )


def _content_of(response: Any) -> str:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError) as error:
        raise CallFailed("bad_response", f"response has no message: {error}") from error
    if content is None:
        raise CallFailed("bad_response", "response message has no content")
    return content


def _require_unique(requests: list[ModelRequest]) -> None:
    seen: set[tuple] = set()
    for request in requests:
        if request.identity in seen:
            raise ValueError(
                f"duplicate request {request.identity}: (model, prompt variant, item) must be unique"
            )
        seen.add(request.identity)


class _progress_bar:
    """A rich progress bar, or nothing when progress is off (tests, logs)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled and total > 0, total, label
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._progress = Progress(transient=True)
        self._progress.start()
        task = self._progress.add_task(f"calling models ({self.label})", total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def run_requests(
    requests: list[ModelRequest], *, workspace: Workspace, run_id: str, **options
) -> list[EvalResponse]:
    """Synchronous entry point for scripts and Prefect tasks."""
    return asyncio.run(Runner(workspace, run_id, **options).run(requests))


def responses_table(rows: list[EvalResponse]):
    """The rows as a pyarrow table (the ``eval_response`` schema)."""
    import pyarrow as pa

    return pa.Table.from_pylist([asdict(row) for row in rows], schema=eval_response_schema())


def eval_response_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("run_id", pa.string()),
            ("item_id", pa.string()),
            ("model", pa.string()),
            ("hosting", pa.string()),
            ("prompt_variant", pa.string()),
            ("output", pa.string()),
            ("latency_ms", pa.float64()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("error_type", pa.string()),
            ("cached", pa.bool_()),
            ("attempts", pa.int64()),
            ("error_message", pa.string()),
            ("request_key", pa.string()),
        ]
    )
