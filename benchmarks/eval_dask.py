"""What Dask buys a client-bound evaluation: parallel_eval on 1 vs 2 Dask workers.

The fake server (separate process) answers at 2 ms, so the client's CPU (LiteLLM, ~3 ms a
call) is the bottleneck: one event loop cannot go faster, worker processes can. The flow runs
the same 1,600 BANKING77 items (dev: 2 candidates; test: 2 candidates + the incumbent; ~4,000
requests, all to the fake server) with the thread runner, then on LocalClusters of 1 and of 2
worker processes (one thread each). Clusters are started and their workers warmed up (imports,
a small flow run) before the clock runs; each timed run gets a fresh workspace, so every request
is a paid call. Prints wall times, the speed-up of 2 workers over 1 (target >= 1.6 on 2 cores),
the machine's load (other work on it depresses the speed-up) and checks that all three runs
gave identical answers, scores and verdict.

    python benchmarks/eval_dask.py [--items 1600] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from eval import banking_rows, build_workspace

import workhorse  # noqa: F401  (offline price map before litellm is imported)
from workhorse.testing.fake_openai import FakeServerProcess, ServerConfig

LATENCY_S = 0.002
WARM_UP_ITEMS = 40


def new_workspace(root: Path, rows: list[dict], candidates: list[dict]) -> Path:
    """eval.py's workspace with an incumbent that answers (at OPENAI_API_BASE), so the verdict is real."""
    import yaml

    root.mkdir(parents=True)
    build_workspace(root, rows, candidates)
    plan = yaml.safe_load((root / "workhorse.yaml").read_text())
    (root / "workhorse.yaml").write_text(yaml.safe_dump({**plan, "incumbent": "openai/incumbent"}))
    return root


def fresh_copy(template: Path, into: Path) -> Path:
    """The template's golden set and plan in a new workspace: a cold response cache."""
    shutil.copytree(template, into)
    return into


def timed_eval(root: Path, **execution) -> tuple[float, dict]:
    from workhorse.flows.evaluate import parallel_eval

    started = time.perf_counter()
    summary = asyncio.run(
        parallel_eval(
            use_case="banking",
            workspace=str(root),
            plan=str(root / "workhorse.yaml"),
            variants=["zero-shot"],
            replay=False,
            **execution,
        )
    )
    return time.perf_counter() - started, summary


def scored(summary: dict) -> tuple[list[tuple], dict]:
    """Every (model, variant, item) with its answer and score, and the verdict: what must not
    depend on the runner."""
    import pyarrow.parquet as pq

    return sorted(
        (s["model"], s["prompt_variant"], s["item_id"], s["prediction"], s["value"])
        for s in pq.read_table(summary["scores"]).to_pylist()
    ), summary["verdict"]


def start_cluster(workers: int):
    """A LocalCluster as the flow would start it, with workers that imported everything already."""
    from distributed import Client, LocalCluster

    from workhorse.tasks.evaluate.run import LOCAL_CLUSTER

    cluster = LocalCluster(n_workers=workers, **LOCAL_CLUSTER)
    with Client(cluster) as client:
        client.run(_import_runner)
    return cluster


def stop_cluster(cluster) -> None:
    """Closed as the flow closes its own: frozen objects make the workers exit at once."""
    import gc

    from distributed import Client

    with Client(cluster) as client:
        client.run(gc.freeze)
    cluster.close()


def _import_runner() -> None:
    import litellm  # noqa: F401

    import workhorse.tasks.evaluate.run  # noqa: F401


def measure(template: Path, scratch: Path, rounds: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Wall times per runner (rounds alternate between them) and the scores of each runner's last run."""
    rows = banking_rows(4000)  # spread over the file: its first rows are all one label
    warm_up = new_workspace(scratch / "warm-up", rows[:: len(rows) // WARM_UP_ITEMS], _candidates(template))
    clusters = {"dask, 1 worker": start_cluster(1), "dask, 2 workers": start_cluster(2)}
    runners = {
        "threads": {"task_runner": "threads"},
        **{
            name: {"task_runner": "dask", "dask_address": c.scheduler_address} for name, c in clusters.items()
        },
    }
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    scores: dict[str, list] = {}
    try:
        for number, (name, execution) in enumerate(runners.items()):  # imports, pools, Prefect: off the clock
            timed_eval(fresh_copy(warm_up, scratch / f"warm-{number}"), **execution)
        for round_number in range(rounds):
            for number, (name, execution) in enumerate(runners.items()):
                wall_s, summary = timed_eval(
                    fresh_copy(template, scratch / f"run-{round_number}-{number}"), **execution
                )
                seconds[name].append(wall_s)
                scores[name] = scored(summary)
    finally:
        for cluster in clusters.values():
            stop_cluster(cluster)
    return seconds, scores


def _candidates(root: Path) -> list[dict]:
    import yaml

    return yaml.safe_load((root / "workhorse.yaml").read_text())["candidates"]


def main() -> None:
    from prefect import flow

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1600)
    parser.add_argument("--rounds", type=int, default=1)
    arguments = parser.parse_args()
    load_before = os.getloadavg()
    os.environ["OPENAI_API_KEY"] = "sk-benchmark"  # the workers inherit it: no key travels with a task
    flow(lambda: None, name="warm-up")()  # the temporary Prefect server starts here, off the clock
    with FakeServerProcess(ServerConfig(latency_s=LATENCY_S)) as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["OPENAI_API_BASE"] = server.url  # the incumbent's endpoint
        candidates = [
            {"model": f"openai/candidate-{name}", "api_base": server.url, "hosting": ["api"]}
            for name in ("a", "b")
        ]
        template = new_workspace(Path(tmp) / "template", banking_rows(arguments.items), candidates)
        seconds, scores = measure(template, Path(tmp), arguments.rounds)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        f"{len(scores['threads'][0])} requests per run, fake server at {LATENCY_S * 1000:.0f} ms latency, "
        f"{os.cpu_count()} cores; "
        f"load average (1, 5, 15 min) before {_load(load_before)}, after {_load(os.getloadavg())}"
    )
    for name, wall_s in median.items():
        print(f"{name:>16}: {wall_s:6.1f} s  (rounds: {', '.join(f'{v:.1f}' for v in seconds[name])})")
    print(
        f"dask 2 workers / 1 worker speed-up = {median['dask, 1 worker'] / median['dask, 2 workers']:.2f}x"
        f"  (target >= 1.6)"
    )
    print(f"dask 2 workers / threads speed-up  = {median['threads'] / median['dask, 2 workers']:.2f}x")
    same = scores["threads"] == scores["dask, 1 worker"] == scores["dask, 2 workers"]
    print(f"identical answers and scores across the three runners: {same}")
    if not same:
        raise SystemExit("the runners disagree on scores")


def _load(averages: tuple[float, ...]) -> str:
    return " ".join(f"{x:.2f}" for x in averages)


if __name__ == "__main__":
    main()
