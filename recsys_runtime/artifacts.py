"""Versioned artefact directories: written in a staging directory, checksummed, renamed into place.

<root>/<version>/manifest.json   version, config, sha256 of every file
<root>/current -> <version>       switched atomically after the version is complete

Durable as well as atomic: every file and directory of a version is fsynced before the rename, and the root after
each rename and after `current` moves, so after a power cut `current` never names a version whose files are empty.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        # Some file systems (FUSE, a few network mounts) cannot sync a directory: nothing more can be done there.
        if error.errno != errno.EINVAL or not path.is_dir():
            raise
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write, flush, rename over `path`, then flush its directory: the rename never exposes a torn file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    with tmp.open("w") as handle:
        handle.write(json.dumps(payload, indent=1, sort_keys=True, default=str))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def _checksum_and_sync(path: Path) -> str:
    """The file's sha256, read through the descriptor that then flushes it (each file is opened once)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        os.fsync(handle.fileno())
    return digest.hexdigest()


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
    """Checksum and flush every file, write the manifest, flush every directory, rename into place (flushing the
    root), then point `current` at it."""
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    manifest = {
        **manifest,
        "format": FORMAT_VERSION,
        "version": version,
        "files": {str(p.relative_to(staging)): _checksum_and_sync(p) for p in files},
    }
    write_json_atomic(staging / MANIFEST, manifest)  # flushes the staging directory itself too
    # Deepest first: each directory's entries (renames inside it included) are on disk before its parent's.
    for directory in sorted((p for p in staging.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        fsync_path(directory)
    final = root / version
    os.rename(staging, final)
    fsync_path(root)
    switch_current(root, version)
    return final


def switch_current(root: Path, version: str) -> None:
    """Point `current` at a complete version in one atomic rename, flushed to disk; running services follow it."""
    if not (root / version / MANIFEST).is_file():
        raise ArtifactError(f"{root}: {version} is not a complete artefact version")
    link = root / f".{CURRENT}.{uuid.uuid4().hex[:6]}"
    os.symlink(version, link)
    os.replace(link, root / CURRENT)
    fsync_path(root)


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
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:  # a torn or unreadable manifest is a broken version, not a crash
        raise ArtifactError(f"{version_dir}: {MANIFEST} is unreadable ({error})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{version_dir}: {MANIFEST} is not an object")
    if manifest.get("format") != FORMAT_VERSION:
        raise ArtifactError(
            f"{version_dir}: artefact format {manifest.get('format')} is not {FORMAT_VERSION}"
            " (written by another release of the trainer: train again)"
        )
    if not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{version_dir}: {MANIFEST} has no file list")
    if verify:
        for name, expected in manifest["files"].items():
            path = version_dir / name
            if not path.is_file():
                raise ArtifactError(f"{version_dir}: {name} is missing")
            try:
                actual = sha256_of(path)
            except OSError as error:
                raise ArtifactError(f"{version_dir}: {name} is unreadable ({error})") from None
            if actual != expected:
                raise ArtifactError(f"{version_dir}: {name} does not match its checksum")
    return manifest


@dataclass(frozen=True)
class Refusal:
    """A version that was asked for or tried, and why it cannot be served."""

    path: Path
    reason: str

    @property
    def version(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return f"{self.version} ({self.reason})"


@dataclass(frozen=True)
class VerifiedVersion:
    """A version whose every checksum matched. `refused` is empty when it is the one asked for; otherwise its first
    entry is the version asked for (what `current` names) and the rest are those tried before this one."""

    path: Path
    manifest: dict[str, Any]
    refused: tuple[Refusal, ...] = ()

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def wanted(self) -> Path:
        """The version asked for: this one, or the refused one it stands in for."""
        return self.refused[0].path if self.refused else self.path


def wanted_version(path: Path) -> Path:
    """The version directory `path` asks for, unverified: `path` itself if it is a version (pinned), else the one
    the root's `current` names (even if it is gone), else the root's newest complete version."""
    if (path / MANIFEST).is_file():
        return path
    link = path / CURRENT
    if link.is_symlink():
        return path / os.readlink(link)
    versions = list_versions(path)
    if not versions:
        raise ArtifactError(f"{path}: no artefact version found (run `recsys train --out {path}`)")
    return path / versions[-1]


def open_verified_version(path: Path) -> VerifiedVersion:
    """The version to serve from `path`, every checksum verified.

    A version directory is served as it is or not at all. Under a root, the version `current` names; when that
    one is gone, incomplete or corrupt, the nearest version that verifies instead: the older ones first, newest
    first (what `current` replaced), then the newer ones, oldest first (a rollback moved `current` away from
    them). Serving something rather than nothing keeps fresh processes from failing over and over on a bad
    `current`; `refused` says what was passed over. Raises ArtifactError naming every version tried if none verifies.
    """
    wanted = wanted_version(path)
    try:
        return VerifiedVersion(wanted, load_manifest(wanted, verify=True))
    except ArtifactError as error:
        if wanted == path:
            raise
        refused = [Refusal(wanted, _refusal_reason(wanted, error))]
    others = [v for v in list_versions(path) if v != wanted.name]
    older = [v for v in others if v < wanted.name]
    newer = [v for v in others if v > wanted.name]
    for name in [*reversed(older), *newer]:
        try:
            return VerifiedVersion(path / name, load_manifest(path / name, verify=True), tuple(refused))
        except ArtifactError as error:
            refused.append(Refusal(path / name, _refusal_reason(path / name, error)))
    raise ArtifactError(f"{path}: no artefact version verifies; tried {'; '.join(map(str, refused))}")


def _refusal_reason(version_dir: Path, error: ArtifactError) -> str:
    if not version_dir.is_dir():
        return "does not exist"
    return str(error).removeprefix(f"{version_dir}: ")
