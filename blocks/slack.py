"""The Slack channel monitoring alerts go to, as a Prefect Block (configuration only).

Saved once (``SlackAlerts(webhook_url=...).save("default")``) and named in the plan's
``alerts.slack_block``; ``workhorse.tasks.monitor.alerts.resolve_webhook_url`` decides between it, a flow
parameter, the plan and ``WORKHORSE_SLACK_WEBHOOK_URL``.
"""

from __future__ import annotations

from typing import Optional

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class SlackAlerts(Block):
    """Where workhorse posts guardrail alerts: a Slack incoming webhook."""

    _block_type_name = "Workhorse Slack Alerts"
    _block_type_slug = "workhorse-slack-alerts"
    _description = "Slack incoming webhook for workhorse monitoring and rollout alerts."

    webhook_url: SecretStr = Field(description="Slack incoming webhook URL (a secret: it grants posting).")
    channel: Optional[str] = Field(
        None, description="Channel override, e.g. #llm-migration (legacy webhooks only)."
    )
    mention: Optional[str] = Field(None, description="Who to ping on an alert, e.g. <!here> or <@U123>.")
