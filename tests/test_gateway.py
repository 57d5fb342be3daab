"""The rollout through a real LiteLLM proxy: the workhorse gateway plugin in ``litellm --config``,
two fake OpenAI servers as incumbent and candidate, the ``openai`` SDK as the client, and the
state in a real PostgreSQL reached through a relay that a test can cut.

Which arm answered is read from the fake servers' own records (each request's text is unique, so
its key names the server that got it), never from the plugin; the expected arm of a user is the
router's bucket of that user. One proxy serves the module: each test has its own use case."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from pathlib import Path

import openai
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from tests.support.litellm_proxy import CuttableRelay, LiteLLMProxy
from workhorse import cli
from workhorse.errors import ConfigError
from workhorse.router import bucket
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.rollout import state as rollout
from workhorse.tasks.rollout.gateway import (
    GatewaySettings,
    WorkhorseGateway,
    gateway_settings,
    proxy_config,
)
from workhorse.tasks.rollout.guardrails import analyze_rollout
from workhorse.tasks.rollout.replicas import replicas
from workhorse.testing.fake_openai import FakeServerProcess, Faults, ServerConfig, request_key
from workhorse.workspace import Workspace

REFRESH_S = 0.5
USE_CASES = ("steps", "revert", "breaker", "outage")
INCUMBENT, CANDIDATE = "fake-incumbent", "fake-candidate"
POLICY = {"bake_time": 0, "min_requests": 5, "guardrails": {"min_critical_requests": 8}}


@pytest.fixture(scope="module")
def servers():
    """Incumbent and candidate, and a candidate whose every answer is a broken body: an error the
    circuit breaker does not count (not the endpoint's health), so only the revert stops its traffic."""
    broken = ServerConfig(faults=Faults(malformed=1.0))
    with FakeServerProcess(ServerConfig()) as inc, FakeServerProcess(ServerConfig()) as cand:
        with FakeServerProcess(broken) as broken:
            yield {"incumbent": inc, "candidate": cand, "broken": broken}


@pytest.fixture(scope="module")
def store(postgres_server):
    """A fresh database; the tests reach it directly, the proxy through a relay they can cut."""
    name = f"gw_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    relay = CuttableRelay("127.0.0.1", postgres_server.port)
    direct = postgres_server.url.rsplit("/", 1)[0] + "/" + name
    yield {
        "direct": direct,
        "relayed": direct.replace(f":{postgres_server.port}/", f":{relay.port}/"),
        "relay": relay,
    }
    relay.close()


@pytest.fixture(scope="module")
def proxy(servers, store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    routes = {
        uc: {
            arm: {
                "model": f"openai/fake-{arm}",
                "api_base": servers["broken" if (uc, arm) == ("revert", "candidate") else arm].url,
                "api_key": "sk-fake-upstream",
            }
            for arm in ("incumbent", "candidate")
        }
        for uc in USE_CASES
    }
    settings = gateway_settings(routes, str(folder / "ws"), refresh_s=REFRESH_S, breaker_threshold=4)
    with LiteLLMProxy(
        proxy_config(routes), settings, folder, env={"WORKHORSE_STATE_URL": store["relayed"]}
    ) as p:
        yield p


@pytest.fixture
def ws(store, tmp_path) -> Workspace:
    workspace = Workspace.resolve(tmp_path / "control")
    workspace.pin_state_url(store["direct"])
    return workspace


# --- driving traffic and reading where it went ---------------------------------------------


def messages(tag: str) -> list[dict]:
    return [{"role": "user", "content": f"{tag} where is my parcel?"}]


async def _send(proxy: LiteLLMProxy, use_case: str, calls: list[tuple[str, str]], concurrency: int = 8):
    client = openai.AsyncOpenAI(base_url=proxy.url, api_key=proxy.master_key, max_retries=0, timeout=30)
    slots = asyncio.Semaphore(concurrency)

    async def one(user: str, tag: str) -> str:
        async with slots:
            answer = await client.chat.completions.create(model=use_case, messages=messages(tag), user=user)
            return answer.choices[0].message.content

    try:
        return await asyncio.gather(*(one(user, tag) for user, tag in calls))
    finally:
        await client.close()


def send(proxy, use_case: str, calls: list[tuple[str, str]]) -> list[str]:
    return asyncio.run(_send(proxy, use_case, calls))


def records_by_server(servers) -> dict[str, set[str]]:
    return {arm: {r["key"] for r in servers[arm].records()} for arm in ("incumbent", "candidate")}


def arm_of(records: dict[str, set[str]], tag: str) -> set[str]:
    return {
        arm
        for arm in records
        if request_key({"model": f"fake-{arm}", "messages": messages(tag)}) in records[arm]
    }


def wait_for(condition, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def serving(ws: Workspace, use_case: str, version: int) -> float:
    """Seconds until the proxy's heartbeat says it serves this state version."""
    started = time.monotonic()
    wait_for(
        lambda: any(r["version"] == version for r in replicas(ws, use_case, within_s=5)),
        what=f"the proxy to serve version {version} of {use_case}",
    )
    return time.monotonic() - started


def binomial_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits / n - p) <= 3.29 * math.sqrt(p * (1 - p) / n) + 1e-9


# --- the tests ----------------------------------------------------------------------------


def test_before_any_weights_are_read_every_request_goes_to_the_incumbent(tmp_path, monkeypatch):
    """A plugin whose store never answered routes the alias and the tagged requests to the
    incumbent, whatever the user's bucket, and leaves other models alone."""
    monkeypatch.setenv("WORKHORSE_STATE_URL", "postgresql://nobody@127.0.0.1:9/unreachable")
    routes = {"uc": {arm: {"model": f"openai/{arm}"} for arm in ("incumbent", "candidate")}}
    plugin = WorkhorseGateway(gateway_settings(routes, str(tmp_path / "ws"), refresh_s=60))

    async def route(data: dict) -> dict:
        return await plugin.async_pre_call_hook(None, None, data, "completion")

    try:
        by_alias = [asyncio.run(route({"model": "uc", "user": f"u{i}"})) for i in range(30)]
        tagged = asyncio.run(route({"model": "other", "user": "u1", "metadata": {"tags": ["use_case:uc"]}}))
        untouched = asyncio.run(route({"model": "other", "user": "u1"}))
    finally:
        plugin.weights.stop()
    assert {r["model"] for r in by_alias} == {"uc/incumbent"}
    assert {r["metadata"]["workhorse"]["bucket"] for r in by_alias} == {
        bucket("uc", f"u{i}") for i in range(30)
    }
    assert tagged["model"] == "uc/incumbent"
    assert untouched == {"model": "other", "user": "u1"}
    assert plugin.weights.read_at is None  # nothing was ever read: the incumbent is the default, not a read


def test_the_split_follows_each_step_and_every_user_stays_on_one_arm(proxy, servers, ws):
    uc = "steps"
    rollout.start_rollout(
        ws,
        uc,
        "openai/fake-incumbent",
        "openai/fake-candidate",
        {**POLICY, "steps": ["shadow", 5, 10, 25, 100]},
    )
    users = [f"user-{i}" for i in range(40)]
    for step, weight in (("shadow", 0), ("5", 5), ("10", 10), ("25", 25)):
        state = rollout.current_state(ws, uc)
        assert state.stage == step
        pickup_s = serving(ws, uc, state.version)
        # each user twice, with different texts: both must land on the same arm
        calls = [(u, f"{step}-{u}-{n}") for n in range(2) for u in users]
        answers = send(proxy, uc, calls)
        assert all(a.startswith("echo:") for a in answers)
        records = records_by_server(servers)
        expected = {u: "candidate" if bucket(uc, u) < weight else "incumbent" for u in users}
        for user, tag in calls:
            arms = arm_of(records, tag)
            if step == "shadow":  # answered by the incumbent, copied to the candidate when a slot was free
                assert "incumbent" in arms, tag
            else:
                assert arms == {expected[user]}, (tag, arms, expected[user])
        on_candidate = sum(expected[u] == "candidate" for u in users)
        assert binomial_ok(on_candidate, len(users), weight / 100) or weight == 0
        rows_read_like_router_rows(ws, uc, step, len(calls), 2 * on_candidate, servers, calls)
        print(
            f"step {step}: weights picked up in {pickup_s:.2f} s, "
            f"{on_candidate}/{len(users)} users on the candidate"
        )
        if step != "25":
            rollout.advance(ws, uc, manual=True)
    status = CliRunner().invoke(cli.app, ["rollout", "status", uc, "--workspace", str(ws.root)])
    assert f"serves v{rollout.current_state(ws, uc).version} (25)" in status.stdout, status.output


def rows_read_like_router_rows(ws, uc, step, n_calls, n_candidate, servers, calls):
    """The guardrails' reader sees the proxy's calls: one row per call, arms as the servers saw them."""
    seen = []

    def expected() -> dict:
        if step != "shadow":
            return {"candidate": n_candidate, "incumbent": n_calls - n_candidate}
        records = records_by_server(servers)  # read again each time: shadow copies may still be in flight
        return {
            "candidate": sum("candidate" in arm_of(records, tag) for _, tag in calls),
            "incumbent": n_calls,
        }

    def counted() -> bool:
        seen.append((analyze_rollout(ws, uc).counts, expected()))
        return seen[-1][0] == seen[-1][1]

    try:
        wait_for(counted, what=f"the traffic rows of step {step}")
    except AssertionError:
        raise AssertionError(f"step {step}: the guardrails counted {seen[-1][0]}, the servers {seen[-1][1]}")
    assert step != "shadow" or seen[-1][1]["candidate"] > 0  # some copies went out
    rows = [r for r in read_traffic(ws, uc).to_pylist() if r["rollout_stage"] == step]
    assert {r["arm"] for r in rows} == (
        {"incumbent", "shadow"} if step == "shadow" else {"incumbent", "candidate"}
    )
    assert all(r["status"] == "ok" and r["prompt_tokens"] > 0 and r["cost_usd"] is not None for r in rows)
    assert all(r["response"].startswith("echo:") for r in rows)


class Traffic:
    """Requests through the proxy from a background thread, four at a time, until ``stop``."""

    def __init__(self, proxy, use_case: str):
        self.proxy, self.use_case = proxy, use_case
        self.answers: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._drive()), daemon=True)
        self._thread.start()

    async def _drive(self) -> None:
        client = openai.AsyncOpenAI(base_url=self.proxy.url, api_key=self.proxy.master_key, max_retries=0)
        n = 0
        while not self._stop.is_set():
            batch = [(f"user-{(n + i) % 40}", f"{self.use_case}-live-{n + i}") for i in range(4)]
            n += len(batch)
            results = await asyncio.gather(
                *(
                    client.chat.completions.create(model=self.use_case, messages=messages(tag), user=user)
                    for user, tag in batch
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    self.failures.append(result)
                else:
                    self.answers.append(result.choices[0].message.content)
        await client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_a_revert_by_the_control_loop_sends_everything_back_to_the_incumbent(proxy, servers, ws):
    """A candidate answering broken bodies at 25 %: the guardrails read the proxy's rows and the
    control loop reverts while traffic flows; one refresh_s after the revert's commit the
    candidate gets no more requests, and every client request got an answer (the fallback)."""
    uc = "revert"
    rollout.start_rollout(
        ws, uc, "openai/fake-incumbent", "openai/fake-candidate", {**POLICY, "steps": [25, 100]}
    )
    serving(ws, uc, rollout.current_state(ws, uc).version)
    traffic = Traffic(proxy, uc)
    try:
        for _ in range(100):
            time.sleep(0.3)
            if rollout.advance(ws, uc, analyze_rollout(ws, uc)).to_stage == "reverted":
                break
        reverted_at = rollout.history(ws, uc)[-1]["ts"] / 1e6
        time.sleep(3.0)  # traffic goes on past the bound below
    finally:
        traffic.stop()
    assert rollout.current_state(ws, uc).stage == "reverted"
    assert traffic.failures == [] and all(a.startswith("echo:") for a in traffic.answers)
    last = max(r["t"] for r in servers["broken"].records())
    print(
        f"revert: last candidate request {last - reverted_at:+.3f} s after the commit (refresh_s {REFRESH_S})"
    )
    # one refresh_s, plus the weights read itself and the request's way to the server on shared cores
    assert last <= reverted_at + REFRESH_S + 1.0
    rows = read_traffic(ws, uc).to_pylist()
    assert {r["error_type"] for r in rows if r["arm"] == "candidate"} == {"bad_response"}
    assert sum(r["arm"] == "incumbent" and r["rollout_stage"] == "reverted" for r in rows) > 0


def test_a_candidate_that_is_down_opens_its_circuit(proxy, servers, ws):
    """Candidate down (503) at 50 %: after breaker_threshold failures its share goes to the
    incumbent without reaching it, logged as circuit_open rows the guardrails count as errors."""
    uc = "breaker"
    rollout.start_rollout(
        ws, uc, "openai/fake-incumbent", "openai/fake-candidate", {**POLICY, "steps": [50, 100]}
    )
    serving(ws, uc, rollout.current_state(ws, uc).version)
    before = len(servers["candidate"].records())
    servers["candidate"].control(down=True)
    try:
        calls = [(f"user-{i}", f"breaker-{i}") for i in range(60)]
        assert all(a.startswith("echo:") for a in send(proxy, uc, calls))
    finally:
        servers["candidate"].control(down=False)
    reached = len(servers["candidate"].records()) - before
    routed = sum(bucket(uc, user) < 50 for user, _ in calls)
    rows = wait_for(
        lambda: (
            (r := read_traffic(ws, uc).to_pylist())
            and sum(x["arm"] == "candidate" for x in r) == routed
            and r
        ),
        what="the candidate rows",
    )
    errors = [r["error_type"] for r in rows if r["arm"] == "candidate"]
    assert errors.count("server_error") == reached and errors.count("circuit_open") == routed - reached
    assert reached < routed / 2  # the circuit held most of them back
    assert analyze_rollout(ws, uc).counts["candidate"] == routed


def test_a_store_outage_leaves_traffic_on_the_last_weights(proxy, servers, store, ws):
    uc = "outage"
    rollout.start_rollout(
        ws, uc, "openai/fake-incumbent", "openai/fake-candidate", {**POLICY, "steps": [10, 50, 100]}
    )
    serving(ws, uc, rollout.current_state(ws, uc).version)
    users = [f"user-{i}" for i in range(60)]
    store["relay"].cut()
    try:
        rollout.advance(ws, uc, manual=True)  # the control loop moves on; the proxy cannot see it
        time.sleep(3 * REFRESH_S)
        during = [(u, f"outage-{u}") for u in users]
        assert all(a.startswith("echo:") for a in send(proxy, uc, during))
    finally:
        store["relay"].restore()
    records = records_by_server(servers)
    for user, tag in during:
        assert arm_of(records, tag) == {"candidate" if bucket(uc, user) < 10 else "incumbent"}
    serving(ws, uc, rollout.current_state(ws, uc).version)
    after = [(u, f"restored-{u}") for u in users]
    send(proxy, uc, after)
    records = records_by_server(servers)
    for user, tag in after:
        assert arm_of(records, tag) == {"candidate" if bucket(uc, user) < 50 else "incumbent"}
    assert "state store unreachable" in proxy.log_tail(200_000)  # the proxy said why it kept them
    # the rows of the outage were kept and written once the store came back
    wait_for(
        lambda: len(read_traffic(ws, uc)) >= len(during) + len(after), what="the rows kept through the outage"
    )


def test_the_proxy_config_and_the_plugin_settings_come_from_the_plan(tmp_path):
    plan = {
        "incumbent": "openai/gpt-4o-mini",
        "candidates": [
            {"model": "hosted_vllm/qwen", "api_base": "http://gpu-box:8000/v1"},
            {"model": "deepinfra/Qwen/Qwen3-14B"},
        ],
        "use_cases": {
            "ticket-routing": {
                "task_type": "classification",
                "labels": ["a", "b"],
                "candidates": ["hosted_vllm/qwen"],
            },
            "summaries": {"task_type": "summarization"},  # two candidates, none chosen: left out
        },
    }
    (tmp_path / "workhorse.yaml").write_text(yaml.safe_dump(plan))
    arguments = ["gateway", "litellm-config", "--plan", str(tmp_path), "--workspace", str(tmp_path / "ws")]
    done = CliRunner().invoke(cli.app, arguments + ["--refresh-s", "2"])
    assert done.exit_code == 0, done.output
    printed = done.stdout
    config = yaml.safe_load(printed)
    assert [m["model_name"] for m in config["model_list"]] == [
        "ticket-routing/incumbent",
        "ticket-routing/candidate",
        "ticket-routing",
    ]
    candidate = config["model_list"][1]["litellm_params"]
    assert candidate == {
        "max_retries": 0,
        "model": "hosted_vllm/qwen",
        "api_key": "os.environ/HOSTED_VLLM_API_KEY",
        "api_base": "http://gpu-box:8000/v1",
    }
    assert config["router_settings"]["fallbacks"] == [
        {"ticket-routing/candidate": ["ticket-routing/incumbent"]}
    ]
    assert config["litellm_settings"]["callbacks"] == "workhorse.tasks.rollout.gateway.proxy_handler"
    settings_path = printed.splitlines()[0].split("=", 1)[1]
    settings = GatewaySettings.load(settings_path)
    assert settings.refresh_s == 2 and list(settings.use_cases) == ["ticket-routing"]
    assert settings.use_cases["ticket-routing"].candidate.deployment == "ticket-routing/candidate"
    # a mistyped settings file fails with its name and the field, not at the first request
    Path(settings_path).write_text("refresh_s: 2\nuse_case: {}\n")
    with pytest.raises(ConfigError, match="(?s)gateway.yaml.*use_case.*not permitted"):
        GatewaySettings.load(settings_path)
