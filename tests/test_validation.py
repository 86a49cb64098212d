"""The input limits every service shares: sizes in UTF-8 bytes, no control or format characters, no events
from the future, and the GenerateSynthetic request; the largest accepted input still fits one message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.v1 import candidates_pb2, common_pb2, synthetic_pb2
from services.common.encoding import SYNTHETIC_KIND_BY_ENUM, decode_synthetic_kind, validate_synthetic_request
from services.common.errors import InvalidArgument, Violations
from services.common.settings import EnvReader, ServerSettings, SettingsError
from services.common.validation import (
    MAX_K,
    SYNTHETIC_KINDS,
    EventInput,
    check_attributes,
    check_id,
    max_event_future_s,
    validate_events,
    validate_synthetic,
)
from services.features.adapters import DEFAULT_MAX_EVENTS_PER_USER
from trainer.config import load_config

EMOJI = "\U0001f600"  # 1 code point, 4 bytes in UTF-8
NOW = 1_700_000_000.0
DAY_S = 86_400


def accepted(check: Callable[[Violations], None]) -> bool:
    violations = Violations()
    check(violations)
    return not violations.items


def id_ok(value: str) -> bool:
    return accepted(lambda v: check_id(v, "id", value))


def key_ok(key: str) -> bool:
    return accepted(lambda v: check_attributes(v, "attributes", {key: "x"}))


def value_ok(value: str) -> bool:
    return accepted(lambda v: check_attributes(v, "attributes", {"k": value}))


def longest_accepted(ok: Callable[[str], bool], head: str = "") -> str:
    """head followed by as many EMOJI as `ok` accepts: the most UTF-8 bytes a field can hold."""
    n = 0
    while n < 100_000 and ok(head + EMOJI * (n + 1)):
        n += 1
    return head + EMOJI * n


def violation_fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


# ---------------------------------------------------------------- sizes in bytes


def test_ids_keys_and_values_are_limited_in_utf8_bytes() -> None:
    assert id_ok("a" * 256) and not id_ok("a" * 257)
    assert id_ok(EMOJI * 64) and not id_ok(EMOJI * 65)  # 256 bytes, then 260
    assert id_ok("é" * 128) and not id_ok("é" * 129)
    assert key_ok(EMOJI * 16) and not key_ok(EMOJI * 17)  # 64 bytes, then 68
    assert value_ok(EMOJI * 256) and not value_ok(EMOJI * 257)  # 1024 bytes, then 1028
    violations = Violations()
    check_id(violations, "user_id", EMOJI * 65)
    assert violations.items[0].description == "must be at most 256 bytes in UTF-8, got 260"


def test_the_largest_accepted_user_context_fits_one_message(tmp_path: Path) -> None:
    """Built from the longest id, attribute key and value the checks accept, with every recorded event of a
    user (the features service keeps DEFAULT_MAX_EVENTS_PER_USER of them) a distinct seen item, and the
    gateway's request to the candidate stage around it (the largest message of a Recommend)."""
    limit = ServerSettings.read(EnvReader({"RECSYS_ARTIFACTS": str(tmp_path)})).max_message_bytes
    max_history = int(load_config()["workflow"]["max_history"])
    item_id = longest_accepted(id_ok)
    keys = [longest_accepted(key_ok, head=chr(0x1F300 + i)) for i in range(64)]
    assert accepted(lambda v: check_attributes(v, "a", dict.fromkeys(keys, "x")))
    assert not accepted(lambda v: check_attributes(v, "a", dict.fromkeys([*keys, "one-more"], "x")))
    value = longest_accepted(value_ok)
    context = common_pb2.UserContext(
        user_id=item_id,
        known_user=True,
        history=[
            common_pb2.HistoryEntry(item_id=item_id, timestamp=-1, item_index=-1, weight=1.0)
            for _ in range(max_history)
        ],
        attributes=dict.fromkeys(keys, value),
        artifact_version="v" * 64,
        seen_item_ids=[item_id] * DEFAULT_MAX_EVENTS_PER_USER,
        seen_item_indices=b"\xff" * 4 * DEFAULT_MAX_EVENTS_PER_USER,
        sequence=common_pb2.EncodedSequence(
            item_indices=[-1] * max_history, timestamps=[-1] * max_history, gaps=[1.0] * max_history, length=-1
        ),
        generated_history=True,
        online_state_missing=True,
    )
    request = candidates_pb2.GetCandidatesRequest(
        context=context, n=MAX_K, exclude_item_ids=[item_id] * MAX_K, packed=True
    )
    assert context.ByteSize() < request.ByteSize() <= limit, (
        f"worst-case GetCandidatesRequest {request.ByteSize()} bytes (ids of {len(item_id.encode())} bytes) "
        f"> the {limit}-byte message limit"
    )


# ---------------------------------------------------------------- characters


@pytest.mark.parametrize(
    "bad",
    ["\x01", "\x7f", "\x85", "\u200b", "\u202e", "\ufeff", "\u2066", "\U000e0041", "\ud800", "\n", "\x00"],
    ids=["SOH", "DEL", "NEL", "ZWSP", "RLO", "BOM", "LRI", "TAG-A", "lone-surrogate", "LF", "NUL"],
)
def test_control_and_format_characters_are_refused_in_ids_and_keys(bad: str) -> None:
    assert not id_ok(f"user{bad}1")
    assert not key_ok(f"gen{bad}re")
    violations = Violations()
    check_id(violations, "user_id", f"a{bad}b")
    assert violations.items[0].field == "user_id"
    assert f"U+{ord(bad):04X}" in violations.items[0].description


@pytest.mark.parametrize("bad", ["\x01", "\x1b", "\x7f", "\x9b", "\x00", "\udfff"])
def test_control_characters_are_refused_in_attribute_values(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        violations = Violations()
        check_attributes(violations, "user_attributes", {"title": f"Hello{bad}World"})
        violations.raise_if_any()
    assert violation_fields(refused) == ["user_attributes['title']"]


def test_ordinary_text_is_accepted() -> None:
    for item_id in ("i-42", "Café au lait", "用户-七", EMOJI, "שלום", "a b"):
        assert id_ok(item_id), item_id
    # Values are text: format characters that writing needs (joiners in emoji and Indic scripts,
    # directional marks in Hebrew and Arabic), line breaks and tabs all stay.
    for value in ("👩\u200d💻", "क्\u200dष", "\u05e9\u05dc\u05d5\u05dd\u200f!", "line one\nline two\tend", "x|y"):
        assert value_ok(value), value
    assert not id_ok(" padded ") and not id_ok("")


# ---------------------------------------------------------------- events from the future


def event(timestamp: int) -> EventInput:
    return EventInput("u", "i", timestamp, "", 0.0)


def test_events_from_beyond_the_allowed_clock_skew_are_refused() -> None:
    validate_events([event(int(NOW) + DAY_S)], 10, now=NOW)  # one day ahead: the default skew
    with pytest.raises(InvalidArgument) as refused:
        validate_events([event(int(NOW)), event(int(NOW) + DAY_S + 1), event(4_000_000_000)], 10, now=NOW)
    assert violation_fields(refused) == ["events[1].timestamp", "events[2].timestamp"]
    assert str(int(NOW) + DAY_S) in refused.value.violations[0].description
    # The allowed skew is the caller's to set.
    validate_events([event(int(NOW) + 60)], 10, now=NOW, max_future_s=60)
    with pytest.raises(InvalidArgument):
        validate_events([event(int(NOW) + 61)], 10, now=NOW, max_future_s=60)


def test_events_are_checked_against_the_clock_when_no_time_is_given() -> None:
    with pytest.raises(InvalidArgument):
        validate_events([event(4_000_000_000)], 10)  # year 2096
    validate_events([event(1_000_000_000)], 10)


def test_the_allowed_clock_skew_is_a_setting() -> None:
    assert max_event_future_s(EnvReader({})) == DAY_S
    assert max_event_future_s(EnvReader({"RECSYS_MAX_EVENT_FUTURE_S": "300"})) == 300
    env = EnvReader({"RECSYS_MAX_EVENT_FUTURE_S": "-1"})
    max_event_future_s(env)
    with pytest.raises(SettingsError, match="RECSYS_MAX_EVENT_FUTURE_S"):
        env.finish()


# ---------------------------------------------------------------- GenerateSynthetic


def test_an_unknown_kind_is_named() -> None:
    Request = synthetic_pb2.GenerateSyntheticRequest
    for kind in (0, 4, 7, -1):
        with pytest.raises(InvalidArgument) as refused:
            validate_synthetic_request(Request(kind=kind, count=10), {})  # type: ignore[arg-type]
        assert violation_fields(refused) == ["kind"]
        assert "KIND_USERS" in str(refused.value)
        violations = Violations()
        assert decode_synthetic_kind(violations, kind) is None
        assert [(v.field, v.description) for v in violations.items] == [
            ("kind", f"must be one of KIND_USERS, KIND_ITEMS, KIND_INTERACTIONS, got {kind}")
        ]
    assert validate_synthetic_request(Request(kind=Request.KIND_INTERACTIONS, count=10), {}) == "interactions"
    with pytest.raises(InvalidArgument) as refused:  # an unknown kind is reported with the other bad fields
        validate_synthetic_request(Request(kind=7, count=0), {})  # type: ignore[arg-type]
    assert violation_fields(refused) == ["kind", "count"]


def test_the_wire_kinds_are_the_domain_kinds() -> None:
    assert tuple(SYNTHETIC_KIND_BY_ENUM.values()) == SYNTHETIC_KINDS
    for kind in SYNTHETIC_KINDS:
        validate_synthetic(kind, 10, 0, {})
    with pytest.raises(InvalidArgument) as refused:
        validate_synthetic("films", 10, 0, {})
    assert violation_fields(refused) == ["kind"]
    assert "users, items, interactions" in str(refused.value)


def test_conditions_have_a_total_byte_budget() -> None:
    validate_synthetic("users", 10, 0, {f"c{i:02d}": "v" * 61 for i in range(64)})  # 64 x 64 bytes: 4096
    with pytest.raises(InvalidArgument) as refused:
        validate_synthetic("users", 10, 0, {f"c{i:02d}": "v" * 62 for i in range(64)})
    assert violation_fields(refused) == ["conditions"]
    with pytest.raises(InvalidArgument) as refused:
        validate_synthetic("users", 10, 0, {"genre": "drama\x1b[2J"})
    assert violation_fields(refused) == ["conditions['genre']"]
