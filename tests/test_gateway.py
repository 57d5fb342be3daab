"""The rollout through a real LiteLLM proxy: the workhorse gateway plugin in ``litellm --config``,
two fake OpenAI servers as incumbent and candidate, the ``openai`` SDK as the client, and the
state in a real PostgreSQL reached through a relay that a test can cut.

Which arm answered is read from the fake servers' own records (each request's text is unique, so
its key names the server that got it), never from the plugin; the expected arm of a user is the
router's bucket of that user. One proxy serves the module: each test has its own use case."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import openai
import psycopg
import pytest

from tests.support.litellm_proxy import CuttableRelay, LiteLLMProxy
from workhorse.router import bucket
from workhorse.tasks.common.traffic_log import read_traffic
from workhorse.tasks.rollout import state as rollout
from workhorse.tasks.rollout.gateway import (
    WorkhorseGateway,
    gateway_settings,
    proxy_config,
    replicas,
)
from workhorse.tasks.rollout.guardrails import analyze_rollout
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig, request_key
from workhorse.workspace import Workspace

REFRESH_S = 0.5
USE_CASES = ("steps", "revert", "outage")
INCUMBENT, CANDIDATE = "fake-incumbent", "fake-candidate"
POLICY = {"bake_time": 0, "min_requests": 5, "guardrails": {"min_critical_requests": 8}}


@pytest.fixture(scope="module")
def servers():
    with FakeServerProcess(ServerConfig()) as inc, FakeServerProcess(ServerConfig()) as cand:
        yield {"incumbent": inc, "candidate": cand}


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
            arm: {"model": f"openai/fake-{arm}", "api_base": servers[arm].url, "api_key": "sk-fake-upstream"}
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
    return {arm: {r["key"] for r in server.records()} for arm, server in servers.items()}


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
        time.sleep(0.05)
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
    users = [f"user-{i}" for i in range(60)]
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


def rows_read_like_router_rows(ws, uc, step, n_calls, n_candidate, servers, calls):
    """The guardrails' reader sees the proxy's calls: one row per call, arms as the servers saw them."""
    if step == "shadow":
        records = records_by_server(servers)
        shadows = sum("candidate" in arm_of(records, tag) for _, tag in calls)
        assert shadows > 0
        expected = {"candidate": shadows, "incumbent": n_calls}
    else:
        expected = {"candidate": n_candidate, "incumbent": n_calls - n_candidate}
    seen = []

    def counted() -> bool:
        seen.append(analyze_rollout(ws, uc).counts)
        return seen[-1] == expected

    try:
        wait_for(counted, what=f"the traffic rows of step {step}")
    except AssertionError:
        raise AssertionError(f"step {step}: the guardrails counted {seen[-1]}, the servers {expected}")
    rows = [r for r in read_traffic(ws, uc).to_pylist() if r["rollout_stage"] == step]
    assert {r["arm"] for r in rows} == (
        {"incumbent", "shadow"} if step == "shadow" else {"incumbent", "candidate"}
    )
    assert all(r["status"] == "ok" and r["prompt_tokens"] > 0 and r["cost_usd"] is not None for r in rows)
    assert all(r["response"].startswith("echo:") for r in rows)


def test_a_revert_by_the_control_loop_sends_everything_back_to_the_incumbent(proxy, servers, ws):
    """Candidate broken at 25 %: its circuit opens, the guardrails read the proxy's rows and revert,
    and after the revert's commit plus one refresh_s the candidate gets no request."""
    uc = "revert"
    rollout.start_rollout(
        ws, uc, "openai/fake-incumbent", "openai/fake-candidate", {**POLICY, "steps": [25, 100]}
    )
    serving(ws, uc, rollout.current_state(ws, uc).version)
    servers["candidate"].control(down=True)
    try:
        calls, rounds = [], 0
        while rollout.current_state(ws, uc).stage != "reverted":
            batch = [(f"user-{i}", f"revert-{rounds}-{i}") for i in range(40)]
            assert all(a.startswith("echo:") for a in send(proxy, uc, batch))  # fallbacks answer
            calls += batch
            rollout.advance(ws, uc, analyze_rollout(ws, uc))
            rounds += 1
            assert rounds < 10, "the control loop never reverted"
        reverted_at = rollout.history(ws, uc)[-1]["ts"] / 1e6
        after = [(f"user-{i}", f"after-{i}") for i in range(80)]
        time.sleep(REFRESH_S)
        assert all(a.startswith("echo:") for a in send(proxy, uc, after))
    finally:
        servers["candidate"].control(down=False)
    late = [r for r in servers["candidate"].records() if r["t"] > reverted_at + REFRESH_S]
    assert late == []
    assert all(arm_of(records_by_server(servers), tag) == {"incumbent"} for _, tag in after)
    rows = read_traffic(ws, uc).to_pylist()
    errors = [r["error_type"] for r in rows if r["arm"] == "candidate"]
    assert "circuit_open" in errors and set(errors) <= {"server_error", "circuit_open"}
    last = max((r["t"] for r in servers["candidate"].records() if r["outcome"] == "down"), default=0)
    print(f"revert: last candidate request {last - reverted_at:+.2f} s after the commit")


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
    # the rows of the outage were kept and written once the store came back
    wait_for(
        lambda: len(read_traffic(ws, uc)) >= len(during) + len(after), what="the rows kept through the outage"
    )
