"""Gateway benchmark: the LiteLLM proxy's latency with the workhorse plugin against without it.

Side by side on one fake OpenAI server (no latency): proxy A has no callback and serves the
model directly; proxy N has a callback that does nothing (what LiteLLM itself spends on any
callback: it builds its logging payload for every call); proxies B and C load the plugin (two
replicas on one PostgreSQL store, rollout at 25 %). Requests go one at a time through the
``openai`` SDK, round-robin over A, N and B so all see the same machine load; the report gives
p50/p99 of each and the differences. It also checks that
both plugin replicas heartbeat the same weights version after the control loop moves a step.

    .venv/bin/python benchmarks/gateway.py [--requests 400]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run as a script: tests.support is not installed

import workhorse  # noqa: E402,F401  (offline LiteLLM price map before litellm is imported)

UC = "bench"
NOOP_CALLBACK = """from litellm.integrations.custom_logger import CustomLogger

class Noop(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        pass

noop = Noop()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_all(proxies) -> None:
    threads = [threading.Thread(target=p.start) for p in proxies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def timed(client, model: str, i: int) -> float:
    started = time.perf_counter()
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"q {i}"}], user=f"u{i}"
    )
    return (time.perf_counter() - started) * 1000


def plugin_cpu(calls: int = 5000) -> None:
    """CPU per routed request spent in the plugin's own code (hook + success callback), in-process."""
    import asyncio
    from datetime import datetime, timedelta

    import litellm

    from workhorse.tasks.rollout import state as rollout
    from workhorse.tasks.rollout.gateway import WorkhorseGateway, gateway_settings
    from workhorse.workspace import Workspace

    ws = Workspace.resolve(Path(tempfile.mkdtemp(prefix="gateway-cpu-")))
    rollout.start_rollout(ws, UC, "openai/i", "openai/c", {"steps": [25, 100]})
    routes = {UC: {arm: {"model": f"openai/{arm}"} for arm in ("incumbent", "candidate")}}
    plugin = WorkhorseGateway(gateway_settings(routes, str(ws.root), refresh_s=60))
    plugin.start()
    plugin.weights.refresh()
    response = litellm.ModelResponse(choices=[{"message": {"role": "assistant", "content": "billing"}}])
    now = datetime.now()

    async def run() -> tuple[float, float]:
        hook = record = 0.0
        for i in range(calls):
            data = {"model": UC, "user": f"u{i}", "messages": [{"role": "user", "content": f"q {i}"}]}
            t0 = time.perf_counter()
            data = await plugin.async_pre_call_hook(None, None, data, "completion")
            t1 = time.perf_counter()
            logged = {
                "model_group": data["model"],
                "prompt_tokens": 12,
                "completion_tokens": 2,
                "response_cost": 1e-6,
            }
            kwargs = {"litellm_params": {"metadata": data["metadata"]}, "standard_logging_object": logged}
            kwargs["messages"] = data["messages"]
            await plugin.async_log_success_event(kwargs, response, now, now + timedelta(milliseconds=20))
            hook, record = hook + t1 - t0, record + time.perf_counter() - t1
        return hook, record

    hook, record = asyncio.run(run())
    plugin.flush()
    print(
        f"plugin CPU per request: hook {hook / calls * 1e6:.0f} µs, "
        f"success callback {record / calls * 1e6:.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    arguments = parser.parse_args()
    plugin_cpu()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        run(Path(tmp), arguments.requests)


def run(folder: Path, requests: int) -> None:
    import openai

    from tests.support.litellm_proxy import LiteLLMProxy
    from tests.support.postgres import PostgresServer
    from workhorse.tasks.rollout import state as rollout
    from workhorse.tasks.rollout.gateway import gateway_settings, proxy_config
    from workhorse.tasks.rollout.replicas import replicas
    from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig
    from workhorse.workspace import Workspace

    with PostgresServer() as pg, FakeServerProcess(ServerConfig()) as fake:
        ws = Workspace.resolve(folder / "ws")
        ws.pin_state_url(pg.url)
        rollout.start_rollout(
            ws, UC, "openai/fake-incumbent", "openai/fake-candidate", {"steps": [25, 50, 100]}
        )
        arm = {"api_base": fake.url, "api_key": "sk-fake"}
        routes = {
            UC: {
                "incumbent": {"model": "openai/fake-incumbent", **arm},
                "candidate": {"model": "openai/fake-candidate", **arm},
            }
        }
        plain = {
            "model_list": [{"model_name": UC, "litellm_params": {"model": "openai/fake-incumbent", **arm}}]
        }
        settings = gateway_settings(routes, str(ws.root), refresh_s=1.0)
        proxies = []
        noop = {**plain, "litellm_settings": {"callbacks": "noop_callback.noop"}}
        variants = [("plain", plain), ("noop", noop), ("plugin-1", proxy_config(routes))]
        for name, config in variants + [("plugin-2", proxy_config(routes))]:
            (folder / name).mkdir()
            (folder / name / "noop_callback.py").write_text(NOOP_CALLBACK)  # loaded from the config's folder
            proxies.append(LiteLLMProxy(config, settings, folder / name, env={"WORKHORSE_STATE_URL": pg.url}))
        started = time.monotonic()
        start_all(proxies)
        print(f"{len(proxies)} proxies ready in {time.monotonic() - started:.1f} s")
        try:
            report(proxies, requests, openai)
            rollout.advance(ws, UC, manual=True)
            time.sleep(2.5)
            seen = replicas(ws, UC, within_s=5)
            print(f"after one step (version {rollout.current_state(ws, UC).version}): replicas {seen}")
        finally:
            for proxy in proxies:
                proxy.stop()


def report(proxies, requests: int, openai) -> None:
    names = ("no callback", "no-op callback", "workhorse plugin")
    clients = [openai.OpenAI(base_url=p.url, api_key=p.master_key, max_retries=0) for p in proxies[:3]]
    for client in clients:  # warm-up: connections, first-call imports
        for i in range(20):
            timed(client, UC, i)
    latencies = {name: [] for name in names}
    for i in range(requests):
        for name, client in zip(names, clients):
            latencies[name].append(timed(client, UC, i))
    for name, values in latencies.items():
        print(
            f"{name:17s} p50 {statistics.median(values):7.2f} ms  p99 {percentile(values, 0.99):7.2f} ms  "
            f"(n={len(values)})"
        )
    for base in names[:2]:
        a, b = latencies[base], latencies[names[2]]
        print(
            f"plugin vs {base:15s} p50 {statistics.median(b) - statistics.median(a):+7.2f} ms  "
            f"p99 {percentile(b, 0.99) - percentile(a, 0.99):+7.2f} ms"
        )


if __name__ == "__main__":
    main()
