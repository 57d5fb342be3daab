"""Where a workspace lives and what is inside it.

The workspace directory holds everything runs produce: usage/, golden/, runs/<run_id>/,
models/ and state.db. Its location: explicit argument > WORKHORSE_WORKSPACE > ./.workhorse

Its state (rollout, cache, incidents, traffic) lives in ``state.db`` unless a state URL points
elsewhere: ``WORKHORSE_STATE_URL`` > the URL pinned in ``<root>/state_url`` (written when a plan
with ``state_url`` is loaded, so every task and app process that opens this workspace finds the
same store) > ``<root>/state.db``. The environment wins so an operator can point one run at
another database without editing the plan. The pin never holds a password (the plan refuses
one; ``${VAR}`` references stay unexpanded until connect time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_URL_PIN = "state_url"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike | None = None) -> "Workspace":
        chosen = root or os.environ.get("WORKHORSE_WORKSPACE") or ".workhorse"
        path = Path(chosen).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def state_url(self) -> str:
        """Where the state lives: a postgresql:// URL or the SQLite file's path."""
        pin = self.root / STATE_URL_PIN
        pinned = pin.read_text(encoding="utf-8").strip() if pin.is_file() else ""
        return os.environ.get("WORKHORSE_STATE_URL") or pinned or str(self.state_db)

    def pin_state_url(self, state_url: str) -> None:
        """Bind this workspace to a state store (delete ``<root>/state_url`` to unbind it)."""
        pin = self.root / STATE_URL_PIN
        if not pin.is_file() or pin.read_text(encoding="utf-8").strip() != state_url:
            staged = pin.with_suffix(".tmp")
            staged.write_text(state_url + "\n", encoding="utf-8")
            staged.replace(pin)  # readers see the old pin or the new one, never half of it

    @property
    def models_dir(self) -> Path:
        # Converted model weights are big and identical across workspaces: allow sharing them.
        shared = os.environ.get("WORKHORSE_MODEL_CACHE")
        return Path(shared).expanduser().resolve() if shared else self.root / "models"

    def run_dir(self, run_id: str) -> Path:
        path = self.root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def subdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path
