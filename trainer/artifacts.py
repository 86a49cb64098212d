"""Versioned artefact directories: written in a staging directory, checksummed, renamed into place.

<root>/<version>/manifest.json   version, config, sha256 of every file
<root>/current -> <version>       switched atomically after the version is complete
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CURRENT = "current"
# 2: the ranker's Triton config carries no name (each version is served as ranker-<version>).
FORMAT_VERSION = 2


class ArtifactError(RuntimeError):
    """Artefacts missing, incomplete or corrupted."""


def new_version_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


@contextlib.contextmanager
def staging_directory(root: Path, version: str) -> Iterator[Path]:
    """A fresh directory beside the final one (same file system, so the rename is atomic); removed on failure."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{version}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, root: Path, version: str, manifest: dict[str, Any]) -> Path:
    """Checksum every file, write the manifest, rename into place, then point `current` at it."""
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    manifest = {
        **manifest,
        "format": FORMAT_VERSION,
        "version": version,
        "files": {str(p.relative_to(staging)): sha256_of(p) for p in files},
    }
    write_json_atomic(staging / MANIFEST, manifest)
    final = root / version
    os.rename(staging, final)
    switch_current(root, version)
    return final


def switch_current(root: Path, version: str) -> None:
    """Point `current` at a complete version in one atomic rename; running services follow it."""
    if not (root / version / MANIFEST).is_file():
        raise ArtifactError(f"{root}: {version} is not a complete artefact version")
    link = root / f".{CURRENT}.{uuid.uuid4().hex[:6]}"
    os.symlink(version, link)
    os.replace(link, root / CURRENT)


def list_versions(root: Path) -> list[str]:
    """Complete versions under an artefact root, oldest first (names start with their UTC time)."""
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and not p.is_symlink() and (p / MANIFEST).is_file()
    )


def current_version(root: Path) -> str | None:
    link = root / CURRENT
    return os.readlink(link) if link.is_symlink() else None


def rollback_target(root: Path, to: str | None = None) -> str:
    """The version a rollback switches to: `to` if given, else the one trained just before the current one."""
    versions = list_versions(root)
    if to is not None:
        if to not in versions:
            raise ArtifactError(f"{root}: no complete version {to!r} (have: {', '.join(versions) or 'none'})")
        return to
    current = current_version(root)
    if current not in versions:
        raise ArtifactError(f"{root}: `current` does not point at a complete version; name one with --to")
    position = versions.index(current)
    if position == 0:
        raise ArtifactError(f"{root}: {current} is the oldest version; there is nothing earlier to roll back to")
    return versions[position - 1]


def resolve_version(path: Path) -> Path:
    """A version directory from either itself or an artefact root (its `current`, else its newest version)."""
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT
    if current.exists() and (current / MANIFEST).is_file():
        return current.resolve()
    versions = [path / name for name in list_versions(path)]
    if not versions:
        raise ArtifactError(f"{path}: no artefact version found (run `recsys train --out {path}`)")
    return versions[-1]


def load_manifest(version_dir: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a version; with verify, every file's checksum is checked first."""
    manifest_path = version_dir / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{version_dir}: no {MANIFEST}")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ArtifactError(
            f"{version_dir}: artefact format {manifest.get('format')} is not {FORMAT_VERSION}"
            " (written by another release of the trainer: train again)"
        )
    if verify:
        for name, expected in manifest["files"].items():
            path = version_dir / name
            if not path.is_file():
                raise ArtifactError(f"{version_dir}: {name} is missing")
            if sha256_of(path) != expected:
                raise ArtifactError(f"{version_dir}: {name} does not match its checksum")
    return manifest
