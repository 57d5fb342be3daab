"""Blocks hold configuration only; the webhook precedence puts a Block between the plan and the
environment; the README's Automation on workhorse.guardrail.breached is valid for the server."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from workhorse.blocks import ModelEndpoint, SlackAlerts
from workhorse.config import parse_plan
from workhorse.tasks.common.runner import ModelSpec
from workhorse.tasks.monitor.alerts import EVENT_BREACHED, resolve_webhook_url


@pytest.mark.parametrize(
    "block, slug", [(SlackAlerts, "workhorse-slack-alerts"), (ModelEndpoint, "workhorse-model-endpoint")]
)
def test_every_field_is_described_and_the_slug_is_stable(block, slug):
    assert block.get_block_type_slug() == slug
    missing = [name for name, info in block.model_fields.items() if not info.description]
    assert missing == []


def test_an_endpoint_block_becomes_the_runners_model_spec_and_hides_its_key():
    block = ModelEndpoint(
        model="hosted_vllm/smollm2",
        api_base="http://127.0.0.1:8000/v1",
        api_key=SecretStr("sk-x"),
        max_concurrency=4,
        timeout_s=30,
        input_cost_per_token=1e-7,
        output_cost_per_token=2e-7,
        hosting="self_hosted",
    )
    spec = ModelSpec.from_endpoint(block)
    assert (
        spec.model,
        spec.api_base,
        spec.api_key,
        spec.max_concurrency,
        spec.timeout_s,
        spec.hosting,
        spec.input_cost_per_token,
        spec.output_cost_per_token,
    ) == ("hosted_vllm/smollm2", "http://127.0.0.1:8000/v1", "sk-x", 4, 30.0, "self_hosted", 1e-7, 2e-7)
    assert "sk-x" not in repr(block) and "sk-x" not in repr(spec)


@pytest.mark.parametrize("in_plan, expected", [(None, "http://block"), ("http://plan", "http://plan")])
def test_a_saved_block_sits_between_the_plan_and_the_environment(
    prefect_server, monkeypatch, in_plan, expected
):
    name = f"test-{uuid.uuid4().hex[:8]}"
    SlackAlerts(webhook_url=SecretStr("http://block"), channel="#llm-migration").save(name)
    monkeypatch.setenv("WORKHORSE_SLACK_WEBHOOK_URL", "http://env")
    alerts = {"slack_block": name, **({"slack_webhook_url": in_plan} if in_plan else {})}
    found = resolve_webhook_url(None, parse_plan({"alerts": alerts}))
    assert found.get_secret_value() == expected
    missing = resolve_webhook_url(None, parse_plan({"alerts": {"slack_block": "no-such-block"}}))
    assert missing.get_secret_value() == "http://env"  # an unknown block is silent, not an error


def guardrail_automation(deployment_id):
    """The snippet in the final report / README, verbatim."""
    from prefect.automations import Automation
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name="workhorse: act on guardrail breaches",
        trigger=EventTrigger(
            expect={"workhorse.guardrail.breached"},
            match={"prefect.resource.id": "workhorse.use-case.*", "workhorse.severity": "critical"},
            for_each={"prefect.resource.id"},  # one firing per use case
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                parameters={"use_case": "{{ event.resource.name }}"},
            )
        ],
    )


def test_the_documented_automation_is_accepted_by_the_server(prefect_server):
    automation = guardrail_automation(uuid.uuid4()).create()
    from prefect.automations import Automation

    stored = Automation.read(id=automation.id)
    assert stored.trigger.expect == {EVENT_BREACHED}
    assert stored.trigger.match.model_dump()["prefect.resource.id"] == "workhorse.use-case.*"
    stored.delete()
