"""Immutable, versioned golden sets: ``<workspace>/golden/<use_case>/vN.parquet`` + manifests.

Each version is two files written once and never again: ``vN.parquet`` (the items) and
``vN.manifest.json`` (content hash, counts by split/label/origin, sources, created_at, the
diff against vN-1, and what the refresh passed in: cleaning counts and warnings).
``manifest.json`` is an index of all versions (with their warnings), rebuilt on every write and
derivable from the per-version manifests. A version is complete when its manifest exists;
files are written to a temporary name and linked into place, which fails rather than
overwrites if the name is taken, so a racing or crashed refresh never replaces a version.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from workhorse.errors import ConfigError, DataError, VersionExistsError
from workhorse.tasks.golden.item import GoldenItem, content_hash, items_to_table, table_to_items
from workhorse.workspace import Workspace

VERSION_FILE = re.compile(r"^v(\d+)\.parquet$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _workspace(workspace) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)


def golden_dir(workspace, use_case: str) -> Path:
    """The folder of one use case's versions (created on first use)."""
    if not SAFE_NAME.match(use_case):
        raise ConfigError(
            f"use case name {use_case!r} cannot be a folder name: use letters, digits, '_', '-', '.'"
        )
    return _workspace(workspace).subdir("golden") / use_case


# ---------------------------------------------------------------- atomic, no-overwrite writes


def write_new(path: Path, data: bytes) -> Path:
    """Create ``path`` with ``data`` atomically; refuse if it exists (os.link never replaces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o444)  # read-only: a version is not edited in place either
        os.link(temporary, path)
    except FileExistsError:
        raise VersionExistsError(
            f"{path} already exists; versions are immutable and never overwritten"
        ) from None
    finally:
        os.unlink(temporary)
    return path


def replace_file(path: Path, data: bytes) -> Path:
    """Atomically replace a derived file (the index): readers see the old or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# ---------------------------------------------------------------- reading


def versions(workspace, use_case: str) -> list[int]:
    """Complete versions (parquet and manifest both present), ascending."""
    folder = golden_dir(workspace, use_case)
    if not folder.exists():
        return []
    numbers = [int(m.group(1)) for m in map(VERSION_FILE.match, os.listdir(folder)) if m]
    return sorted(n for n in numbers if (folder / f"v{n}.manifest.json").exists())


def read_manifest(workspace, use_case: str, version: int | None = None) -> dict:
    """The manifest of a version (the latest by default)."""
    version = version or _latest(workspace, use_case)
    path = golden_dir(workspace, use_case) / f"v{version}.manifest.json"
    if not path.exists():
        raise DataError(f"golden set {use_case!r} has no version {version}")
    return json.loads(path.read_text())


def _latest(workspace, use_case: str) -> int:
    found = versions(workspace, use_case)
    if not found:
        raise DataError(
            f"no golden set for use case {use_case!r} in {golden_dir(workspace, use_case)}; "
            f"run `workhorse golden refresh` first"
        )
    return found[-1]


def load_golden(
    workspace, use_case: str, version: int | None = None, split: str | None = None
) -> list[GoldenItem]:
    """The items of a golden set version (latest by default), sorted by id; ``split`` filters.

    The content hash is checked against the manifest, so an edited file is refused instead of
    silently changing a verdict.
    """
    import pyarrow.parquet as pq

    manifest = read_manifest(workspace, use_case, version)
    path = golden_dir(workspace, use_case) / manifest["file"]
    items = table_to_items(pq.read_table(path))
    if content_hash(items) != manifest["content_hash"]:
        raise DataError(
            f"golden set {use_case!r} v{manifest['version']} at {path} does not match its manifest hash"
        )
    return [item for item in items if split is None or item.split == split]


def dev_items(workspace, use_case: str, version: int | None = None) -> list[GoldenItem]:
    """Only the dev split: what prompt tuning may read (verdicts are taken on test)."""
    return load_golden(workspace, use_case, version, split="dev")


# ---------------------------------------------------------------- diff and manifest


def diff_items(before: list[GoldenItem], after: list[GoldenItem]) -> dict:
    """Added and removed ids, relabelled items (same id, other reference or origin), and any
    item whose split changed (which the refresh prevents; listed so a test can prove it)."""
    old = {item.item_id: item for item in before}
    new = {item.item_id: item for item in after}
    common = sorted(old.keys() & new.keys())
    relabelled = [
        {
            "item_id": i,
            "before": old[i].reference,
            "after": new[i].reference,
            "origin_before": old[i].label_origin,
            "origin_after": new[i].label_origin,
        }
        for i in common
        if (old[i].reference, old[i].label_origin) != (new[i].reference, new[i].label_origin)
    ]
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "relabelled": relabelled,
        "split_changed": [i for i in common if old[i].split != new[i].split],
    }


def counts(items: list[GoldenItem]) -> dict:
    """Counts for the manifest: by split, origin, source, and by label for classification."""
    by_label = Counter(item.reference for item in items if item.task_type == "classification")
    return {
        "items": len(items),
        "by_split": dict(sorted(Counter(i.split for i in items).items())),
        "by_origin": dict(sorted(Counter(i.label_origin for i in items).items())),
        "by_source": dict(sorted(Counter(i.source for i in items).items())),
        "by_label": dict(sorted(by_label.items())),
        "silver": sum(item.silver for item in items),
    }


def build_manifest(
    use_case: str,
    version: int,
    items: list[GoldenItem],
    sources: list[dict],
    diff: dict,
    previous: int | None,
    extra: dict | None = None,
) -> dict:
    """What a reviewer needs to trust a version without opening the parquet file."""
    return {
        "use_case": use_case,
        "version": version,
        "file": f"v{version}.parquet",
        "content_hash": content_hash(items),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "counts": counts(items),
        "sources": sources,
        "previous_version": previous,
        "diff": {
            "against": previous,
            "added": len(diff["added"]),
            "removed": len(diff["removed"]),
            "relabelled": len(diff["relabelled"]),
            "detail": diff,
        },
        **(extra or {}),
    }


# ---------------------------------------------------------------- writing


@dataclass
class VersionResult:
    use_case: str
    version: int
    created: bool
    manifest: dict
    path: Path


def keep_previous_splits(items: list[GoldenItem], previous: list[GoldenItem]) -> list[GoldenItem]:
    """Items already in the previous version keep its split, even if the test fraction changed."""
    before = {item.item_id: item.split for item in previous}
    return [item.with_split(before[item.item_id]) if item.item_id in before else item for item in items]


def write_version(
    workspace, use_case: str, items: list[GoldenItem], sources: list[dict], extra: dict | None = None
) -> VersionResult:
    """Store ``items`` as the next version, unless their content equals the latest version's."""
    folder = golden_dir(workspace, use_case)
    found = versions(workspace, use_case)
    previous_items = load_golden(workspace, use_case, found[-1]) if found else []
    if found and content_hash(items) == read_manifest(workspace, use_case, found[-1])["content_hash"]:
        return VersionResult(
            use_case,
            found[-1],
            False,
            read_manifest(workspace, use_case, found[-1]),
            folder / f"v{found[-1]}.parquet",
        )
    version = _next_number(folder)
    manifest = build_manifest(
        use_case,
        version,
        items,
        sources,
        diff_items(previous_items, items),
        found[-1] if found else None,
        extra,
    )
    write_new(folder / f"v{version}.parquet", _parquet_bytes(items))
    write_new(folder / f"v{version}.manifest.json", json_bytes(manifest))
    _write_index(workspace, use_case)
    return VersionResult(use_case, version, True, manifest, folder / f"v{version}.parquet")


def _next_number(folder: Path) -> int:
    """One above every vN.parquet present, complete or not: an orphan from a crash is never reused."""
    numbers = (
        [int(m.group(1)) for m in map(VERSION_FILE.match, os.listdir(folder)) if m] if folder.exists() else []
    )
    return max(numbers, default=0) + 1


def _parquet_bytes(items: list[GoldenItem]) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(items_to_table(items), buffer, compression="zstd")
    return buffer.getvalue()


def _write_index(workspace, use_case: str) -> Path:
    """manifest.json: one line per complete version, newest last; derived, so replaced."""
    entries = []
    for number in versions(workspace, use_case):
        manifest = read_manifest(workspace, use_case, number)
        entries.append(
            {key: manifest[key] for key in ("version", "file", "content_hash", "created_at")}
            | {
                "items": manifest["counts"]["items"],
                "added": manifest["diff"]["added"],
                "removed": manifest["diff"]["removed"],
                "relabelled": manifest["diff"]["relabelled"],
                "warnings": manifest.get("warnings", []),
            }
        )
    index = {"use_case": use_case, "latest": entries[-1]["version"] if entries else None, "versions": entries}
    return replace_file(golden_dir(workspace, use_case) / "manifest.json", json_bytes(index))
