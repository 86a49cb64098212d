"""A circuit breaker per downstream: after `failures` consecutive failures the circuit opens and calls fail
at once (the caller degrades without waiting out a timeout); after `open_s` one trial call is let through,
and its success closes the circuit again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import Unavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class CircuitBreaker:
    name: str
    failures: int = 5
    open_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _consecutive: int = 0
    _opened_at: float | None = None
    _trial_running: bool = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self._opened_at >= self.open_s else OPEN

    def before_call(self) -> None:
        """Raise Unavailable while open; in half-open, let one trial call through at a time."""
        state = self.state
        if state == OPEN or (state == HALF_OPEN and self._trial_running):
            raise Unavailable(f"{self.name}: circuit open after {self._consecutive} consecutive failures")
        if state == HALF_OPEN:
            self._trial_running = True

    def succeeded(self) -> None:
        self._consecutive, self._opened_at, self._trial_running = 0, None, False

    def failed(self) -> None:
        self._consecutive += 1
        self._trial_running = False
        if self._opened_at is not None or self._consecutive >= self.failures:
            self._opened_at = self.clock()  # (re)open: a failed trial waits another open_s
