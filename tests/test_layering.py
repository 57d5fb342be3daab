"""The layering of the package, read from the source (every import, lazy ones included):
the product never imports its test kit, its tests or its examples (the demo lives in
examples/acme/ and imports the product); tasks never import flows; blocks import neither
tasks nor flows. ``forbidden_imports`` is also run on a planted violation, so the check
itself is shown to catch one."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folder → installed package, as pyproject's package-dir maps them.
PACKAGES = {
    "src/workhorse": "workhorse",
    "flows": "workhorse.flows",
    "tasks": "workhorse.tasks",
    "blocks": "workhorse.blocks",
}
TEST_KIT = ("workhorse.testing", "tests", "examples")
RULES = [  # (modules under, may not import)
    ("workhorse", TEST_KIT),
    ("workhorse.tasks", ("workhorse.flows",)),
    ("workhorse.blocks", ("workhorse.flows", "workhorse.tasks")),
]


def modules(repo: Path = REPO) -> dict[str, Path]:
    """Every product module by its installed name (the test kit itself excluded)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in (repo / folder).rglob("*.py"):
            parts = path.relative_to(repo / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            if not name.startswith("workhorse.testing"):
                found[name] = path
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def forbidden_imports(found: dict[str, Path]) -> list[str]:
    """'module imports name (rule)' for every import a rule forbids."""
    problems = []
    for module, path in sorted(found.items()):
        for name in sorted(imported(path)):
            for under, banned in RULES:
                hit = next((b for b in banned if _within(name, b)), None)
                if _within(module, under) and hit:
                    problems.append(f"{module} imports {name} ({under} may not import {hit})")
    return sorted(set(problems))


def test_the_product_keeps_its_layers():
    assert len(modules()) > 40  # the walk found the product
    assert forbidden_imports(modules()) == []


def test_a_planted_forbidden_import_is_caught(tmp_path):
    for folder in PACKAGES:
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "tasks" / "rollout").mkdir()
    (tmp_path / "tasks" / "rollout" / "guard.py").write_text(
        "def f():\n    from workhorse.flows.rollout import staged_rollout\n"
        "    import workhorse.testing.fake_openai\n"
    )
    (tmp_path / "blocks" / "slack.py").write_text("from workhorse.tasks.common import runner\n")
    (tmp_path / "src/workhorse" / "cli.py").write_text(
        "from tests.support import acme\nimport workhorse.flows.audit\n"
    )
    assert forbidden_imports(modules(tmp_path)) == [
        "workhorse.blocks.slack imports workhorse.tasks.common "
        "(workhorse.blocks may not import workhorse.tasks)",
        "workhorse.blocks.slack imports workhorse.tasks.common.runner "
        "(workhorse.blocks may not import workhorse.tasks)",
        "workhorse.cli imports tests.support (workhorse may not import tests)",
        "workhorse.cli imports tests.support.acme (workhorse may not import tests)",
        "workhorse.tasks.rollout.guard imports workhorse.flows.rollout "
        "(workhorse.tasks may not import workhorse.flows)",
        "workhorse.tasks.rollout.guard imports workhorse.flows.rollout.staged_rollout "
        "(workhorse.tasks may not import workhorse.flows)",
        "workhorse.tasks.rollout.guard imports workhorse.testing.fake_openai "
        "(workhorse may not import workhorse.testing)",
    ]


def test_each_step_folders_docstring_lists_every_module_it_holds():
    """A step folder's __init__ docstring is its table of contents: a module added without a line
    there is a module nobody finds by reading the tree."""
    unlisted = []
    for folder in sorted((REPO / "tasks").iterdir()):
        if not (folder / "__init__.py").is_file():
            continue
        contents = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        listed = {line.split()[0] for line in contents.splitlines() if line.strip()}
        unlisted += [
            f"tasks/{folder.name}/{m.name}"
            for m in sorted(folder.glob("*.py"))
            if m.name != "__init__.py" and m.name not in listed
        ]
    assert unlisted == []
