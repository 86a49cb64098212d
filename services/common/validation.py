"""Limits and checks on client input shared by every service that receives it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.errors import ResourceExhausted, Violations

MAX_ID_LENGTH = 256
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_ATTRIBUTE_VALUE_LENGTH = 1024
MAX_K = 1000
# Latest accepted event time: year 2100, in seconds; anything later is a unit mistake (ms, µs).
MAX_TIMESTAMP = 4_102_444_800


def check_id(violations: Violations, field: str, value: str) -> None:
    if not value:
        violations.add(field, "must not be empty")
    elif len(value) > MAX_ID_LENGTH:
        violations.add(field, f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    elif value != value.strip() or any(ch in value for ch in "\r\n\t\x00"):
        violations.add(field, "must not contain control characters or surrounding whitespace")


def check_attributes(violations: Violations, field: str, attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        violations.add(field, f"at most {MAX_ATTRIBUTES} attributes, got {len(attributes)}")
        return
    for key, value in attributes.items():
        if not key or len(key) > MAX_ATTRIBUTE_KEY_LENGTH:
            violations.add(f"{field}[{key[:32]!r}]", f"key must be 1..{MAX_ATTRIBUTE_KEY_LENGTH} characters")
        elif len(value) > MAX_ATTRIBUTE_VALUE_LENGTH:
            violations.add(f"{field}[{key!r}]", f"value must be at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters")


def check_k(violations: Violations, field: str, k: int) -> None:
    if not 1 <= k <= MAX_K:
        violations.add(field, f"must be in 1..{MAX_K}, got {k}")


def check_timestamp(violations: Violations, field: str, timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        violations.add(field, f"must be seconds since the epoch in 0..{MAX_TIMESTAMP}, got {timestamp}")


@dataclass(frozen=True)
class EventInput:
    """One interaction as a client sent it."""

    user_id: str
    item_id: str
    timestamp: int
    event_id: str  # empty when the client gave none
    rating: float


def validate_events(events: Sequence[EventInput], max_events: int) -> None:
    """RESOURCE_EXHAUSTED for an oversized batch, INVALID_ARGUMENT naming every bad field otherwise."""
    if len(events) > max_events:
        raise ResourceExhausted(f"at most {max_events} events per request, got {len(events)}")
    violations = Violations()
    if not events:
        violations.add("events", "must not be empty")
    for i, event in enumerate(events):
        check_id(violations, f"events[{i}].user_id", event.user_id)
        check_id(violations, f"events[{i}].item_id", event.item_id)
        check_timestamp(violations, f"events[{i}].timestamp", event.timestamp)
        if event.event_id:
            check_id(violations, f"events[{i}].event_id", event.event_id)
        if not math.isfinite(event.rating):
            violations.add(f"events[{i}].rating", "must be a finite number")
    violations.raise_if_any()


MAX_ITEMS_PER_REGISTRATION = 1000


def validate_items(items: Sequence[tuple[str, Mapping[str, str]]]) -> None:
    violations = Violations()
    if not items:
        violations.add("items", "must not be empty")
    if len(items) > MAX_ITEMS_PER_REGISTRATION:
        violations.add("items", f"at most {MAX_ITEMS_PER_REGISTRATION} per request, got {len(items)}")
    else:
        for i, (item_id, attributes) in enumerate(items):
            check_id(violations, f"items[{i}].item_id", item_id)
            check_attributes(violations, f"items[{i}].attributes", attributes)
    violations.raise_if_any()
