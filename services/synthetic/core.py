"""Synthetic data and cold items come from a conditional GAN; an artefact without one says so."""

from __future__ import annotations

from pathlib import Path

from services.common.errors import FailedPrecondition, Unimplemented

GAN_DIR = "gan"


class SyntheticCore:
    def __init__(self, version_dir: Path, version: str) -> None:
        self.version = version
        self.has_generator = (version_dir / GAN_DIR).is_dir()

    def require_generator(self) -> None:
        """Refuse plainly: nothing here may stand in for the generator."""
        if not self.has_generator:
            raise FailedPrecondition(
                f"artefact version {self.version} has no synthetic-data generator (no {GAN_DIR}/); "
                "this release trains none, so synthetic data and cold-item registration are unavailable"
            )
        raise Unimplemented(f"this release of the synthetic service cannot load the generator in {GAN_DIR}/")
