"""Which LiteLLM proxy replicas serve a use case's rollout, and on which weights version.

Each gateway plugin (``gateway.py``) writes one row per use case at every weights read: its
replica id, the state version it now serves, when. ``workhorse rollout status`` lists the rows
seen recently, so an operator sees whether every proxy took a revert. Kept apart from the plugin
so that reading it does not import LiteLLM.
"""

from __future__ import annotations

from workhorse import store
from workhorse.tasks.common.traffic_log import now_micros
from workhorse.workspace import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_replica (
    replica_id TEXT NOT NULL, use_case TEXT NOT NULL, version INTEGER NOT NULL, stage TEXT,
    seen_at INTEGER NOT NULL, PRIMARY KEY (replica_id, use_case)
);
"""


def heartbeat(workspace: Workspace, replica_id: str, weights: dict[str, dict]) -> None:
    """Record that ``replica_id`` serves these weights (``{use_case: current_weights(...)}``) now."""
    rows = [(replica_id, uc, w["version"], w["stage"], now_micros()) for uc, w in weights.items()]
    with store.connect(workspace) as connection:
        connection.ensure(SCHEMA)
        with connection.transaction():
            connection.executemany(
                "INSERT INTO gateway_replica (replica_id, use_case, version, stage, seen_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (replica_id, use_case) DO UPDATE SET "
                "version = excluded.version, stage = excluded.stage, seen_at = excluded.seen_at",
                rows,
            )


def replicas(workspace: Workspace | str | None, use_case: str, within_s: float = 60.0) -> list[dict]:
    """The replicas that reported weights for a use case in the last ``within_s`` seconds."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    since = now_micros() - int(within_s * 1_000_000)
    with store.connect(ws) as connection:
        connection.ensure(SCHEMA)
        cursor = connection.execute(
            "SELECT replica_id, version, stage, seen_at FROM gateway_replica "
            "WHERE use_case = ? AND seen_at >= ? ORDER BY replica_id",
            (use_case, since),
        )
        return store.rows_as_dicts(cursor)
