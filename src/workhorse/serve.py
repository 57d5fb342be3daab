"""`workhorse serve`: every deployment of prefect.yaml, with its schedule, served from one process.

prefect.yaml stays the one source of truth: `prefect deploy --all` reads it for work pools and
workers, this module reads the same file for `prefect.serve` (no work pool, no worker). Block
references (`{{ prefect.blocks.… }}`) are resolved as `prefect deploy` would; a block that does
not exist yet is left out with a warning, so the flow falls back to its own precedence
(plan > block > environment) instead of the whole process refusing to start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

import workhorse  # noqa: F401  (offline defaults before anything imports LiteLLM)

PROJECT_FILE = Path("prefect.yaml")  # in the current folder, as `prefect deploy` reads it
BLOCK_PREFIX = "prefect.blocks."
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as prefect.yaml states it (anchors already expanded by the YAML loader)."""

    name: str
    entrypoint: str
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[dict[str, Any]] = field(default_factory=list)


def load_specs(path: str | Path = PROJECT_FILE, names: list[str] | None = None) -> list[DeploymentSpec]:
    """The deployments of a prefect.yaml (all, or those named); unknown names are an error."""
    project = yaml.safe_load(Path(path).read_text()) or {}
    specs = [
        DeploymentSpec(
            d["name"], d["entrypoint"], dict(d.get("parameters") or {}), list(d.get("schedules") or [])
        )
        for d in project.get("deployments") or []
    ]
    unknown = sorted(set(names or ()) - {spec.name for spec in specs})
    if unknown:
        raise ValueError(f"no deployment named {unknown} in {path}; known: {[s.name for s in specs]}")
    return [spec for spec in specs if not names or spec.name in names]


def to_schedule(entry: dict[str, Any]):
    """A prefect.yaml schedule entry (cron or interval seconds) as a prefect.schedules object."""
    from prefect.schedules import Cron, Interval

    options = {"timezone": entry.get("timezone"), "active": entry.get("active", True)}
    if "cron" in entry:
        return Cron(entry["cron"], day_or=entry.get("day_or", True), **options)
    if "interval" in entry:
        return Interval(timedelta(seconds=float(entry["interval"])), **options)
    raise ValueError(f"schedule {entry} has neither cron nor interval (rrule is not used by workhorse)")


def block_reference(value: Any) -> str | None:
    """`prefect.blocks.<slug>.<name>.<field>` when the value is exactly one block placeholder."""
    if isinstance(value, str) and value.strip().startswith("{{") and value.strip().endswith("}}"):
        inner = value.strip()[2:-2].strip()
        return inner if inner.startswith(BLOCK_PREFIX) else None
    return None


async def resolve_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters with block placeholders resolved; a missing block drops its parameter."""
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.templating import resolve_block_document_references

    resolved = {}
    for key, value in parameters.items():
        try:
            resolved[key] = (
                await resolve_block_document_references(value) if block_reference(value) else value
            )
        except (ObjectNotFound, ValueError):
            logger.warning(
                "parameter %r left out: %s does not exist yet (create it with `workhorse blocks init`); "
                "the flow falls back to the plan or the environment",
                key,
                block_reference(value),
            )
    return resolved


def load_flow(entrypoint: str, root: Path):
    """The flow object an entrypoint names, with the file path taken relative to prefect.yaml's folder."""
    from prefect.flows import load_flow_from_entrypoint

    file, function = entrypoint.rsplit(":", 1)
    return load_flow_from_entrypoint(f"{(root / file).resolve()}:{function}")


def build_deployments(
    path: str | Path = PROJECT_FILE,
    names: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    with_schedules: bool = True,
) -> list:
    """RunnerDeployments for `prefect.serve`, with ``overrides`` merged into every deployment's
    parameters where the flow accepts them (tests point the workspace elsewhere this way)."""
    import inspect

    from prefect.utilities.asyncutils import run_coro_as_sync

    root = Path(path).resolve().parent
    deployments = []
    for spec in load_specs(path, names):
        flow = load_flow(spec.entrypoint, root)
        accepted = inspect.signature(flow.fn).parameters
        extra = {k: v for k, v in (overrides or {}).items() if k in accepted}
        parameters = run_coro_as_sync(resolve_parameters({**spec.parameters, **extra}))
        schedules = [to_schedule(entry) for entry in spec.schedules] if with_schedules else None
        deployments.append(
            flow.to_deployment(spec.name, parameters=parameters, schedules=schedules, tags=["workhorse"])
        )
    return deployments


def serve_project(
    path: str | Path = PROJECT_FILE, names: list[str] | None = None, limit: int | None = None
) -> None:
    """Serve the deployments with their schedules until interrupted (Ctrl-C pauses their schedules).

    Runs from prefect.yaml's folder, as a `prefect deploy` worker would, so the relative paths
    in its parameters (plan, logs, ./.workhorse) mean the same in both ways of running."""
    from prefect import serve

    os.chdir(Path(path).resolve().parent)
    serve(*build_deployments(path, names), limit=limit)


def default_project() -> Path:
    """./prefect.yaml: the project is the folder `workhorse serve` runs in, as for `prefect deploy`."""
    from workhorse.errors import ConfigError

    if not PROJECT_FILE.is_file():
        raise ConfigError(f"no prefect.yaml in {Path.cwd()}: run from the project's folder or pass --project")
    return PROJECT_FILE
