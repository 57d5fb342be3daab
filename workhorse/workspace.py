"""Where a workspace lives and what is inside it.

The workspace directory holds everything runs produce: usage/, golden/, runs/<run_id>/,
models/ and state.db. Its location: explicit argument > WORKHORSE_WORKSPACE > ./.workhorse
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
