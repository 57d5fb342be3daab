"""``pip install .`` (not the editable install) into a clean virtual environment holds every module
under its installed name: the root folders flows/, tasks/, blocks/ and data_contracts/ land inside
the workhorse package, with the contracts' JSON, nothing else lands at the top level, and the
``workhorse`` command starts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ["pyproject.toml", "README.md", "src", "flows", "tasks", "blocks", "data_contracts"]

IMPORT_EVERYTHING = """
import importlib, json, pkgutil
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


def test_pip_install_into_a_clean_venv_installs_the_cards_layout_as_one_package(tmp_path):
    checkout = copy_of_the_package_sources(tmp_path / "checkout")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])  # nor setuptools
    python = venv / "bin" / "python"
    # The dependencies come from this interpreter's site-packages as a plain path: a path in a .pth
    # file is not itself a site directory, so its .pth files (this checkout's editable finder
    # among them) are not run, and workhorse is importable only from what pip installs below.
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert (
        run([str(python), "-c", "import importlib.util as u; print(u.find_spec('workhorse'))"]).strip()
        == "None"
    )
    run(
        [
            sys.executable,  # this pip, installing into the clean venv
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(checkout),
        ]
    )

    installed = site / "workhorse"
    top = {
        p.name
        for p in site.iterdir()
        if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
    }
    assert "workhorse" in top and not top & {"flows", "tasks", "blocks", "data_contracts", "src"}
    for path in (
        "flows/audit.py",
        "tasks/evaluate/run.py",
        "blocks/slack.py",
        "data_contracts/usage_log.json",
        "cli.py",
        "testing/fake_openai.py",
    ):
        assert (installed / path).is_file(), path
    # From a folder outside the repository: every module imports from the installed files.
    imported = dict(json.loads(run([str(python), "-c", IMPORT_EVERYTHING], cwd=tmp_path).splitlines()[-1]))
    assert {
        "workhorse.flows.audit",
        "workhorse.tasks.evaluate",
        "workhorse.tasks.evaluate.run",
        "workhorse.tasks.golden.refresh",
        "workhorse.tasks.rollout.state",
        "workhorse.tasks.monitor.window",
        "workhorse.blocks.slack",
    } <= set(imported)
    assert all(path.startswith(str(installed)) for path in imported.values())
    assert "audit" in run([str(venv / "bin" / "workhorse"), "--help"], cwd=tmp_path)


def copy_of_the_package_sources(checkout: Path) -> Path:
    """What ``pip install .`` reads, copied: setuptools leaves build/ in the tree it builds."""
    checkout.mkdir()
    for name in PACKAGED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, checkout / name)
    return checkout


def run(command: list[str], cwd: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd or Path.home()), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{command[:3]}: {done.stderr[-3000:]}"
    return done.stdout
