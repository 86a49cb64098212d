"""The serving repository's links: beside an artefact root's versions, triton-repository/ranker-<version> points
into each version's Triton model repository (triton_contract.SERVING_REPOSITORY_DIR). The trainer links a
version before `current` moves to it; a rollback, and the launcher at start, link the versions they serve."""

from __future__ import annotations

import os
from pathlib import Path

from recsys_runtime import triton_contract as contract
from recsys_runtime.artifacts import fsync_path, list_versions


def link_served_version(root: Path, version: str) -> Path:
    """Make `root`/triton-repository/ranker-<version> point at that version's ranker (a relative link, so the
    root can be mounted anywhere). Idempotent; the link is swapped in atomically."""
    serving = root / contract.SERVING_REPOSITORY_DIR
    serving.mkdir(parents=True, exist_ok=True)
    name = contract.served_model_name(version)
    target = Path("..") / version / contract.REPOSITORY_DIR / contract.RANKER_MODEL
    link = serving / name
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    partial = serving / f".{name}.partial"
    partial.unlink(missing_ok=True)
    os.symlink(target, partial)
    os.replace(partial, link)
    fsync_path(serving)  # the link survives a power cut before `current` moves to the version it serves
    return link


def link_served_versions(root: Path) -> list[str]:
    """Links for every complete version under `root` that has a ranker (roots written before the serving
    repository existed, or copied without it); returns the versions linked."""
    versions = [v for v in list_versions(root) if (root / v / contract.REPOSITORY_DIR / contract.RANKER_MODEL).is_dir()]
    for version in versions:
        link_served_version(root, version)
    return versions
