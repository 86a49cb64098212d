"""How a service opens the artefact version it serves."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_runtime.artifacts import load_manifest, open_verified_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactVersion:
    path: Path
    manifest: dict[str, Any]
    # The version `current` names, when it failed verification and this one serves in its place.
    stands_in_for: Path | None = None

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.manifest["config"]
        return config


def open_artifacts(path: Path) -> ArtifactVersion:
    """The version to serve from `path` (a root or one version), every file's checksum verified before anything
    reads it. Under a root whose `current` does not verify, the last version that does (see
    recsys_runtime.artifacts.open_verified_version), with a warning naming both."""
    verified = open_verified_version(path)
    stands_in_for = None
    if verified.refused:
        stands_in_for = verified.wanted
        log.warning(
            "`current` does not verify; serving the last version that does",
            extra={
                "current": stands_in_for.name,
                "version": verified.version,
                "refused": [str(refusal) for refusal in verified.refused],
            },
        )
    log.info("artefacts verified", extra={"version": verified.version, "path": str(verified.path)})
    return ArtifactVersion(verified.path, verified.manifest, stands_in_for)


def open_version(version_dir: Path) -> ArtifactVersion:
    """Exactly this version, every checksum verified (raises recsys_runtime.artifacts.ArtifactError otherwise)."""
    manifest = load_manifest(version_dir, verify=True)
    log.info("artefacts verified", extra={"version": manifest["version"], "path": str(version_dir)})
    return ArtifactVersion(version_dir, manifest)
