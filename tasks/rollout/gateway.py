"""The rollout inside a LiteLLM proxy: a callback that routes, logs and breaks circuits like the router.

Name it in the proxy config (``litellm_settings.callbacks: workhorse.tasks.rollout.gateway.proxy_handler``)
and point ``WORKHORSE_GATEWAY_CONFIG`` at the settings file (``workhorse gateway litellm-config``
prints the one and writes the other). Then:

- ``async_pre_call_hook``: a request for a use case's alias (or tagged ``use_case:<name>``, or with
  ``metadata.use_case``) goes to the incumbent's or the candidate's deployment, picked with the
  router's sticky ``bucket`` of the request's key (``user``, or a header or metadata field).
- Weights come from the state store, read by a background thread every ``refresh_s``: a request
  never waits on the database. An unreachable store leaves the last weights in force (logged);
  before the first read succeeds every request goes to the incumbent.
- The success and failure callbacks write one traffic-log row per call (arm, latency, tokens,
  cost, error class, the answer for the validity guardrail), batched by a writer thread that
  keeps rows through a store outage, so the control loop sees proxy traffic as router traffic.
- The candidate's circuit breaker is the eval runner's ``CircuitBreaker``: while it is open the
  candidate's share goes to the incumbent and a candidate row ``circuit_open`` is logged.
  A failing candidate call falls back to the incumbent through the proxy's own ``fallbacks``.
- Shadow: the plugin sends the candidate a copy of each incumbent request in the background
  (at most ``shadow_concurrency`` in flight; copies beyond that are skipped and counted), so
  the user's answer never waits for it.
- Each replica heartbeats its id and the weights version it serves (``replicas.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import yaml
from litellm.integrations.custom_logger import CustomLogger  # the proxy's callback base (no proxy extra)
from pydantic import BaseModel, ConfigDict, Field

import workhorse  # noqa: F401  (offline LiteLLM price map before litellm is imported)
from workhorse.config import Plan, load_plan
from workhorse.errors import ConfigError
from workhorse.router import BREAKER_OF_ARM, bucket
from workhorse.tasks.common.runner import CallFailed, CircuitBreaker, ModelSpec, RetryPolicy, classify
from workhorse.tasks.common.traffic_log import COLUMNS, _as_record, make_row
from workhorse.tasks.common.traffic_log import connect as traffic_connect
from workhorse.tasks.rollout.litellm_export import key_env_name
from workhorse.tasks.rollout.replicas import heartbeat
from workhorse.tasks.rollout.state import current_state, current_weights
from workhorse.workspace import Workspace

log = logging.getLogger("workhorse.gateway")

SETTINGS_ENV = "WORKHORSE_GATEWAY_CONFIG"
# A breaker probe with no outcome after this long is taken as lost (see ``_admit_call``).
PROBE_LEASE_S = 120.0
INCUMBENT_ONLY = {"incumbent": 100, "candidate": 0, "shadow": False, "stage": "unknown", "version": -1}


# --- settings ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    deployment: str = Field(description="The proxy's model_name that serves this arm.")
    model: str = Field(description="Its LiteLLM model string, written in the traffic log.")


class GatewayRoute(_Strict):
    alias: str = Field(description="The model name the apps call for this use case.")
    incumbent: Arm
    candidate: Arm


class GatewaySettings(_Strict):
    workspace: Optional[str] = Field(None, description="Workspace folder; its state_url pin is followed.")
    refresh_s: float = Field(5.0, gt=0, description="Seconds between two reads of the weights.")
    key: str = Field(
        "user", description="The sticky key: user, header:<name> or metadata:<name>; else a random one."
    )
    log_payloads: bool = Field(True, description="Keep request and answer in the traffic log.")
    shadow_concurrency: int = Field(8, ge=0, description="Shadow copies in flight at most.")
    breaker_threshold: int = Field(RetryPolicy.breaker_threshold, ge=1)
    breaker_cooldown_s: float = Field(RetryPolicy.breaker_cooldown_s, gt=0)
    flush_s: float = Field(0.2, gt=0, description="Seconds between two batches of traffic rows.")
    use_cases: dict[str, GatewayRoute]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GatewaySettings":
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"workhorse gateway settings not found at {file} (set {SETTINGS_ENV})")
        try:
            return cls.model_validate(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
        except ValueError as error:
            raise ConfigError(f"workhorse gateway settings {file}: {error}") from error


# --- weights, read in the background -------------------------------------------------------


class WeightsCache:
    """The weights of each use case, refreshed by a daemon thread; ``get`` never touches the store."""

    def __init__(self, workspace: Workspace, use_cases: list[str], refresh_s: float, replica_id: str):
        self.workspace, self.use_cases, self.refresh_s = workspace, use_cases, refresh_s
        self.replica_id = replica_id
        self._weights: dict[str, dict] = {}
        self.read_at: float | None = None  # monotonic time the last successful read started
        self.outage_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, use_case: str) -> dict:
        return self._weights.get(use_case, INCUMBENT_ONLY)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="workhorse-gateway-weights", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        """A read starts every ``refresh_s`` (not ``refresh_s`` after the last one ended): a change
        committed to the store is served at most ``refresh_s`` plus one read later."""
        while True:
            started = time.monotonic()
            self.refresh()
            if self._stop.wait(max(0.0, self.refresh_s - (time.monotonic() - started))):
                return

    def refresh(self) -> bool:
        """One read of every use case's weights (all or none replace the last ones), then a heartbeat."""
        started = time.monotonic()
        try:
            fresh = {uc: current_weights(self.workspace, uc) for uc in self.use_cases}
        except Exception as error:  # the store is down: the last weights stay, and that is said once
            if self.outage_since is None:
                self.outage_since = started
                log.warning("state store unreachable (%s): keeping the last weights", type(error).__name__)
            return False
        if self.outage_since is not None:
            log.warning("state store reachable again after %.1f s", started - self.outage_since)
            self.outage_since = None
        self._weights, self.read_at = fresh, started
        try:
            heartbeat(self.workspace, self.replica_id, fresh)
        except Exception as error:  # only `rollout status` misses this replica until the next one
            log.info("heartbeat not written: %s", type(error).__name__)
        return True


# --- traffic rows, batched and kept through an outage --------------------------------------


class RowWriter:
    """Rows queue in memory; a thread turns them into records and inserts them in batches every
    ``flush_s``, off the proxy's event loop. A batch that fails (store down) is kept and retried,
    up to ``max_rows`` (the oldest are dropped, counted and logged)."""

    def __init__(self, workspace: Workspace, flush_s: float = 0.2, max_rows: int = 100_000):
        self.workspace, self.flush_s, self.max_rows = workspace, flush_s, max_rows
        self._rows: list[dict] = []  # logged, not yet taken by the writer
        self._held: list[tuple] = []  # taken, not yet committed (the writer thread's own)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.logged = self.written = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="workhorse-gateway-rows", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # the proxy's last rows are written when it stops

    def log(self, row: dict) -> None:
        with self._lock:
            self._rows.append(row)
            self.logged += 1

    def pending(self) -> int:
        return self.logged - self.written - self.dropped

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        _close_quietly(self._write(None))

    def _run(self) -> None:
        connection = None
        while not self._stop.wait(self.flush_s):
            connection = self._write(connection)
        _close_quietly(connection)

    def _write(self, connection):
        with self._lock:
            fresh, self._rows = self._rows, []
        self._hold(fresh)
        if not self._held:
            return connection
        try:
            connection = connection or traffic_connect(self.workspace)
            with connection.transaction():  # one commit per batch
                marks = ",".join("?" * len(COLUMNS))
                connection.executemany(
                    f"INSERT INTO traffic_log ({','.join(COLUMNS)}) VALUES ({marks})", self._held
                )
        except Exception as error:
            log.warning("%d traffic rows kept for a retry: %s", len(self._held), type(error).__name__)
            _close_quietly(connection)
            return None
        self.written += len(self._held)
        self._held = []
        return connection

    def _hold(self, rows: list[dict]) -> None:
        for row in rows:
            try:
                self._held.append(_as_record(row))
            except ValueError as error:  # a row this module built wrong: say so, keep the others
                log.error("traffic row dropped: %s", error)
                self.dropped += 1
        overflow = len(self._held) - self.max_rows
        if overflow > 0:
            log.error("%d traffic rows dropped: the store has been down too long", overflow)
            del self._held[:overflow]
            self.dropped += overflow


def _close_quietly(connection) -> None:
    try:
        if connection is not None:
            connection.close()
    except Exception:  # a dead connection may fail to close: nothing else to do with it
        pass


# --- the callback --------------------------------------------------------------------------


class WorkhorseGateway(CustomLogger):
    """The proxy callback, built from ``GatewaySettings``; it starts with the proxy or on a first request."""

    def __init__(self, settings: GatewaySettings | None = None, replica_id: str | None = None):
        super().__init__()
        self.settings = settings
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._ready = False
        self.shadow_skipped = 0
        self._probes: dict[str, float] = {}  # use case -> when its breaker's probe went out

    def start(self) -> None:
        """Start reading weights and writing rows (at the proxy's start, else on the first request)."""
        if self._ready:
            return
        if self.settings is None:
            raise ConfigError(f"workhorse gateway: set {SETTINGS_ENV} to the settings file")
        s = self.settings
        self.workspace = Workspace.resolve(s.workspace)
        self.by_alias = {route.alias: uc for uc, route in s.use_cases.items()}
        self.by_deployment = {
            getattr(route, arm).deployment: (uc, arm)
            for uc, route in s.use_cases.items()
            for arm in ("incumbent", "candidate")
        }
        self.weights = WeightsCache(self.workspace, list(s.use_cases), s.refresh_s, self.replica_id)
        self.writer = RowWriter(self.workspace, s.flush_s)
        self.breakers = {
            uc: CircuitBreaker(f"{route.candidate.deployment}", s.breaker_threshold, s.breaker_cooldown_s)
            for uc, route in s.use_cases.items()
        }
        self._background: set[asyncio.Task] = set()  # shadow calls in flight
        self.weights.start()
        self._ready = True

    def use_case_of(self, data: dict) -> str | None:
        """The use case a request belongs to: its model is an alias, or its metadata names one."""
        if data.get("model") in self.by_alias:
            return self.by_alias[data["model"]]
        metadata = data.get("metadata") or {}
        named = metadata.get("use_case")
        tags = list(metadata.get("tags") or []) + list(data.get("tags") or [])
        named = named or next((t.split(":", 1)[1] for t in tags if str(t).startswith("use_case:")), None)
        return named if named in self.settings.use_cases else None

    def key_of(self, data: dict) -> str | None:
        kind, _, name = self.settings.key.partition(":")
        metadata = data.get("metadata") or {}
        if kind == "header":
            headers = {k.lower(): v for k, v in (metadata.get("headers") or {}).items()}
            return headers.get(name.lower())
        if kind == "metadata":
            value = metadata.get(name)
            return None if value is None else str(value)
        return data.get("user")

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type) -> dict:
        self.start()
        use_case = self.use_case_of(data)
        if use_case is None:
            return data
        route, weights = self.settings.use_cases[use_case], self.weights.get(use_case)
        key = self.key_of(data) or uuid.uuid4().hex
        spot = bucket(use_case, key)
        tag = {
            "use_case": use_case,
            "stage": weights["stage"],
            "bucket": spot,
            "key_hash": hashlib.sha256(key.encode()).hexdigest()[:12],
            "probe": False,
        }
        arm = "candidate" if spot < weights["candidate"] else "incumbent"
        if arm == "candidate":
            arm = self._admit(use_case, tag, data)
        tag["arm"] = arm
        data["model"] = getattr(route, arm).deployment
        data.setdefault("metadata", {})["workhorse"] = tag
        if arm == "incumbent" and weights["shadow"]:
            self._shadow(use_case, data, tag)
        return data

    def _admit(self, use_case: str, tag: dict, data: dict) -> str:
        """The candidate if its circuit lets the call through; else the incumbent, and a candidate
        row ``circuit_open`` so the guardrails keep seeing the candidate fail."""
        try:
            tag["probe"] = self._admit_call(use_case)
            return "candidate"
        except CallFailed as refused:
            self._log_refused(use_case, "candidate", tag, data, refused.error_type)
            tag["circuit_open"] = True
            return "incumbent"

    def _admit_call(self, use_case: str) -> bool:
        """The breaker's ``admit``. A probe whose outcome never came back (the client went away and
        LiteLLM logged nothing) is given up after ``PROBE_LEASE_S``, else the circuit stays shut."""
        breaker = self.breakers[use_case]
        if breaker.probing and time.monotonic() - self._probes.get(use_case, 0.0) > PROBE_LEASE_S:
            breaker.release(True)
        probe = breaker.admit()
        if probe:
            self._probes[use_case] = time.monotonic()
        return probe

    def _log_refused(self, use_case: str, arm: str, tag: dict, data: dict, error_type: str) -> None:
        route = self.settings.use_cases[use_case]
        row = self._row(use_case, arm, route.candidate.model, tag, data.get("messages"))
        row.update(status="error", error_type=error_type, latency_ms=0.0)
        self.writer.log(row)

    def _shadow(self, use_case: str, data: dict, tag: dict) -> None:
        """A copy of the request to the candidate, in the background; never waited for."""
        shadow_tag = {k: v for k, v in tag.items() if k != "circuit_open"} | {"arm": "shadow"}
        if len(self._background) >= self.settings.shadow_concurrency:
            self.shadow_skipped += 1  # the user's traffic comes first: no queue of shadow copies
            return
        try:
            shadow_tag["probe"] = self._admit_call(use_case)
        except CallFailed as refused:
            self._log_refused(use_case, "shadow", shadow_tag, data, refused.error_type)
            return
        task = asyncio.create_task(self._send_shadow(use_case, list(data.get("messages") or []), shadow_tag))
        self._background.add(task)  # kept referenced until done, else the loop may drop it
        task.add_done_callback(self._background.discard)

    async def _send_shadow(self, use_case: str, messages: list, tag: dict) -> None:
        from litellm.proxy.proxy_server import llm_router

        try:  # the outcome is logged by the callbacks below; the answer goes nowhere
            await llm_router.acompletion(
                model=self.settings.use_cases[use_case].candidate.deployment,
                messages=messages,
                metadata={"workhorse": tag},
                disable_fallbacks=True,
            )
        except Exception:
            pass

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._record(kwargs, start_time, end_time, response_obj, None)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._record(kwargs, start_time, end_time, None, kwargs.get("exception"))

    def _record(self, kwargs: dict, start_time, end_time, response, error) -> None:
        """One traffic row for one call the proxy made for a routed request, and the breaker fed."""
        tag = ((kwargs.get("litellm_params") or {}).get("metadata") or {}).get("workhorse")
        if not tag or not self._ready:
            return
        logged = kwargs.get("standard_logging_object") or {}
        use_case, arm = self.by_deployment.get(logged.get("model_group") or kwargs.get("model"), (None, None))
        if use_case != tag["use_case"]:
            return
        arm = "shadow" if tag["arm"] == "shadow" else arm
        error_type = classify(error).error_type if error is not None else None
        if BREAKER_OF_ARM[arm] == "candidate":
            self.breakers[use_case].record(error_type, tag["probe"] and tag["arm"] == arm)
        route = self.settings.use_cases[use_case]
        row = self._row(use_case, arm, getattr(route, BREAKER_OF_ARM[arm]).model, tag, kwargs.get("messages"))
        if arm != tag["arm"]:
            row["metadata"]["fallback"] = True  # the candidate failed; the proxy's fallback answered
        self.writer.log(row | _outcome(logged, response, error_type, start_time, end_time, self.settings))

    def _row(self, use_case: str, arm: str, model: str, tag: dict, messages) -> dict:
        metadata = {k: tag[k] for k in ("bucket", "key_hash") if k in tag}
        metadata |= {"gateway": self.replica_id} | ({"circuit_open": True} if tag.get("circuit_open") else {})
        return make_row(
            use_case=use_case,
            model=model,
            provider=model.split("/", 1)[0],
            rollout_stage=tag["stage"],
            arm=arm,
            metadata=metadata,
            request=messages if self.settings.log_payloads and messages else None,  # JSON in the writer
        )

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until the queued rows are written (tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.writer.pending() and time.monotonic() < deadline:
            time.sleep(0.05)


def _outcome(
    logged: dict, response, error_type: str | None, start_time, end_time, s: GatewaySettings
) -> dict:
    latency_ms = (end_time - start_time).total_seconds() * 1000
    if error_type is not None:
        return {"status": "error", "error_type": error_type, "latency_ms": latency_ms}
    text = _answer_text(response)
    return {
        "status": "ok",
        "latency_ms": latency_ms,
        "prompt_tokens": logged.get("prompt_tokens") or 0,
        "completion_tokens": logged.get("completion_tokens") or 0,
        "cost_usd": logged.get("response_cost"),
        "response": text if s.log_payloads else None,
    }


def _answer_text(response) -> str | None:
    try:
        return response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None


# --- the proxy config fragment -------------------------------------------------------------


def proxy_config(
    routes: dict[str, dict], callback: str = "workhorse.tasks.rollout.gateway.proxy_handler"
) -> dict:
    """The LiteLLM proxy config for use cases ``{use_case: {"incumbent": params, "candidate": params}}``
    (``params``: ``litellm_params`` of that model), with the settings this plugin needs.

    Each use case gets two deployments, ``<use_case>/incumbent`` and ``<use_case>/candidate``, the
    alias ``<use_case>`` (served by the incumbent when the plugin is not loaded, so nothing breaks),
    and a fallback from the candidate to the incumbent."""
    model_list, fallbacks = [], []
    for use_case, arms in routes.items():
        for arm in ("incumbent", "candidate"):
            params = {"max_retries": 0, **arms[arm]}
            model_list.append({"model_name": f"{use_case}/{arm}", "litellm_params": params})
        model_list.append({"model_name": use_case, "litellm_params": {"max_retries": 0, **arms["incumbent"]}})
        fallbacks.append({f"{use_case}/candidate": [f"{use_case}/incumbent"]})
    return {
        "model_list": model_list,
        "router_settings": {"num_retries": 0, "fallbacks": fallbacks},
        "litellm_settings": {"callbacks": callback, "drop_params": True},
    }


def gateway_settings(
    routes: dict[str, dict], workspace: str | None = None, **options: Any
) -> GatewaySettings:
    """The plugin's settings matching ``proxy_config(routes)``."""
    use_cases = {
        uc: GatewayRoute(
            alias=uc,
            incumbent=Arm(deployment=f"{uc}/incumbent", model=arms["incumbent"]["model"]),
            candidate=Arm(deployment=f"{uc}/candidate", model=arms["candidate"]["model"]),
        )
        for uc, arms in routes.items()
    }
    return GatewaySettings(workspace=workspace, use_cases=use_cases, **options)


def write_settings(settings: GatewaySettings, path: str | os.PathLike) -> Path:
    target = Path(path)
    target.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return target


def routes_from_plan(
    plan: Plan, workspace: Workspace | None = None, candidates: dict[str, str] | None = None
) -> dict[str, dict]:
    """``{use_case: {incumbent: params, candidate: params}}`` for ``proxy_config``, from the plan.

    The candidate of a use case is the one named in ``candidates``, else the one its rollout is
    moving to, else its only candidate; use cases with none of these are left out. Keys are
    ``os.environ/NAME`` references that the proxy resolves, never values."""
    routes = {}
    for use_case, case in plan.use_cases.items():
        known = {c.model: c for c in plan.candidates_for(use_case)}
        rolling = current_state(workspace, use_case).candidate if workspace else None
        chosen = (
            (candidates or {}).get(use_case) or rolling or (next(iter(known)) if len(known) == 1 else None)
        )
        if chosen is None:
            continue
        routes[use_case] = {
            "incumbent": _params(case.incumbent or plan.incumbent, None),
            "candidate": _params(chosen, getattr(known.get(chosen), "api_base", None)),
        }
    return routes


def _params(model: str, api_base: str | None) -> dict:
    params = {"model": model, "api_key": f"os.environ/{key_env_name(ModelSpec(model))}"}
    return params | ({"api_base": api_base} if api_base else {})


def write_gateway_config(
    plan: Plan,
    workspace: Workspace,
    candidates: dict[str, str] | None = None,
    refresh_s: float = 5.0,
    key: str = "user",
) -> tuple[Path, str]:
    """Write the plugin's settings to ``<workspace>/routing/gateway.yaml``; return that path and the
    proxy config (YAML text) that goes with it."""
    routes = routes_from_plan(plan, workspace, candidates)
    if not routes:
        raise ConfigError("no use case has a candidate to route to: name one as USE_CASE=MODEL")
    settings = gateway_settings(routes, str(workspace.root), refresh_s=refresh_s, key=key)
    path = write_settings(settings, workspace.subdir("routing") / "gateway.yaml")
    header = f"# workhorse gateway: start the proxy with {SETTINGS_ENV}={path}\n"
    return path, header + yaml.safe_dump(proxy_config(routes), sort_keys=False)


def candidate_choices(pairs: list[str]) -> dict[str, str]:
    """``["use-case=model", ...]`` as a mapping; a pair without ``=`` is refused by name."""
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise ConfigError(f"--candidate takes USE_CASE=MODEL, not {bad[0]!r}")
    return dict(pair.split("=", 1) for pair in pairs)


def main(argv: list[str] | None = None) -> None:
    """Print the proxy config for a plan and write the plugin's settings in the workspace."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--plan", default=None, help="workhorse.yaml, or its folder")
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--candidate", action="append", default=[], help="USE_CASE=MODEL (repeatable)")
    parser.add_argument("--refresh-s", type=float, default=5.0)
    parser.add_argument("--key", default="user", help="user, header:<name> or metadata:<name>")
    arguments = parser.parse_args(argv)
    workspace = Workspace.resolve(arguments.workspace)
    plan = load_plan(arguments.plan, workspace.root)
    choices = candidate_choices(arguments.candidate)
    _, text = write_gateway_config(plan, workspace, choices, arguments.refresh_s, arguments.key)
    print(text, end="")


def _from_environment() -> WorkhorseGateway:
    """The instance the proxy loads: settings from ``WORKHORSE_GATEWAY_CONFIG`` when it is set."""
    path = os.environ.get(SETTINGS_ENV)
    if not path:  # imported outside a proxy: nothing starts
        return WorkhorseGateway()
    handler = WorkhorseGateway(GatewaySettings.load(path))
    handler.start()  # weights are read and replicas heartbeat before the first request comes
    return handler


proxy_handler = _from_environment()

if __name__ == "__main__":
    main()
