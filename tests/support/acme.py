"""The Acme example workspace (examples/acme): its folder and its deterministic log generator."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ACME = Path(__file__).resolve().parents[2] / "examples" / "acme"


def acme_generator():
    """examples/acme/generate.py as a module: it is a script beside the plan, not an importable package."""
    spec = importlib.util.spec_from_file_location("acme_generate", ACME / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
