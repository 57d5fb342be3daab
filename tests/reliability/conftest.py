"""Fixtures of the reliability suite: the hostile input corpus, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.corpus import write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """name -> path of every hostile input (about 20 MB, written once)."""
    return write_corpus(tmp_path_factory.mktemp("hostile"))
