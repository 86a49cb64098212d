"""The circuit breaker's states, on a fake clock."""

from __future__ import annotations

import pytest

from services.common.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from services.common.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("ranking", failures=3, open_s=2.0, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.failed()
    breaker.before_call()
    breaker.succeeded()  # a success resets the count
    for _ in range(3):
        breaker.before_call()
        breaker.failed()
    assert breaker.state == OPEN
    with pytest.raises(Unavailable, match="circuit open"):
        breaker.before_call()
    clock.now = 2.5
    assert breaker.state == HALF_OPEN
    breaker.before_call()  # the trial
    with pytest.raises(Unavailable):
        breaker.before_call()  # only one at a time
    breaker.failed()  # the trial failed: open again for open_s
    assert breaker.state == OPEN
    clock.now = 5.0
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state == CLOSED
    breaker.before_call()
