"""How a service opens the artefact version it serves."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.artifacts import load_manifest, resolve_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactVersion:
    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.manifest["config"]
        return config


def open_artifacts(path: Path) -> ArtifactVersion:
    """Resolve the version under `path` and verify every file's checksum before anything reads it."""
    version_dir = resolve_version(path)
    manifest = load_manifest(version_dir, verify=True)
    log.info("artefacts verified", extra={"version": manifest["version"], "path": str(version_dir)})
    return ArtifactVersion(version_dir, manifest)
