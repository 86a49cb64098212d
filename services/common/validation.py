"""Limits and checks on client input shared by every service that receives it.

Sizes are counted in UTF-8 bytes, what a string costs on the wire and in storage, never in code points (one
code point takes up to 4 bytes). The limits are chosen so that the largest message built from accepted input
fits gRPC's default 4 MiB (tests/test_validation.py builds the worst cases and measures them).
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.errors import ResourceExhausted, Violations
from services.common.settings import EnvReader

MAX_ID_BYTES = 256
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_BYTES = 64
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_K = 1000
# Latest accepted event time: year 2100, in seconds; anything later is a unit mistake (ms, µs).
MAX_TIMESTAMP = 4_102_444_800
# How far ahead of the receiving server's clock an event may be (client clocks drift; the future has not
# happened). Overridden by RECSYS_MAX_EVENT_FUTURE_S, see max_event_future_s.
DEFAULT_MAX_EVENT_FUTURE_S = 86_400.0

# Categories refused in ids and attribute keys: control (Cc), format (Cf: zero-width and bidirectional
# marks, BOM) and surrogates (Cs: unpaired halves, which protobuf never decodes but a direct caller can pass).
_REFUSED_IN_NAMES = frozenset({"Cc", "Cf", "Cs"})
# Attribute values are free text: line breaks and tabs stay, the other control characters and surrogates go.
_REFUSED_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def utf8_size(value: str) -> int:
    """Bytes in UTF-8; an unpaired surrogate counts as the 3 bytes it would take (it is refused anyway)."""
    return len(value.encode("utf-8", "surrogatepass"))


def _too_long(value: str, max_bytes: int) -> bool:
    # Decided by the length in code points (1 to 4 bytes each) when it can be, so most strings are not encoded.
    if len(value) * 4 <= max_bytes:
        return False
    return len(value) > max_bytes or utf8_size(value) > max_bytes


def _first_refused_in_name(value: str) -> str | None:
    if value.isprintable():  # the common case, in C: no Cc, Cf or Cs at all
        return None
    return next((ch for ch in value if unicodedata.category(ch) in _REFUSED_IN_NAMES), None)


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X} ({unicodedata.category(ch)})"


def check_id(violations: Violations, field: str, value: str) -> None:
    if not value:
        violations.add(field, "must not be empty")
    elif _too_long(value, MAX_ID_BYTES):
        violations.add(field, f"must be at most {MAX_ID_BYTES} bytes in UTF-8, got {utf8_size(value)}")
    elif (refused := _first_refused_in_name(value)) is not None:
        violations.add(field, f"must not contain control or format characters, found {_describe(refused)}")
    elif value != value.strip():
        violations.add(field, "must not have surrounding whitespace")


def check_attributes(violations: Violations, field: str, attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        violations.add(field, f"at most {MAX_ATTRIBUTES} attributes, got {len(attributes)}")
        return
    for key, value in attributes.items():
        if not key or _too_long(key, MAX_ATTRIBUTE_KEY_BYTES):
            violations.add(f"{field}[{key[:32]!r}]", f"key must be 1..{MAX_ATTRIBUTE_KEY_BYTES} bytes in UTF-8")
        elif (refused := _first_refused_in_name(key)) is not None:
            violations.add(
                f"{field}[{key!r}]", f"key must not contain control or format characters, found {_describe(refused)}"
            )
        elif _too_long(value, MAX_ATTRIBUTE_VALUE_BYTES):
            violations.add(
                f"{field}[{key!r}]",
                f"value must be at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes in UTF-8, got {utf8_size(value)}",
            )
        elif (found := _REFUSED_IN_TEXT.search(value)) is not None:
            violations.add(
                f"{field}[{key!r}]", f"value must not contain control characters, found {_describe(found.group())}"
            )


def check_k(violations: Violations, field: str, k: int) -> None:
    if not 1 <= k <= MAX_K:
        violations.add(field, f"must be in 1..{MAX_K}, got {k}")


def max_event_future_s(env: EnvReader) -> float:
    """RECSYS_MAX_EVENT_FUTURE_S, read where the caller of validate_events is configured."""
    return env.number("MAX_EVENT_FUTURE_S", DEFAULT_MAX_EVENT_FUTURE_S, 0.0, 365 * 86_400.0)


def check_timestamp(violations: Violations, field: str, timestamp: int, latest: int) -> None:
    """Seconds since the epoch, not after `latest`: the receiving server's clock plus the allowed skew."""
    if not 0 <= timestamp <= latest:
        violations.add(
            field,
            f"must be seconds since the epoch in 0..{latest} (the server's clock plus the allowed skew), "
            f"got {timestamp}",
        )


@dataclass(frozen=True)
class EventInput:
    """One interaction as a client sent it."""

    user_id: str
    item_id: str
    timestamp: int
    event_id: str  # empty when the client gave none
    rating: float


def validate_events(
    events: Sequence[EventInput],
    max_events: int,
    *,
    now: float | None = None,
    max_future_s: float = DEFAULT_MAX_EVENT_FUTURE_S,
) -> None:
    """RESOURCE_EXHAUSTED for an oversized batch, INVALID_ARGUMENT naming every bad field otherwise.
    Events later than now + max_future_s are refused; `now` is the server's clock in seconds since the epoch
    (read here when not given: pass it to keep the check pure)."""
    if len(events) > max_events:
        raise ResourceExhausted(f"at most {max_events} events per request, got {len(events)}")
    violations = Violations()
    if not events:
        violations.add("events", "must not be empty")
    latest = min(math.floor((time.time() if now is None else now) + max_future_s), MAX_TIMESTAMP)
    for i, event in enumerate(events):
        check_id(violations, f"events[{i}].user_id", event.user_id)
        check_id(violations, f"events[{i}].item_id", event.item_id)
        check_timestamp(violations, f"events[{i}].timestamp", event.timestamp, latest)
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


# What GenerateSynthetic makes, as the synthetic core names it (services/common/encoding maps the wire's enum).
SYNTHETIC_KINDS = ("users", "items", "interactions")
MAX_SYNTHETIC_ROWS = 10_000_000
MAX_CHUNK_ROWS = 10_000
# Conditions are copied into every generated row, so their total (keys and values, UTF-8) is kept small; the
# synthetic service then sizes each chunk so that its rows fit one message (services/synthetic).
MAX_CONDITIONS_BYTES = 4096


def validate_synthetic(
    kind: str | None,
    count: int,
    chunk_size: int,
    conditions: Mapping[str, str],
    violations: Violations | None = None,
) -> None:
    """A GenerateSynthetic request in domain terms, checked alike by the gateway and by the synthetic service.
    A caller decoding the request adds to `violations` what it refused there (a kind that names none of
    SYNTHETIC_KINDS, passed as None, is refused in the wire's terms), so that one reply names every bad field."""
    violations = Violations() if violations is None else violations
    if kind not in SYNTHETIC_KINDS and not any(v.field == "kind" for v in violations.items):
        violations.add("kind", f"must be one of {', '.join(SYNTHETIC_KINDS)}, got {kind!r}")
    violations.check(1 <= count <= MAX_SYNTHETIC_ROWS, "count", f"must be in 1..{MAX_SYNTHETIC_ROWS}, got {count}")
    violations.check(
        0 <= chunk_size <= MAX_CHUNK_ROWS, "chunk_size", f"must be in 0..{MAX_CHUNK_ROWS}, got {chunk_size}"
    )
    check_attributes(violations, "conditions", conditions)
    size = sum(utf8_size(key) + utf8_size(value) for key, value in conditions.items())
    violations.check(
        size <= MAX_CONDITIONS_BYTES,
        "conditions",
        f"keys and values must total at most {MAX_CONDITIONS_BYTES} bytes in UTF-8, got {size}",
    )
    violations.raise_if_any()
