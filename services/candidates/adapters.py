"""The candidates service's I/O: following the item registry, so items registered online become
candidates within one poll interval."""

from __future__ import annotations

import asyncio
import logging

from services.candidates.core import CandidateCore
from services.common.item_registry import ItemRegistry
from services.common.logs import Throttled

log = logging.getLogger(__name__)


class RegistryFollower:
    """Keeps the core being served up to date with items registered for its artefact version."""

    def __init__(self, registry: ItemRegistry, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._core: CandidateCore | None = None
        self._cursor = 0
        # One poll at a time: a poll of the old core must not move the cursor of a newly attached one.
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._poll_failed = Throttled(log)  # polls every interval_s: an outage would log at that rate

    async def open(self) -> None:
        await self.registry.open()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def attach(self, core: CandidateCore) -> int:
        """Follow `core` from now on, after adding everything registered for its version so far."""
        async with self._lock:
            self._core, self._cursor = core, 0
            return await self._catch_up(core)

    async def catch_up(self) -> int:
        """Add what was registered for the attached core's version since the last call; returns how many."""
        async with self._lock:
            return await self._catch_up(self._core) if self._core is not None else 0

    async def _catch_up(self, core: CandidateCore) -> int:
        items, self._cursor = await self.registry.since(core.version, self._cursor)
        added = core.add_registered(items) if items else 0
        if added:
            log.info("registered items added", extra={"added": added, "registered": core.registered})
        return added

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.catch_up()
            except Exception as error:  # noqa: BLE001 - a failed poll is retried; serving goes on
                self._poll_failed.warning("item registry poll failed", error=str(error))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.registry.close()
