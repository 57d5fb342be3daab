"""Prefect Blocks: configuration of external systems (endpoints, Slack), never logic."""

from workhorse.blocks.endpoints import ModelEndpoint
from workhorse.blocks.slack import SlackAlerts

__all__ = ["ModelEndpoint", "SlackAlerts"]
