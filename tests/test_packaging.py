"""The built wheel (not the editable install) holds every module under its installed name:
the root folders flows/, tasks/, blocks/ and data_contracts/ land inside the workhorse package,
with the contracts' JSON, and nothing else is installed at the top level."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ["pyproject.toml", "README.md", "src", "flows", "tasks", "blocks", "data_contracts"]

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import workhorse
names = []
for info in pkgutil.walk_packages(workhorse.__path__, "workhorse."):
    module = importlib.import_module(info.name)
    names.append((info.name, module.__file__))
from workhorse.tasks.common.contracts import load_contract
from workhorse.tasks.golden.clean import golden_contract
load_contract("usage_log"); golden_contract()  # package data: the contracts' JSON
print(json.dumps(names))
"""


def test_the_wheel_installs_the_cards_layout_as_one_package(tmp_path):
    checkout = tmp_path / "checkout"  # built from a copy: setuptools leaves build/ in the tree it builds
    checkout.mkdir()
    for name in PACKAGED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, checkout / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(checkout),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("workhorse-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        archive.extractall(tmp_path / "site")
    top = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"workhorse"}
    for path in (
        "workhorse/flows/audit.py",
        "workhorse/tasks/evaluate/run.py",
        "workhorse/blocks/slack.py",
        "workhorse/data_contracts/usage_log.json",
        "workhorse/cli.py",
        "workhorse/testing/fake_openai.py",
    ):
        assert path in files
    # From a folder outside the repository, with the unpacked wheel first on the path: every
    # module imports from the wheel's files, not from the checkout.
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    imported = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    assert {
        "workhorse.flows.audit",
        "workhorse.tasks.evaluate.run",
        "workhorse.tasks.golden.refresh",
        "workhorse.tasks.rollout.state",
        "workhorse.tasks.monitor.window",
        "workhorse.blocks.slack",
    } <= set(imported)
    assert all(path.startswith(str(tmp_path / "site")) for path in imported.values())
