"""A circuit breaker per downstream call path: after `failures` consecutive failures the circuit opens and calls
fail at once (the caller degrades without waiting out a timeout); after `open_s` one trial call is let through,
and its success closes the circuit again.

Every admitted call holds an Attempt and reports one verdict: succeeded, failed, or neither (the call was
cancelled, or the caller's own deadline cut it short: that says nothing about the downstream). Used as a context
manager, an attempt left without a verdict reports neither, so a cancelled trial frees the half-open slot at
once; a trial that never reports at all is given up after `trial_expiry_s`, so the circuit cannot stay open
forever behind it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from services.common.errors import Unavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Attempt:
    """One admitted call. The first verdict counts; later ones are ignored."""

    def __init__(self, breaker: CircuitBreaker, trial: bool) -> None:
        self._breaker = breaker
        self.trial = trial
        self._reported = False

    def succeeded(self) -> None:
        if self._report():
            self._breaker._record_success()

    def failed(self) -> None:
        if self._report():
            self._breaker._record_failure()

    def inconclusive(self) -> None:
        """Neither: the counts stay as they are, and a trial's slot goes to the next call."""
        if self._report():
            self._breaker._release(self)

    def _report(self) -> bool:
        first = not self._reported
        self._reported = True
        return first

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # Cancelled, or left by an error that is no verdict on the downstream.
        self.inconclusive()


@dataclass
class CircuitBreaker:
    name: str
    failures: int = 5
    open_s: float = 2.0
    # A trial still unreported after this long is taken as lost (its call had a deadline well before).
    trial_expiry_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _consecutive: int = 0
    _opened_at: float | None = None
    _trial: Attempt | None = None
    _trial_started_at: float = 0.0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self._opened_at >= self.open_s else OPEN

    def attempt(self) -> Attempt:
        """Admit one call, or raise Unavailable while open; in half-open, one trial call at a time."""
        state = self.state
        if state == OPEN or (state == HALF_OPEN and self._trial_running()):
            raise Unavailable(f"{self.name}: circuit open after {self._consecutive} consecutive failures")
        attempt = Attempt(self, trial=state == HALF_OPEN)
        if attempt.trial:
            self._trial, self._trial_started_at = attempt, self.clock()
        return attempt

    def _trial_running(self) -> bool:
        return self._trial is not None and self.clock() - self._trial_started_at < self.trial_expiry_s

    def _record_success(self) -> None:
        self._consecutive, self._opened_at, self._trial = 0, None, None

    def _record_failure(self) -> None:
        self._consecutive += 1
        if self._opened_at is not None or self._consecutive >= self.failures:
            # (Re)open: a failed trial waits another open_s, and the next half-open period starts a new trial.
            self._opened_at, self._trial = self.clock(), None

    def _release(self, attempt: Attempt) -> None:
        if self._trial is attempt:  # not a newer trial that took over after this one expired
            self._trial = None
