"""Start-up: the audit's price map is LiteLLM's own, read without importing LiteLLM; a CLI killed
with SIGKILL leaves no temporary Prefect server behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workhorse.tasks.common.pricing import model_cost_map

COLUMNS = (
    "request_id,ts,use_case,model,provider,prompt_tokens,completion_tokens,latency_ms,status,error_type,"
    "cost_usd,request,response,metadata"
)
TWO_ROWS = (
    COLUMNS
    + """
r1,2026-11-01T10:00:00Z,ticket-routing,gpt-4o-mini,openai,120,5,350,ok,,,,billing,{}
r2,2026-11-02T10:00:00Z,ticket-routing,gpt-4o-mini,openai,130,4,310,ok,,,,refund,{}
"""
)


def test_the_price_map_read_from_the_file_is_the_one_litellm_serves():
    import litellm

    served = model_cost_map()
    assert served.keys() == litellm.model_cost.keys()
    assert all(dict(served[name]) == dict(litellm.model_cost[name]) for name in served)


def test_pricing_a_model_imports_no_litellm():
    script = (
        "import sys\nfrom workhorse.tasks.common.pricing import lookup_entry\n"
        "key, entry = lookup_entry('gpt-4o-mini')\n"
        "print(entry['input_cost_per_token'] * 500_000_000 + entry['output_cost_per_token'] * 100_000_000)\n"
        "print('litellm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["135.0", "False"]  # the playbook's reference figure


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def command_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants_of(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        children = [c for p in frontier for c in children_of(p)]
        found += children
        frontier = children
    return found


@pytest.mark.parametrize(
    "command, marker",
    [
        (["audit", "{logs}", "-w", "{tmp}/ws"], "uvicorn"),  # Prefect's temporary server
        (["ui", "--home", "{tmp}/ui"], "prefect server start"),  # the server `workhorse ui` runs
    ],
    ids=["audit", "ui"],
)
def test_a_cli_killed_with_sigkill_leaves_no_prefect_server_behind(tmp_path, command, marker):
    logs = tmp_path / "logs.csv"
    logs.write_text(TWO_ROWS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    arguments = [part.format(logs=logs, tmp=tmp_path) for part in command]
    cli = subprocess.Popen(
        [str(Path(sys.executable).parent / "workhorse"), *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    left: list[int] = []
    try:
        deadline = time.monotonic() + 120
        server = None
        while server is None and cli.poll() is None and time.monotonic() < deadline:
            server = next((p for p in children_of(cli.pid) if marker in command_of(p)), None)
            time.sleep(0.05)
        assert server is not None, f"the CLI never started its Prefect server ({marker})"
        tree = descendants_of(cli.pid)
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        deadline = time.monotonic() + 60  # a bound for a stuck test, not a measured time
        while any(alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in tree if alive(p)]
        assert not left, f"orphaned: {[command_of(p) for p in left]}"
    finally:
        if cli.poll() is None:
            cli.kill()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
