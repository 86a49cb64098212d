"""The usual shape of a service: load an artefact version, build the core, hand it to the servicer; follow
the artefact root to new versions while serving."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from recsys_runtime.artifacts import ArtifactError, wanted_version
from services.common import metrics
from services.common.artifacts import ArtifactVersion, open_artifacts, open_version
from services.common.errors import Unavailable
from services.common.server import Registration
from services.common.settings import ServerSettings

CoreT = TypeVar("CoreT")
log = logging.getLogger(__name__)


class HasCore(Protocol):
    core: Any


class ArtifactService:
    """A Service (see server.Service) whose readiness is: artefacts verified and its core built.

    It starts on the version `current` names or, when that one does not verify, on the last one that does
    (services.common.artifacts.open_artifacts), so that a bad `current` cannot keep fresh processes from starting.
    While serving, it follows the artefact root: when `current` points at another version, that version is
    verified and a new core built beside the old one, then swapped in. Requests already running finish on the
    core they started with; the next ones get the new core. A version that fails to load is logged and counted
    (recsys_model_reloads{outcome="failed"}), and the old core goes on serving. Whenever the version serving is not
    the one `current` names, recsys_artifact_fallback{current=<that one>} is 1.
    """

    def __init__(
        self,
        name: str,
        settings: ServerSettings,
        servicer: HasCore,
        registration: Registration,
        build_core: Callable[[ArtifactVersion], Awaitable[Any]],
        on_close: Callable[[], Awaitable[None]] | None = None,
        *,
        open_resources: Callable[[], Awaitable[None]] | None = None,
        after_switch: Callable[[Any, Any], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.servicer = servicer
        self._registration = registration
        self._build_core = build_core
        self._on_close = on_close
        self._open_resources = open_resources
        self._after_switch = after_switch
        self.serving: ArtifactVersion | None = None
        self._watcher: asyncio.Task[None] | None = None

    def registrations(self) -> Sequence[Registration]:
        return [self._registration]

    async def start(self) -> None:
        if self._open_resources is not None:
            await self._open_resources()
        artifacts = await asyncio.to_thread(open_artifacts, self.settings.artifacts)
        await self.switch(artifacts)
        if self.settings.reload_poll_s > 0:
            # A `current` refused here is not tried again by the follower until it moves on.
            self._watcher = asyncio.get_running_loop().create_task(self._follow_current(artifacts.stands_in_for))

    async def switch(self, artifacts: ArtifactVersion) -> None:
        """Build the core of `artifacts` and serve it from the next request on."""
        core = await self._build_core(artifacts)
        old = self.servicer.core
        self.servicer.core = core
        self._set_serving(artifacts)
        if self._after_switch is not None:
            await self._after_switch(old, core)

    def _set_serving(self, artifacts: ArtifactVersion) -> None:
        self.serving = artifacts
        metrics.serving_version(artifacts.version)
        wanted = artifacts.stands_in_for or artifacts.path
        metrics.artifact_fallback(wanted.name, artifacts.stands_in_for is not None)

    async def _follow_current(self, refused: Path | None) -> None:
        # `refused`: a version that failed to load is not retried until `current` moves on.
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            try:
                target = await asyncio.to_thread(wanted_version, self.settings.artifacts)
            except ArtifactError as error:
                log.warning("artefact root unreadable; still serving", extra={"error": str(error)})
                continue
            if self.serving is None or target == refused:
                continue
            if target == self.serving.path:
                if self.serving.stands_in_for is not None:  # `current` came back to the version serving
                    self._set_serving(dataclasses.replace(self.serving, stands_in_for=None))
                    log.info("`current` names the version serving again", extra={"version": self.serving.version})
                continue
            previous = self.serving.version
            try:
                await self.switch(await asyncio.to_thread(open_version, target))
            except Exception as error:  # noqa: BLE001 - a bad version must not take the serving one down
                refused = target
                metrics.reload_outcome("failed")
                if self.serving.path != target:  # else only its after_switch failed: it serves `current` already
                    self._set_serving(dataclasses.replace(self.serving, stands_in_for=target))
                log.error(
                    "artefact version switch failed; still serving the old one",
                    extra={"version": previous, "refused": str(target), "error": f"{type(error).__name__}: {error}"},
                )
                continue
            refused = None
            metrics.reload_outcome("switched")
            log.info("artefact version switched", extra={"from": previous, "to": self.serving.version})

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._on_close is not None:
            await self._on_close()


class CoreSlot(Generic[CoreT]):
    """Mixed into a servicer: the core that start() builds, read by every RPC."""

    core: CoreT | None = None

    @property
    def ready_core(self) -> CoreT:
        if self.core is None:
            # Unreachable through the bootstrap, which answers UNAVAILABLE until start() has finished.
            raise Unavailable("service is starting: models not loaded yet")
        return self.core
