"""Shared fixtures: an isolated workspace per test, no provider keys, one Prefect test server,
a factory for the fake OpenAI-compatible server, and the real embedded model (session-wide)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import workhorse  # noqa: F401  (offline LiteLLM price map before any import of litellm)
from tests.support.golden_kit import two_use_case_plan
from workhorse.testing.fake_openai import FakeServerProcess, Faults, ServerConfig
from workhorse.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
PROVIDER_KEY_PREFIXES = (
    "OPENAI_",
    "ANTHROPIC_",
    "AZURE_",
    "GEMINI_",
    "GROQ_",
    "TOGETHER",
    "MISTRAL_",
    "COHERE_",
    "HOSTED_VLLM_",
    "SLACK_",
    "WORKHORSE_SLACK",
)


@pytest.fixture(autouse=True)
def isolated_workspace(tmp_path, monkeypatch) -> Workspace:
    """Each test gets its own workspace and an environment without real provider keys."""
    for name in list(os.environ):
        if name.startswith(PROVIDER_KEY_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    root = tmp_path / "workspace"
    monkeypatch.setenv("WORKHORSE_WORKSPACE", str(root))
    # Converted model weights are shared: converting them per test would cost 25 s each.
    monkeypatch.setenv(
        "WORKHORSE_MODEL_CACHE", os.environ.get("WORKHORSE_MODEL_CACHE", str(REPO / ".workhorse" / "models"))
    )
    return Workspace.resolve(root)


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (10-12 s to start)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture
def fake_openai_server():
    """Factory: ``fake_openai_server(latency=0.05, faults=Faults(server_error=0.1), seed=1)``."""
    started: list[FakeServerProcess] = []

    def start(
        latency: float = 0.0, faults: Faults | None = None, seed: int = 0, **options
    ) -> FakeServerProcess:
        config = ServerConfig(latency_s=latency, faults=faults or Faults(), seed=seed, **options)
        server = FakeServerProcess(config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (Debian's package, started in a temp dir)."""
    from tests.support.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A fresh, empty database on the session's server for this test: tests never share rows."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request, monkeypatch) -> str:
    """Run the test once on each state store: the workspace's SQLite file and a real PostgreSQL.
    Child processes inherit WORKHORSE_STATE_URL, so they share the test's database."""
    if request.param == "postgresql":
        monkeypatch.setenv("WORKHORSE_STATE_URL", request.getfixturevalue("postgres_url"))
    return request.param


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED_DATASETS.exists():
        pytest.fail(f"the shared datasets are missing at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture
def golden_plan(shared_datasets, tmp_path) -> dict:
    """A plan with two use cases fed by slices of the real datasets and an OpenAI Evals file."""
    return two_use_case_plan(shared_datasets, tmp_path)


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from workhorse.tasks.common.engines import prepare_embedded_model

    cache = Path(os.environ.get("WORKHORSE_MODEL_CACHE", REPO / ".workhorse" / "models"))
    return prepare_embedded_model(cache)


@pytest.fixture(scope="session")
def vllm_server(embedded_model_dir, tmp_path_factory):
    """The real embedded model behind a real vLLM OpenAI-compatible server, shared by the session."""
    from workhorse.tasks.common.engines import VLLMServer

    with VLLMServer(embedded_model_dir, cache_root=tmp_path_factory.mktemp("vllm")) as server:
        yield server
