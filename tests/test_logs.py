"""A warning repeated on every request is logged once per interval, with the count held back."""

from __future__ import annotations

import logging

import pytest

from services.common.logs import Throttled


def test_a_repeated_warning_is_logged_once_per_interval_with_what_was_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    throttled = Throttled(logging.getLogger("throttled-test"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "throttled-test"):
        for step in range(25):  # one warning a second for 25 s
            now[0] = 100.0 + step
            throttled.warning("store down", error="timeout")
    assert [r.getMessage() for r in caplog.records] == ["store down"] * 3
    assert [r.repeats_held_back for r in caplog.records] == [0, 9, 9]
    assert all(r.error == "timeout" for r in caplog.records)
