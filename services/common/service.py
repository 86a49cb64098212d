"""The usual shape of a service: load an artefact version, build the core, hand it to the servicer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from services.common import metrics
from services.common.artifacts import ArtifactVersion, open_artifacts
from services.common.errors import Unavailable
from services.common.server import Registration
from services.common.settings import ServerSettings

CoreT = TypeVar("CoreT")


class HasCore(Protocol):
    core: Any


class ArtifactService:
    """A Service (see server.Service) whose readiness is: artefacts verified and its core built."""

    def __init__(
        self,
        name: str,
        settings: ServerSettings,
        servicer: HasCore,
        registration: Registration,
        build_core: Callable[[ArtifactVersion], Awaitable[Any]],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.servicer = servicer
        self._registration = registration
        self._build_core = build_core
        self._on_close = on_close

    def registrations(self) -> Sequence[Registration]:
        return [self._registration]

    async def start(self) -> None:
        artifacts = await asyncio.to_thread(open_artifacts, self.settings.artifacts)
        self.servicer.core = await self._build_core(artifacts)
        metrics.serving_version(artifacts.version)

    async def close(self) -> None:
        if self._on_close is not None:
            await self._on_close()


def in_thread(factory: Callable[[ArtifactVersion], Any]) -> Callable[[ArtifactVersion], Awaitable[Any]]:
    """Build a core off the event loop, so health checks keep answering while models load."""

    async def build(artifacts: ArtifactVersion) -> Any:
        return await asyncio.to_thread(factory, artifacts)

    return build


class CoreSlot(Generic[CoreT]):
    """Mixed into a servicer: the core that start() builds, read by every RPC."""

    core: CoreT | None = None

    @property
    def ready_core(self) -> CoreT:
        if self.core is None:
            # Unreachable through the bootstrap, which answers UNAVAILABLE until start() has finished.
            raise Unavailable("service is starting: models not loaded yet")
        return self.core
