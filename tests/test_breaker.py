"""The circuit breaker's states, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from services.common.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from services.common.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def opened(clock: Clock, failures: int = 3, **settings: float) -> CircuitBreaker:
    breaker = CircuitBreaker("ranking", failures=failures, open_s=2.0, clock=clock, **settings)
    for _ in range(failures):
        breaker.attempt().failed()
    assert breaker.state == OPEN
    return breaker


def test_opens_after_consecutive_failures_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("ranking", failures=3, open_s=2.0, clock=clock)
    for _ in range(2):
        breaker.attempt().failed()
    breaker.attempt().succeeded()  # a success resets the count
    for _ in range(3):
        assert breaker.state == CLOSED
        breaker.attempt().failed()
    assert breaker.state == OPEN
    with pytest.raises(Unavailable, match="circuit open"):
        breaker.attempt()
    clock.now = 2.5
    assert breaker.state == HALF_OPEN
    trial = breaker.attempt()
    assert trial.trial
    with pytest.raises(Unavailable):
        breaker.attempt()  # only one at a time
    trial.failed()  # the trial failed: open again for open_s
    assert breaker.state == OPEN
    clock.now = 5.0
    breaker.attempt().succeeded()
    assert breaker.state == CLOSED
    assert not breaker.attempt().trial


def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now = 2.5
    with pytest.raises(asyncio.CancelledError), breaker.attempt() as trial:
        assert trial.trial
        raise asyncio.CancelledError  # the caller went away mid-call
    assert breaker.state == HALF_OPEN  # no verdict: neither closed nor re-opened
    breaker.attempt().succeeded()  # the next call is the trial
    assert breaker.state == CLOSED


def test_a_trial_that_never_reports_is_given_up_after_its_expiry() -> None:
    clock = Clock()
    breaker = opened(clock, trial_expiry_s=1.0)
    clock.now = 2.5
    lost = breaker.attempt()  # never reports
    clock.now = 3.4
    with pytest.raises(Unavailable):
        breaker.attempt()
    clock.now = 3.5
    second = breaker.attempt()
    assert second.trial
    lost.inconclusive()  # a late word from the lost trial does not free the new trial's slot
    with pytest.raises(Unavailable):
        breaker.attempt()
    second.succeeded()
    assert breaker.state == CLOSED


def test_no_verdict_neither_counts_nor_resets_the_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker("features", failures=3, open_s=2.0, clock=clock)
    breaker.attempt().failed()
    breaker.attempt().failed()
    with breaker.attempt():
        pass  # left without a verdict (the caller's deadline cut the call short)
    assert breaker.state == CLOSED
    breaker.attempt().failed()  # the third failure in a row still opens it
    assert breaker.state == OPEN


def test_only_the_first_verdict_counts() -> None:
    clock = Clock()
    breaker = CircuitBreaker("features", failures=2, open_s=2.0, clock=clock)
    attempt = breaker.attempt()
    attempt.failed()
    attempt.succeeded()  # ignored: would have reset the count
    with breaker.attempt() as second:
        second.failed()
    assert breaker.state == OPEN
