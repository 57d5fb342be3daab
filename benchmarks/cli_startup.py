"""Start-up of a CLI command on a small input, side by side with ``python -c "import workhorse"``.

``workhorse audit`` of a 2-row CSV, measured in alternation (median of the rounds):
  1. ``python -c "import workhorse"``: the floor every command pays;
  2. the audit with a Prefect server already running (``workhorse ui``, then PREFECT_API_URL);
  3. the audit with no server: Prefect starts a temporary one for the command;
  4. as 2, with ``import litellm`` first: what the audit paid when its price map came from LiteLLM.
Prints seconds and the ratio of each to 1. Absolute numbers are noisy on shared 2-core machines.

    python benchmarks/cli_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOGS = """request_id,ts,use_case,model,provider,prompt_tokens,completion_tokens,latency_ms,status,error_type,\
cost_usd,request,response,metadata
r1,2026-11-01T10:00:00Z,ticket-routing,gpt-4o-mini,openai,120,5,350,ok,,,,billing,{}
r2,2026-11-02T10:00:00Z,ticket-routing,gpt-4o-mini,openai,130,4,310,ok,,,,refund,{}
"""
CLI = "import sys; from workhorse.cli import app; sys.argv[0] = 'workhorse'; app()"
CLI_AFTER_LITELLM = "import workhorse, litellm; " + CLI


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    from workhorse.ui import local_prefect_server

    with (
        tempfile.TemporaryDirectory() as folder,
        local_prefect_server(home=Path(folder) / "server") as server,
    ):
        logs = Path(folder) / "logs.csv"
        logs.write_text(LOGS)
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        base["PREFECT_HOME"] = str(Path(folder) / "home")
        served = {**base, "PREFECT_API_URL": server.api_url}
        audit = ["audit", str(logs), "-w"]
        variants = {
            "python -c 'import workhorse'": ([sys.executable, "-c", "import workhorse"], base),
            "audit, Prefect server running": ([sys.executable, "-c", CLI, *audit, f"{folder}/a"], served),
            "audit, temporary Prefect server": ([sys.executable, "-c", CLI, *audit, f"{folder}/b"], base),
            "audit + import litellm (before), server running": (
                [sys.executable, "-c", CLI_AFTER_LITELLM, *audit, f"{folder}/c"],
                served,
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, (command, env) in variants.items():
                times[name].append(timed(command, env))
    floor = statistics.median(times["python -c 'import workhorse'"])
    print(f"{'command':52} {'median s':>9} {'× import':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:52} {median:9.2f} {median / floor:9.1f}")


if __name__ == "__main__":
    main()
