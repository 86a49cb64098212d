"""The candidates service's I/O: following the item registry, so items registered online become
candidates within one poll interval."""

from __future__ import annotations

import asyncio
import logging

from services.candidates.core import CandidateCore
from services.common.item_registry import ItemRegistry

log = logging.getLogger(__name__)


class RegistryFollower:
    def __init__(self, registry: ItemRegistry, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None

    async def catch_up(self, core: CandidateCore) -> int:
        """Add what was registered for the core's version since the last call; returns how many."""
        items, self._cursor = await self.registry.since(core.version, self._cursor)
        added = core.add_registered(items) if items else 0
        if added:
            log.info("registered items added", extra={"added": added, "registered": core.registered})
        return added

    def follow(self, core: CandidateCore) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.catch_up(core)
                except Exception as error:  # noqa: BLE001 - a failed poll is retried; serving goes on
                    log.warning("item registry poll failed", extra={"error": str(error)})

        self._task = asyncio.get_running_loop().create_task(loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.registry.close()
