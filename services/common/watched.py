"""Files read again when they change: certificates, API keys, JWKS. A rotation (cert-manager, a Secret
update, an operator editing a file) takes effect without a restart, and a version that cannot be read or
parsed, half-written during the rotation, is refused while the previous one stays in force."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# How often a caller may look at the files' modification times: a stat per second is free.
RECHECK_S = 1.0


def stamp(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    """Changes when a file is rewritten or replaced (a Secret update swaps a symlink); (-1, ...) if gone."""
    stamps = []
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            stamps.append((-1, -1, -1))
        else:
            stamps.append((status.st_mtime_ns, status.st_ino, status.st_size))
    return tuple(stamps)


class Watched(Generic[T]):
    """What `load` makes of `paths`, made again when one of them changes, looked at no more than once per
    `recheck_s`. `load` raising one of `refused` leaves the previous value in force; the first load must
    succeed (its error propagates)."""

    def __init__(
        self,
        paths: Sequence[Path],
        load: Callable[[], T],
        refused: tuple[type[Exception], ...],
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = tuple(paths)
        self._load = load
        self._refused = refused
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()  # grpc calls a certificate fetcher from several of its threads
        # Stamped before reading: a change while reading is seen at the next check.
        self._stamp = stamp(self.paths)
        self.value = load()
        self._checked_at = clock()

    def refresh(self) -> bool:
        """Load again if a file changed since the last load (at most once per recheck_s); True when a new
        value was taken."""
        with self._lock:
            now = self._clock()
            if now - self._checked_at < self._recheck_s:
                return False
            self._checked_at = now
            current = stamp(self.paths)
            if current == self._stamp:
                return False
            try:
                value = self._load()
            except self._refused as error:
                reason = error.strerror if isinstance(error, OSError) else str(error)
                log.warning(
                    "changed file refused; the previous version stays",
                    extra={"path": ", ".join(map(str, self.paths)), "error": reason},
                )
                return False
            self._stamp, self.value = current, value
        log.info("file reloaded", extra={"path": ", ".join(map(str, self.paths))})
        return True

    def current(self) -> T:
        self.refresh()
        return self.value
