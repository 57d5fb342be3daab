"""Operating commands: `workhorse blocks register|init` (secrets stored, never echoed), `workhorse ui`
(a real Prefect server on 127.0.0.1, stopped by Ctrl-C) and `workhorse serve`'s refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from workhorse.cli import app

SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/s3cr3tS1ackT0ken"
OPENAI_KEY = "sk-test-0123456789abcdefSECRET"
VLLM_BASE = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    "secret, shown",
    [
        (SLACK_URL, "https://hooks.slack.com/…(redacted)"),
        (OPENAI_KEY, "sk-…(redacted)"),
        ("short", "…(redacted)"),
        (None, "(empty)"),
    ],
)
def test_mask_keeps_only_what_identifies_the_system(secret, shown):
    from workhorse.block_setup import mask

    assert mask(secret) == shown


def test_blocks_init_saves_from_the_environment_without_echoing_secrets(prefect_server, monkeypatch):
    from workhorse.blocks import ModelEndpoint, SlackAlerts
    from workhorse.tasks.monitor.alerts import resolve_webhook_url

    monkeypatch.setenv("WORKHORSE_SLACK_WEBHOOK_URL", SLACK_URL)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("HOSTED_VLLM_API_BASE", VLLM_BASE)
    result = CliRunner().invoke(app, ["blocks", "init"])
    assert result.exit_code == 0, result.output
    assert (
        SLACK_URL not in result.output and OPENAI_KEY not in result.output and "s3cr3t" not in result.output
    )
    assert "workhorse-slack-alerts/default: https://hooks.slack.com/…(redacted)" in result.output
    assert "workhorse-model-endpoint/openai: gpt-4o-mini, key sk-…(redacted)" in result.output
    assert SlackAlerts.load("default").webhook_url.get_secret_value() == SLACK_URL
    assert ModelEndpoint.load("openai").api_key.get_secret_value() == OPENAI_KEY
    vllm = ModelEndpoint.load("vllm")
    assert (vllm.api_base, vllm.api_key, vllm.hosting) == (VLLM_BASE, None, "self_hosted")
    # The alert path finds the saved block once the environment is gone.
    monkeypatch.delenv("WORKHORSE_SLACK_WEBHOOK_URL")
    assert resolve_webhook_url(None, {"alerts": {"slack_block": "default"}}).get_secret_value() == SLACK_URL


def test_blocks_register_puts_every_type_on_the_server(prefect_server):
    from prefect.client.orchestration import get_client

    result = CliRunner().invoke(app, ["blocks", "register"])
    assert result.exit_code == 0, result.output
    with get_client(sync_client=True) as client:
        for slug in ("workhorse-slack-alerts", "workhorse-model-endpoint"):
            assert slug in result.output
            schema = client.get_most_recent_block_schema_for_block_type(
                client.read_block_type_by_slug(slug).id
            )
            assert schema is not None and schema.fields["properties"]


def test_blocks_init_with_nothing_configured_says_what_it_reads(prefect_server):
    result = CliRunner().invoke(app, ["blocks", "init"])
    assert result.exit_code == 0, result.output
    assert "no block saved" in result.output and "WORKHORSE_SLACK_WEBHOOK_URL" in result.output


def test_serve_refuses_an_unknown_deployment():
    result = CliRunner().invoke(app, ["serve", "-d", "no-such-deployment"])
    assert result.exit_code == 1 and "no-such-deployment" in result.output


def read_export_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The `export PREFECT_API_URL=…` line `workhorse ui` prints once the server is healthy."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if line.startswith("export PREFECT_API_URL="):
            return line.strip().split("=", 1)[1]
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no export line from `workhorse ui`: {''.join(seen)}")


def test_ui_serves_a_healthy_api_on_localhost_until_ctrl_c(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "workhorse.cli", "ui"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        api_url = read_export_line(process, timeout_s=120)
        assert api_url.startswith("http://127.0.0.1:") and api_url.endswith("/api")
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "Prefect server stopped." in process.stdout.read()
        with pytest.raises(OSError):  # the server went down with it
            urllib.request.urlopen(f"{api_url}/health", timeout=2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_a_plan_error_is_one_clear_line_not_a_traceback(tmp_path):
    (tmp_path / "workhorse.yaml").write_text(
        "use_cases:\n  triage:\n    task_type: classification\n    labelz: [a, b]\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "workhorse.cli",
            "rollout",
            "start",
            "triage",
            "--candidate",
            "x/y",
            "--plan",
            str(tmp_path / "workhorse.yaml"),
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error:" in done.stderr and "labelz" in done.stderr and "line 4" in done.stderr
