"""Fuzzing every public RPC of the running suite (`recsys train`, then `recsys serve`) with hypothesis.

Typed requests are built field by field from strategies that include the nasty cases (empty, huge, control and
format characters, the code points around the surrogates, ints at and past their limits, NaN ratings, events
from the far future, unknown enum values, huge maps and batches); raw bytes (random, truncated or mutated
encodings, wrong wire types, huge length prefixes, over the 4 MiB message limit) go through the same methods.

Every answer is judged against the public contract by an oracle written here, independently of the services'
own checks: input that is bad by the contract must be refused with INVALID_ARGUMENT naming the field (a batch
too large: RESOURCE_EXHAUSTED), valid input must be answered, and nothing may answer INTERNAL, UNKNOWN, leak a
stack trace, or hang. Findings are collected over the whole run (one entry per kind of failure, with its
smallest request) rather than stopping at the first, so one run lists every hole. Afterwards the suite must
still be serving, with the same processes, and give a fixed user the same answer as before the fuzzing.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
from google.protobuf import message as protobuf_message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recsys.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, synthetic_pb2
from services.common.errors import MAX_REPORTED_VIOLATIONS
from services.common.settings import DEFAULT_MAX_EVENTS_PER_REQUEST, DEFAULT_MAX_MESSAGE_BYTES
from services.common.validation import (
    DEFAULT_MAX_EVENT_FUTURE_S,
    MAX_ATTRIBUTE_KEY_BYTES,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    MAX_CHUNK_ROWS,
    MAX_CONDITIONS_BYTES,
    MAX_ID_BYTES,
    MAX_ITEMS_PER_REGISTRATION,
    MAX_K,
    MAX_SYNTHETIC_ROWS,
    MAX_TIMESTAMP,
)
from tests.suite import Served, alive, recsys, serve

pytestmark = [
    # Hypothesis describes the drawn requests; a batch of thousands of events makes a long description.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

# The smallest training that still runs every model (the GAN included) on the demo data.
TRAINING_CONFIG = """
[autoencoder]
hidden = [32]
latent = 8
epochs = 3
patience = 2
batch_size = 64
[item_autoencoder]
epochs = 5
[gru4rec]
epochs = 1
units = 8
embedding = 8
[caser]
epochs = 1
embedding = 8
[gan]
steps = 30
item_steps = 30
samples = 16
"""
CLIENT_TIMEOUT_S = 10.0
# A call that took this much of the client's deadline counts as a hang, whatever status it ended with.
HANG_S = 0.9 * CLIENT_TIMEOUT_S
# GenerateSynthetic: messages read before the client cancels (a long stream must stop when the reader goes).
STREAM_MESSAGES = 4
# Every user RecordEvents writes to starts with this, so no fuzzed write reaches a trained user.
FUZZ_PREFIX = "fuzz-"
# An event this close to the server's latest accepted time may fall either side of it (clock, transit).
TIMESTAMP_SLACK_S = 120
FIXED_TOP_K = 10
# Registered before the fuzzing starts, so that Recommend's excluded items include items the trained
# vocabulary does not know.
SEEDED_ITEMS = [f"{FUZZ_PREFIX}seeded-item-{i}" for i in range(4)]
# The suite here runs with the default batch limit (RECSYS_MAX_EVENTS_PER_REQUEST).
MAX_EVENTS_PER_REQUEST = DEFAULT_MAX_EVENTS_PER_REQUEST
# A generated row's size beside its conditions (ids, generated attributes, encoding), generously.
SYNTHETIC_ROW_BYTES = 400

# Calls per RPC: drawn examples (the explicit cases of each test come on top).
RECOMMEND_EXAMPLES = 2000
RECORD_EVENTS_EXAMPLES = 1000
REGISTER_ITEMS_EXAMPLES = 400
GENERATE_SYNTHETIC_EXAMPLES = 300
RAW_EXAMPLES_PER_METHOD = 200

# What grpc.aio itself answers when a request does not parse: the request deserializer raises before any
# servicer or interceptor code runs, and grpc's _handle_exceptions (src/python/grpcio/grpc/_cython/_cygrpc/aio/
# server.pyx.pyx) sends UNKNOWN with 'Unexpected %s: %s' % (type(e), e). The sync server answers INTERNAL
# "Exception deserializing request!" instead; the suite's servers are grpc.aio.
PARSE_FAILURE_CODE = grpc.StatusCode.UNKNOWN
PARSE_FAILURE_DETAILS = "Unexpected <class 'google.protobuf.message.DecodeError'>: Error parsing message with type '{}'"

ALLOWED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
# Answers a valid request may get that are no answer: counted and reported, not failures, unless they hide a
# downstream crash (a stage's INTERNAL or UNKNOWN passed on as UNAVAILABLE).
NOTED_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)
# What a Python stack trace looks like; request text echoed in a message never takes this form.
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*\.py", line \d+')
SERVICES = ("gateway", "features", "candidates", "ranking", "synthetic", "tritonserver")

Synthetic = synthetic_pb2.GenerateSyntheticRequest
KINDS = (Synthetic.KIND_USERS, Synthetic.KIND_ITEMS, Synthetic.KIND_INTERACTIONS)


# ---------------------------------------------------------------------------------------------------------------
# The oracle: what the contract says about a request, independently of the services' own validation.


def utf8_bytes(value: str) -> int:
    return len(value.encode("utf-8"))


@dataclass
class Verdict:
    """What a request must get: RESOURCE_EXHAUSTED (exhausted), INVALID_ARGUMENT naming every field in
    `bad` (or a part of it), OK when neither and not `unsure`, and OK or INVALID_ARGUMENT (naming only fields
    in `unsure`) when `unsure`."""

    bad: list[str] = field(default_factory=list)
    exhausted: str = ""
    unsure: list[str] = field(default_factory=list)

    def refuse(self, name: str) -> None:
        self.bad.append(name)

    def doubt(self, name: str) -> None:
        self.unsure.append(name)


_NAME_REFUSED = frozenset({"Cc", "Cf", "Cs"})


def refused_in_name(value: str, max_bytes: int) -> bool:
    """Empty, too long, or holding a control or format character."""
    too_long = utf8_bytes(value) > max_bytes
    return not value or too_long or any(unicodedata.category(ch) in _NAME_REFUSED for ch in value)


def refused_in_text(value: str) -> bool:
    """Too long, or a control character other than tab and the line breaks."""
    too_long = utf8_bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES
    return too_long or any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value)


def judge_id(verdict: Verdict, name: str, value: str) -> None:
    """Ids: 1..MAX_ID_BYTES UTF-8 bytes, no control or format characters, no surrounding whitespace. Other
    characters a name rarely holds (line separators, private use, unassigned) may go either way."""
    if refused_in_name(value, MAX_ID_BYTES) or value != value.strip():
        verdict.refuse(name)
    elif not value.isprintable():
        verdict.doubt(name)


def judge_attributes(verdict: Verdict, name: str, attributes: Mapping[str, str]) -> None:
    """At most MAX_ATTRIBUTES; keys are names (without the whitespace rule); values are free text."""
    if len(attributes) > MAX_ATTRIBUTES:
        verdict.refuse(name)
        return
    for key, value in attributes.items():
        if refused_in_name(key, MAX_ATTRIBUTE_KEY_BYTES) or refused_in_text(value):
            verdict.refuse(name)
        elif not key.isprintable() or not all(ch.isprintable() or ch in "\t\n\r" for ch in value):
            verdict.doubt(name)


def judge_oversize(verdict: Verdict, request: protobuf_message.Message) -> None:
    if request.ByteSize() > DEFAULT_MAX_MESSAGE_BYTES:
        verdict.exhausted = "message over the 4 MiB limit"


def recommend_verdict(request: gateway_pb2.RecommendRequest) -> Verdict:
    verdict = Verdict()
    judge_oversize(verdict, request)
    judge_id(verdict, "user_id", request.user_id)
    if not 1 <= request.k <= MAX_K:
        verdict.refuse("k")
    judge_attributes(verdict, "user_attributes", request.user_attributes)
    if len(request.exclude_item_ids) > MAX_K:
        verdict.refuse("exclude_item_ids")
    else:
        for i, item_id in enumerate(request.exclude_item_ids):
            judge_id(verdict, f"exclude_item_ids[{i}]", item_id)
    return verdict


def record_events_verdict(request: gateway_pb2.RecordEventsRequest) -> Verdict:
    verdict = Verdict()
    judge_oversize(verdict, request)
    if len(request.events) > MAX_EVENTS_PER_REQUEST:
        verdict.exhausted = verdict.exhausted or f"more than {MAX_EVENTS_PER_REQUEST} events"
    if not request.events:
        verdict.refuse("events")
    latest = min(time.time() + DEFAULT_MAX_EVENT_FUTURE_S, MAX_TIMESTAMP)
    for i, event in enumerate(request.events):
        judge_id(verdict, f"events[{i}].user_id", event.user_id)
        judge_id(verdict, f"events[{i}].item_id", event.item_id)
        if event.event_id:
            judge_id(verdict, f"events[{i}].event_id", event.event_id)
        if event.timestamp < 0 or event.timestamp > latest + TIMESTAMP_SLACK_S:
            verdict.refuse(f"events[{i}].timestamp")
        elif event.timestamp > latest - TIMESTAMP_SLACK_S:
            verdict.doubt(f"events[{i}].timestamp")
        if not math.isfinite(event.rating):
            verdict.refuse(f"events[{i}].rating")
    return verdict


def register_items_verdict(request: synthetic_pb2.RegisterItemsRequest) -> Verdict:
    verdict = Verdict()
    judge_oversize(verdict, request)
    if not request.items or len(request.items) > MAX_ITEMS_PER_REGISTRATION:
        verdict.refuse("items")
        return verdict
    for i, item in enumerate(request.items):
        judge_id(verdict, f"items[{i}].item_id", item.item_id)
        judge_attributes(verdict, f"items[{i}].attributes", item.attributes)
    return verdict


def generate_synthetic_verdict(request: synthetic_pb2.GenerateSyntheticRequest) -> Verdict:
    verdict = Verdict()
    judge_oversize(verdict, request)
    if request.kind not in KINDS:
        verdict.refuse("kind")
    if not 1 <= request.count <= MAX_SYNTHETIC_ROWS:
        verdict.refuse("count")
    conditions_bytes = sum(utf8_bytes(k) + utf8_bytes(v) for k, v in request.conditions.items())
    if not 0 <= request.chunk_size <= MAX_CHUNK_ROWS:
        verdict.refuse("chunk_size")
    elif request.chunk_size * (conditions_bytes + SYNTHETIC_ROW_BYTES) > DEFAULT_MAX_MESSAGE_BYTES:
        verdict.doubt("chunk_size")  # the rows asked for per message may not fit one message
    judge_attributes(verdict, "conditions", request.conditions)
    if conditions_bytes > MAX_CONDITIONS_BYTES:
        verdict.refuse("conditions")
    return verdict


# ---------------------------------------------------------------------------------------------------------------
# Calling the suite and judging the answer.


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    violations: list[str] | None  # the BadRequest fields of an error; None when it carried no BadRequest
    elapsed_s: float
    replies: list[Any]  # the OK reply (unary) or the messages read (stream)
    complete: bool = True  # a stream read to its end (not cancelled by the reader)


def bad_request_fields(error: grpc.RpcError) -> list[str] | None:
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details of another status than the call's: the trailers were cut (see check_outcome)
        return None
    if status is None:
        return None
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return [v.field for v in bad_request.field_violations]
    return None


def failed(error: grpc.RpcError, started: float, replies: list[Any] | None = None) -> Outcome:
    return Outcome(
        error.code(),
        error.details() or "",
        bad_request_fields(error),
        time.monotonic() - started,
        replies or [],
    )


def call_unary(method: Callable[..., Any], request: Any) -> Outcome:
    started = time.monotonic()
    try:
        reply = method(request, timeout=CLIENT_TIMEOUT_S)
    except grpc.RpcError as error:
        return failed(error, started)
    return Outcome(grpc.StatusCode.OK, "", None, time.monotonic() - started, [reply])


def call_stream(method: Callable[..., Any], request: Any) -> Outcome:
    started = time.monotonic()
    replies: list[Any] = []
    call = method(request, timeout=CLIENT_TIMEOUT_S)
    try:
        for reply in call:
            replies.append(reply)
            if len(replies) >= STREAM_MESSAGES:
                call.cancel()
                return Outcome(grpc.StatusCode.OK, "", None, time.monotonic() - started, replies, complete=False)
    except grpc.RpcError as error:
        return failed(error, started, replies)
    return Outcome(grpc.StatusCode.OK, "", None, time.monotonic() - started, replies)


def names(violation: str, field_name: str) -> bool:
    """A violation's field is the field, or a part of it (an element, a map entry, a nested field)."""
    return violation == field_name or violation.startswith((f"{field_name}[", f"{field_name}."))


def _signature_field(name: str) -> str:
    """A field with its indices and map keys left out, so one kind of failure is one finding."""
    return re.sub(r"\[[^\]]*\]", "[]", name)


@dataclass
class Finding:
    count: int
    example: str
    answer: str


class Findings:
    """Failures by kind, each with how often it happened and its smallest request."""

    def __init__(self) -> None:
        self.by_kind: dict[str, Finding] = {}

    def add(self, kind: str, request: str, outcome: Outcome) -> None:
        answer = f"{outcome.code.name} {outcome.details[:300]!r} fields={outcome.violations}"
        if outcome.replies:
            answer += f" first reply: {shorten(outcome.replies[0])}"
        found = self.by_kind.get(kind)
        if found is None:
            self.by_kind[kind] = Finding(1, request, answer)
            return
        found.count += 1
        if len(request) < len(found.example):
            found.example, found.answer = request, answer

    def report(self) -> str:
        return "\n".join(
            f"- {kind} ({f.count}x)\n    request: {f.example}\n    answer:  {f.answer}"
            for kind, f in sorted(self.by_kind.items())
        )


@dataclass
class Ledger:
    """What the whole module did: calls per RPC, answers noted, the item ids a fuzzed RegisterItems may have
    registered (they join every user's candidates), and how long each test took."""

    calls: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    noted: Counter[str] = field(default_factory=Counter)
    registered: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        calls = ", ".join(f"{rpc}: {n}" for rpc, n in sorted(self.calls.items()))
        noted = ", ".join(f"{what}: {n}" for what, n in sorted(self.noted.items())) or "none"
        answers = ", ".join(f"{what}: {n}" for what, n in sorted(self.answers.items()))
        seconds = ", ".join(f"{test}: {s:.1f}s" for test, s in self.seconds.items())
        return (
            f"calls {calls} (total {sum(self.calls.values())})\nanswers {answers}\nnoted answers: {noted}\n"
            f"time {seconds}"
        )


PREVIEW_CHARS = 400


def shorten(request: bytes | protobuf_message.Message) -> str:
    """A bounded description: requests reach hundreds of megabytes, which their text form would multiply."""
    if isinstance(request, bytes):
        return f"bytes[{len(request)}] {request[:120]!r}"
    text = preview(request)
    return text if len(text) <= PREVIEW_CHARS else f"{text[:PREVIEW_CHARS]}..."


def preview(message: protobuf_message.Message) -> str:
    """The set fields, with long strings cut and only the first entries of repeated fields and maps."""

    def value_text(value: Any) -> str:
        if isinstance(value, protobuf_message.Message):
            return f"{{{preview(value)}}}"
        if isinstance(value, str) and len(value) > 60:
            return f"{value[:60]!r}...({len(value)} chars)"
        return repr(value)

    parts = []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            entries = ", ".join(f"{value_text(k)}: {value_text(v)}" for k, v in list(value.items())[:3])
            parts.append(f"{descriptor.name}={{{entries}{', ...' if len(value) > 3 else ''}}} ({len(value)})")
        elif descriptor.is_repeated:
            entries = ", ".join(value_text(v) for v in value[:3])
            parts.append(f"{descriptor.name}=[{entries}{', ...' if len(value) > 3 else ''}] ({len(value)})")
        else:
            parts.append(f"{descriptor.name}={value_text(value)}")
    return " ".join(parts) or "<empty message>"


def check_outcome(
    rpc: str,
    request_text: str,
    verdict: Verdict,
    outcome: Outcome,
    findings: Findings,
    ledger: Ledger,
    check_ok: Callable[[list[Any], bool], list[str]],
) -> None:
    """Everything every answer must satisfy, then the verdict's expectation, then the RPC's own checks."""

    def problem(kind: str) -> None:
        findings.add(f"{rpc}: {kind}", request_text, outcome)

    code = outcome.code
    ledger.answers[f"{rpc} {code.name}"] += 1
    if outcome.elapsed_s >= HANG_S:
        problem(f"hang: no answer within {HANG_S:.0f} s ({code.name})")
        return
    if code not in ALLOWED_CODES:
        problem(f"answered {code.name}")
        return
    if TRACEBACK.search(outcome.details):
        problem("stack trace text in the status details")
    if "metadata size exceeds" in outcome.details:
        # The status' message and details travel in the trailers, which every client caps (gRPC: 16 KiB hard):
        # an answer over it reaches the client as RESOURCE_EXHAUSTED "Stream removed", its real status lost.
        problem("status trailers over the client's metadata limit: the real status and its details are lost")
        return
    if code == grpc.StatusCode.INVALID_ARGUMENT and not [f for f in outcome.violations or [] if f]:
        problem("INVALID_ARGUMENT without google.rpc.BadRequest field violations")
    if code == grpc.StatusCode.UNAVAILABLE and re.search(r"\((INTERNAL|UNKNOWN)\)", outcome.details):
        problem("a stage's crash passed on as UNAVAILABLE")
        return
    if verdict.exhausted:
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            problem(f"{verdict.exhausted}: answered {code.name}, not RESOURCE_EXHAUSTED")
        return
    if verdict.bad:
        if code == grpc.StatusCode.OK:
            problem(f"accepted bad {', '.join(sorted({_signature_field(b) for b in verdict.bad}))}")
        elif code != grpc.StatusCode.INVALID_ARGUMENT:
            problem(f"bad {_signature_field(verdict.bad[0])} answered {code.name}, not INVALID_ARGUMENT")
        else:
            named = outcome.violations or []
            if len(named) >= MAX_REPORTED_VIOLATIONS:
                # A capped reply names its first violations only: each of those must be a bad field.
                for violation in named:
                    if not any(names(violation, bad) for bad in verdict.bad + verdict.unsure):
                        problem(f"INVALID_ARGUMENT names a good field {_signature_field(violation)}")
            else:
                for bad in verdict.bad:
                    if not any(names(v, bad) for v in named):
                        problem(f"INVALID_ARGUMENT does not name bad field {_signature_field(bad)}")
        return
    if code in NOTED_CODES:
        ledger.noted[f"{rpc} {code.name}"] += 1
        return
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        named = outcome.violations or []
        if not verdict.unsure or not all(any(names(v, u) for u in verdict.unsure) for v in named):
            problem(f"refused a valid request, naming {sorted({_signature_field(v) for v in named})}")
        return
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        problem("RESOURCE_EXHAUSTED for a request within every limit")
        return
    for kind in check_ok(outcome.replies, outcome.complete):
        problem(kind)


# ---------------------------------------------------------------------------------------------------------------
# Strategies: field by field, the nasty cases first.

EMOJI = "\U0001f600"
NASTY_STRINGS = [
    "",
    " ",
    " x",
    "x ",
    "\t",
    "x\ny",
    "\r\n",
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "\x7f",
    "\x85",
    "\x9f",
    "\u00ad",  # soft hyphen (Cf)
    "\u200b",  # zero-width space (Cf)
    "a\u200db",
    "\u200e",
    "\u202eevil",  # right-to-left override
    "\u2066",
    "\ufeff",  # byte order mark
    "\U000e0001",  # language tag (Cf)
    "\u2028",
    "\u2029",
    "a\u00a0b",
    "\u3000",
    "\ue000",  # private use
    "\U000f0000",
    "\ud7ff",  # the code points around the surrogates
    "\ue000\ud7ff",
    "\ufffd",
    "\ufffe",
    "\uffff",
    "\U0010ffff",
    EMOJI,
    "e\u0301",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f",
    "'; DROP TABLE events; --",
    "]]; redis.call('FLUSHALL') --[[",
    "%s%n%x",
    "{{7*7}}",
    "../../etc/passwd",
    "${jndi:ldap://127.0.0.1/x}",
    "null",
    "NaN",
    "-1",
    "日本語",
    "עברית",
    "\ufdfa",
]
NASTY_CHARS = sorted({ch for s in NASTY_STRINGS for ch in s})


def long_strings() -> st.SearchStrategy[str]:
    """Around every byte limit, in 1-, 2-, 3- and 4-byte characters."""
    sizes = [63, 64, 65, 128, 129, 255, 256, 257, 1023, 1024, 1025, 70_000]
    return st.builds(
        lambda unit, n: unit * n, st.sampled_from(["u", "é", "€", EMOJI, "\u200b"]), st.sampled_from(sizes)
    )


def nasty_text(long: bool = True) -> st.SearchStrategy[str]:
    """`long`: also strings around and far past the limits (left out of elements copied thousands of times)."""
    short = st.one_of(
        st.sampled_from(NASTY_STRINGS),
        # Every code point protobuf can carry (surrogates cannot be encoded: raw bytes send them).
        st.text(st.one_of(st.sampled_from(NASTY_CHARS), st.characters(codec="utf-8")), max_size=24),
        st.text(max_size=12),
    )
    return st.one_of(short, long_strings()) if long else short


def plain_ids() -> st.SearchStrategy[str]:
    return st.from_regex(r"[A-Za-z0-9_.:-]{1,24}", fullmatch=True)


@dataclass(frozen=True)
class Catalogue:
    """What the trained artefact knows: users with their histories, items, and attribute values."""

    histories: dict[str, frozenset[str]]
    item_ids: list[str]
    attributes: list[tuple[str, str]]
    # The attributes of a few trained items, for items registered like them.
    item_examples: list[dict[str, str]]

    @property
    def user_ids(self) -> list[str]:
        return sorted(self.histories)


def attribute_maps(catalogue: Catalogue, huge: bool = True) -> st.SearchStrategy[dict[str, str]]:
    """Known and nasty keys and values; `huge`: also maps at and far past the limits, up to over 4 MiB."""
    small = st.dictionaries(
        st.one_of(st.sampled_from([k for k, _ in catalogue.attributes]), nasty_text(huge)),
        st.one_of(st.sampled_from([v for _, v in catalogue.attributes]), nasty_text(huge)),
        max_size=6,
    )
    if not huge:
        return small
    large = st.builds(
        lambda n, value: {f"k{i}": value for i in range(n)},
        st.sampled_from([MAX_ATTRIBUTES, MAX_ATTRIBUTES + 1, 1000, 5000]),
        st.sampled_from(["", "x", "x" * MAX_ATTRIBUTE_VALUE_BYTES]),
    )
    return st.one_of(small, large)


def known_attributes(catalogue: Catalogue) -> st.SearchStrategy[dict[str, str]]:
    return st.lists(st.sampled_from(catalogue.attributes), max_size=4).map(dict)


def many(strategy: st.SearchStrategy[Any], sizes: Sequence[int]) -> st.SearchStrategy[list[Any]]:
    """Large lists without generating every element: one drawn element, repeated (copies of a message). The
    element strategy must keep its elements small: a 70 kB string copied 5000 times is a 350 MB request."""
    return st.builds(lambda one, n: [one] * n, strategy, st.sampled_from(list(sizes)))


def field_mix(
    message: type[protobuf_message.Message],
    valid: Mapping[str, st.SearchStrategy[Any]],
    nasty: Mapping[str, st.SearchStrategy[Any]],
) -> st.SearchStrategy[Any]:
    """Messages with every field valid, with one field nasty (each field in turn), and with any field either:
    valid requests reach the deep paths, one bad field at a time tests each check alone."""
    either = {name: st.one_of(valid[name], nasty[name]) for name in valid}
    one_nasty = [st.builds(message, **{**valid, name: nasty[name]}) for name in valid]
    return st.one_of(st.builds(message, **valid), *one_nasty, st.builds(message, **either))


def recommend_requests(catalogue: Catalogue) -> st.SearchStrategy[gateway_pb2.RecommendRequest]:
    known_items = st.sampled_from(catalogue.item_ids)
    valid = {
        "user_id": st.one_of(st.sampled_from(catalogue.user_ids), plain_ids()),
        "k": st.integers(1, 30),
        "user_attributes": known_attributes(catalogue),
        "exclude_item_ids": st.lists(st.one_of(known_items, st.sampled_from(SEEDED_ITEMS), plain_ids()), max_size=5),
    }
    nasty = {
        "user_id": nasty_text(),
        "k": st.one_of(
            st.sampled_from([0, -1, 1, MAX_K, MAX_K + 1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1)
        ),
        "user_attributes": attribute_maps(catalogue),
        "exclude_item_ids": st.one_of(
            st.lists(nasty_text(), min_size=1, max_size=5), many(known_items, [MAX_K, MAX_K + 1])
        ),
    }
    return field_mix(gateway_pb2.RecommendRequest, valid, nasty)


def timestamps() -> st.SearchStrategy[int]:
    now = int(time.time())
    return st.one_of(
        st.sampled_from(
            [
                -1,
                -(2**63),
                2**63 - 1,
                now + 2 * 86_400,
                now + 400 * 86_400,
                MAX_TIMESTAMP,
                MAX_TIMESTAMP + 1,
                now * 1000,
                now * 1_000_000,
            ]
        ),
        st.integers(-(2**63), 2**63 - 1),
    )


def events(catalogue: Catalogue, long: bool) -> st.SearchStrategy[common_pb2.Event]:
    """User ids always start with FUZZ_PREFIX (or are empty, which is refused): no event of a trained user.
    `long`: also strings past the limits (left out of events copied thousands of times)."""
    now = int(time.time())
    fuzz_users = st.sampled_from([f"{FUZZ_PREFIX}a", f"{FUZZ_PREFIX}b", f"{FUZZ_PREFIX}c"])
    valid = {
        "user_id": st.one_of(fuzz_users, plain_ids().map(FUZZ_PREFIX.__add__)),
        "item_id": st.one_of(st.sampled_from(catalogue.item_ids), plain_ids()),
        "timestamp": st.one_of(st.sampled_from([0, now, now + 3600]), st.integers(0, now)),
        "event_id": st.one_of(st.just(""), st.just("same-id"), plain_ids()),
        "rating": st.one_of(st.just(0.0), st.floats(width=32, allow_nan=False, allow_infinity=False)),
    }
    nasty = {
        "user_id": st.one_of(st.just(""), nasty_text(long).map(FUZZ_PREFIX.__add__)),
        "item_id": nasty_text(long),
        "timestamp": timestamps(),
        "event_id": nasty_text(long),
        "rating": st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 3.4e38, 1e-45]), st.floats(width=32)),
    }
    return field_mix(common_pb2.Event, valid, nasty)


def record_events_requests(catalogue: Catalogue) -> st.SearchStrategy[gateway_pb2.RecordEventsRequest]:
    each = events(catalogue, long=True)
    batches = st.one_of(
        st.lists(each, min_size=1, max_size=6),
        st.lists(each, max_size=6),
        many(events(catalogue, long=False), [100, 1000, 1001, 5000]),
    )
    return st.builds(gateway_pb2.RecordEventsRequest, events=batches)


def items(catalogue: Catalogue, long: bool) -> st.SearchStrategy[common_pb2.Item]:
    valid = {
        "item_id": st.one_of(plain_ids().map(f"{FUZZ_PREFIX}item-".__add__), st.sampled_from(catalogue.item_ids)),
        "attributes": known_attributes(catalogue),
    }
    nasty = {"item_id": nasty_text(long), "attributes": attribute_maps(catalogue, huge=long)}
    return field_mix(common_pb2.Item, valid, nasty)


def register_items_requests(catalogue: Catalogue) -> st.SearchStrategy[synthetic_pb2.RegisterItemsRequest]:
    sizes = [MAX_ITEMS_PER_REGISTRATION + 1, 5 * MAX_ITEMS_PER_REGISTRATION]
    batches = st.one_of(
        st.lists(items(catalogue, long=True), min_size=1, max_size=3),
        st.lists(items(catalogue, long=True), max_size=3),
        many(items(catalogue, long=False), sizes),
    )
    return st.builds(synthetic_pb2.RegisterItemsRequest, items=batches)


def generate_synthetic_requests(catalogue: Catalogue) -> st.SearchStrategy[synthetic_pb2.GenerateSyntheticRequest]:
    valid = {
        "kind": st.sampled_from(KINDS),
        "count": st.integers(1, 25),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "conditions": known_attributes(catalogue),
        "chunk_size": st.integers(0, 10),
    }
    nasty = {
        "kind": st.sampled_from([Synthetic.KIND_UNSPECIFIED, 4, 7, -1, 2**31 - 1, -(2**31)]),
        # Valid but huge counts too: the stream must stop when the reader cancels it.
        "count": st.sampled_from([0, -1, MAX_SYNTHETIC_ROWS, MAX_SYNTHETIC_ROWS + 1, 2**63 - 1, -(2**63)]),
        "seed": st.sampled_from([0, -1, 2**63 - 1, -(2**63)]),
        "conditions": st.one_of(
            attribute_maps(catalogue),
            st.builds(lambda n: {f"c{i}": "v" * 1000 for i in range(n)}, st.integers(4, 6)),  # over 4096 bytes
        ),
        "chunk_size": st.sampled_from([-1, MAX_CHUNK_ROWS, MAX_CHUNK_ROWS + 1, 2**31 - 1, -(2**31)]),
    }
    return field_mix(Synthetic, valid, nasty)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# Encodings a parser must survive: bad UTF-8 (a CESU-encoded surrogate, a stray continuation byte), lengths far
# past the end (2**31 - 1, 2**64 - 1), an 11-byte varint, unterminated and unopened groups, field number 0,
# wire types 6 and 7, and wrong wire types for known fields (kept as unknown fields: these parse).
SPECIAL_ENCODINGS = [
    b"\x0a\x03\xed\xa0\x80",
    b"\x0a\x02\xc3\x28",
    b"\x0a\x01\xff",
    b"\x0a" + varint(2**31 - 1) + b"xy",
    b"\x0a" + varint(2**64 - 1) + b"xy",
    b"\x10" + b"\xff" * 10 + b"\x01",
    b"\x0b",
    b"\x0c",
    b"\x00",
    b"\x0e\x01",
    b"\x0f\x01",
    b"\x12\x01x",
    b"\x08\x07\x10\x01",  # GenerateSynthetic: kind 7, count 1; Recommend: a varint user_id (unknown field), k 1
    b"\x10" + b"\xff" * 9 + b"\x01",  # field 2 = -1 as a 10-byte varint
    b"\x10\x80\x80\x80\x80\x10",  # field 2 = 2**32: truncated to 0 as int32
    b"\x1a\x00",  # a map entry with neither key nor value
    b"\x0a\x00" * 1000,  # a thousand empty entries of field 1 (events, items, or user_id again and again)
]


def raw_requests(typed: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Random bytes, and valid encodings cut short, with a byte changed, or with a nasty encoding spliced in."""
    encoded = typed.map(lambda request: request.SerializeToString())

    def mutate(data: bytes, where: float, how: int, splice: bytes) -> bytes:
        at = int(where * len(data))
        if how == 0:
            return data[:at]
        if how == 1 and data:
            at = min(at, len(data) - 1)
            return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        return data[:at] + splice + data[at:]

    mutated = st.builds(
        mutate,
        encoded,
        st.floats(0, 1),
        st.integers(0, 2),
        st.one_of(st.sampled_from(SPECIAL_ENCODINGS), st.binary(max_size=8)),
    )
    return st.one_of(st.binary(max_size=64), st.sampled_from(SPECIAL_ENCODINGS), mutated, mutated)


# ---------------------------------------------------------------------------------------------------------------
# The suite.


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    done = recsys("demo-data", "--out", str(data), "--users", "300", "--items", "120", "--mean-history", "15")
    assert done.returncode == 0, done.stderr
    config = root / "config.toml"
    config.write_text(TRAINING_CONFIG)
    done = recsys(
        "train",
        "--interactions",
        str(data / "interactions.csv"),
        "--items",
        str(data / "items.csv"),
        "--users",
        str(data / "users.csv"),
        "--config",
        str(config),
        "--out",
        str(root / "artifacts"),
    )
    assert done.returncode == 0, done.stderr
    return root / "artifacts"


@pytest.fixture(scope="module")
def catalogue(artifacts: Path) -> Catalogue:
    history = pd.read_parquet(artifacts / "current" / "histories.parquet")
    histories = {str(u): frozenset(map(str, items)) for u, items in history.groupby("user_id")["item_id"]}
    items = pd.read_parquet(artifacts / "current" / "catalog" / "items.parquet").astype(str)
    users = pd.read_parquet(artifacts / "current" / "catalog" / "users.parquet").astype(str)
    attributes = sorted(
        {
            (column, value)
            for frame in (items, users)
            for column in frame.columns[1:]
            for value in frame[column].unique()
        }
    )
    rows = items.drop(columns="item_id").head(len(SEEDED_ITEMS)).to_dict("records")
    examples = [{str(k): str(v) for k, v in row.items()} for row in rows]
    return Catalogue(histories, sorted(items["item_id"]), attributes, examples)


@dataclass
class Fuzzed:
    """The running suite and what was true of it before any fuzzing."""

    served: Served
    gateway: gateway_pb2_grpc.GatewayStub
    channel: grpc.Channel
    pids: dict[str, int]
    fixed_user: str
    fixed_answer: list[str]
    ledger: Ledger


def top_without(gateway: gateway_pb2_grpc.GatewayStub, user_id: str, left_out: set[str]) -> list[str]:
    """The user's top FIXED_TOP_K with `left_out` taken out of the answer (asked for enough to fill it)."""
    k = min(FIXED_TOP_K + len(left_out), MAX_K)
    reply = gateway.Recommend(gateway_pb2.RecommendRequest(user_id=user_id, k=k), timeout=CLIENT_TIMEOUT_S)
    assert not reply.degraded_stages, reply.degraded_stages
    return [item.item_id for item in reply.items if item.item_id not in left_out][:FIXED_TOP_K]


def seed_items(gateway: gateway_pb2_grpc.GatewayStub, catalogue: Catalogue) -> None:
    """Registers SEEDED_ITEMS (with the attributes of trained items) and waits until the candidates serve them."""
    items = [
        common_pb2.Item(item_id=i, attributes=a) for i, a in zip(SEEDED_ITEMS, catalogue.item_examples, strict=True)
    ]
    reply = gateway.RegisterItems(synthetic_pb2.RegisterItemsRequest(items=items), timeout=CLIENT_TIMEOUT_S)
    assert reply.registered == len(SEEDED_ITEMS)
    request = gateway_pb2.RecommendRequest(user_id=catalogue.user_ids[0], k=MAX_K)
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while not set(SEEDED_ITEMS) <= {i.item_id for i in gateway.Recommend(request, timeout=CLIENT_TIMEOUT_S).items}:
        assert time.monotonic() < deadline, "registered items never became recommendable"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fuzzed(artifacts: Path, catalogue: Catalogue) -> Iterator[Fuzzed]:
    served = serve(artifacts)
    try:
        with grpc.insecure_channel(served.address) as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            seed_items(gateway, catalogue)
            fixed_user = catalogue.user_ids[0]
            fixed_answer = top_without(gateway, fixed_user, set(SEEDED_ITEMS))
            assert len(fixed_answer) == FIXED_TOP_K
            pids = {name: served.service_pid(name) for name in SERVICES}
            ledger = Ledger()
            yield Fuzzed(served, gateway, channel, pids, fixed_user, fixed_answer, ledger)
            print(f"\nfuzz: {ledger.summary()}")
    finally:
        served.stop()


def fuzz_settings(examples: int) -> settings:
    # Derandomized: the same examples every run (and no example database), so a finding is reproducible.
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def run_fuzz(
    fuzzed: Fuzzed,
    name: str,
    strategy: st.SearchStrategy[Any],
    examples: int,
    explicit: Sequence[Any],
    probe: Callable[[Any, Findings], None],
) -> None:
    """`explicit` requests first (the cases every run must include), then `examples` drawn ones."""
    findings = Findings()
    started = time.monotonic()

    @given(strategy)
    def each(request: Any) -> None:
        probe(request, findings)

    for request in explicit:
        each = example(request)(each)
    fuzz_settings(examples)(each)()
    fuzzed.ledger.seconds[name] = time.monotonic() - started
    assert not findings.by_kind, f"{name}: {len(findings.by_kind)} kinds of failure\n{findings.report()}"


# ---------------------------------------------------------------------------------------------------------------
# Checks of OK answers, per RPC.


def recommend_ok(request: gateway_pb2.RecommendRequest, catalogue: Catalogue) -> Callable[[list[Any], bool], list[str]]:
    def check(replies: list[Any], complete: bool) -> list[str]:
        reply: gateway_pb2.RecommendResponse = replies[0]
        ids = [item.item_id for item in reply.items]
        scores = [item.score for item in reply.items]
        problems = []
        if not ids:
            problems.append("an empty OK answer")
        if len(ids) > request.k:
            problems.append("more than k items")
        # Trained items alone (registered ones come on top) fill k unless the user saw or excluded most of them.
        # Users under FUZZ_PREFIX may have recorded events this check does not know of.
        unavailable = (catalogue.histories.get(request.user_id, frozenset()) | set(request.exclude_item_ids)) & set(
            catalogue.item_ids
        )
        if not request.user_id.startswith(FUZZ_PREFIX) and len(ids) < min(
            request.k, len(catalogue.item_ids) - len(unavailable)
        ):
            problems.append("fewer than k items although more unseen, not excluded items exist")
        if len(set(ids)) != len(ids):
            problems.append("the same item twice")
        if set(ids) & set(request.exclude_item_ids):
            problems.append("an excluded item returned")
        if set(ids) & catalogue.histories.get(request.user_id, frozenset()):
            problems.append("an item the user has seen returned")
        if not all(math.isfinite(s) for s in scores):
            problems.append("a score that is not finite")
        elif any(a < b for a, b in itertools.pairwise(scores)):
            problems.append("items not best first")
        if not reply.model_version:
            problems.append("no model_version")
        return problems

    return check


def record_events_ok(request: gateway_pb2.RecordEventsRequest) -> Callable[[list[Any], bool], list[str]]:
    def check(replies: list[Any], complete: bool) -> list[str]:
        reply: gateway_pb2.RecordEventsResponse = replies[0]
        if reply.accepted < 0 or reply.duplicates < 0 or reply.accepted + reply.duplicates != len(request.events):
            return ["accepted + duplicates is not the number of events"]
        return []

    return check


def note_registered(ledger: Ledger, request: synthetic_pb2.RegisterItemsRequest, outcome: Outcome) -> None:
    """Ids that may have joined the catalogue: any answer but a refusal (a timeout may still have registered)."""
    if outcome.code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        ledger.registered.update(item.item_id for item in request.items)


def register_items_ok(request: synthetic_pb2.RegisterItemsRequest) -> Callable[[list[Any], bool], list[str]]:
    def check(replies: list[Any], complete: bool) -> list[str]:
        reply: synthetic_pb2.RegisterItemsResponse = replies[0]
        if not 0 <= reply.registered <= len(request.items):
            return ["registered is not between 0 and the number of items"]
        return []

    return check


def generate_synthetic_ok(request: synthetic_pb2.GenerateSyntheticRequest) -> Callable[[list[Any], bool], list[str]]:
    rows_of = {
        Synthetic.KIND_USERS: lambda r: len(r.users),
        Synthetic.KIND_ITEMS: lambda r: len(r.items),
        Synthetic.KIND_INTERACTIONS: lambda r: len(r.interactions),
    }

    def check(replies: list[Any], complete: bool) -> list[str]:
        rows = sum(rows_of[request.kind](reply) for reply in replies)
        if rows > request.count or (complete and rows != request.count):
            return [f"{rows} rows streamed for count={request.count} (stream {'complete' if complete else 'cut'})"]
        if any(rows_of[request.kind](reply) == 0 for reply in replies):
            return ["a streamed message without rows"]
        return []

    return check


# ---------------------------------------------------------------------------------------------------------------
# The tests: one per RPC with typed requests, one with raw bytes for every method, then the suite's health.


def test_recommend_answers_every_request_properly(fuzzed: Fuzzed, catalogue: Catalogue) -> None:
    def probe(request: gateway_pb2.RecommendRequest, findings: Findings) -> None:
        outcome = call_unary(fuzzed.gateway.Recommend, request)
        fuzzed.ledger.calls["Recommend"] += 1
        check_outcome(
            "Recommend",
            shorten(request),
            recommend_verdict(request),
            outcome,
            findings,
            fuzzed.ledger,
            recommend_ok(request, catalogue),
        )

    user = catalogue.user_ids[1]
    explicit = [
        *(gateway_pb2.RecommendRequest(user_id=user, k=k) for k in (0, -1, MAX_K + 1, 2**31 - 1, -(2**31))),
        *(gateway_pb2.RecommendRequest(user_id=u, k=10) for u in ("", "a\x00b", "\u200b", "x" * 257, EMOJI * 65)),
        gateway_pb2.RecommendRequest(user_id=user, k=10, user_attributes={f"a{i}": "x" for i in range(65)}),
        gateway_pb2.RecommendRequest(user_id=user, k=10, user_attributes={"\x00": "x", "country": "\x1b"}),
        gateway_pb2.RecommendRequest(user_id=user, k=10, exclude_item_ids=["", "\ufeff"]),
        gateway_pb2.RecommendRequest(user_id=user, k=10, exclude_item_ids=SEEDED_ITEMS),
    ]
    run_fuzz(fuzzed, "Recommend", recommend_requests(catalogue), RECOMMEND_EXAMPLES, explicit, probe)


def test_record_events_answers_every_request_properly(fuzzed: Fuzzed, catalogue: Catalogue) -> None:
    def probe(request: gateway_pb2.RecordEventsRequest, findings: Findings) -> None:
        assert all(e.user_id.startswith(FUZZ_PREFIX) or not e.user_id for e in request.events)
        outcome = call_unary(fuzzed.gateway.RecordEvents, request)
        fuzzed.ledger.calls["RecordEvents"] += 1
        check_outcome(
            "RecordEvents",
            shorten(request),
            record_events_verdict(request),
            outcome,
            findings,
            fuzzed.ledger,
            record_events_ok(request),
        )

    now = int(time.time())

    def one(**fields: Any) -> gateway_pb2.RecordEventsRequest:
        event = common_pb2.Event(user_id=f"{FUZZ_PREFIX}explicit", item_id=catalogue.item_ids[0], timestamp=now)
        event.MergeFrom(common_pb2.Event(**fields))
        return gateway_pb2.RecordEventsRequest(events=[event])

    explicit = [
        gateway_pb2.RecordEventsRequest(),
        *(one(timestamp=t) for t in (-1, now + 2 * 86_400, MAX_TIMESTAMP + 1, 2**63 - 1, now * 1000)),
        *(one(rating=r) for r in (math.nan, math.inf, -math.inf)),
        one(item_id="\u202eevil"),
        one(event_id="\x00"),
        gateway_pb2.RecordEventsRequest(events=[one().events[0]] * 1001),
    ]
    run_fuzz(fuzzed, "RecordEvents", record_events_requests(catalogue), RECORD_EVENTS_EXAMPLES, explicit, probe)


def test_register_items_answers_every_request_properly(fuzzed: Fuzzed, catalogue: Catalogue) -> None:
    def probe(request: synthetic_pb2.RegisterItemsRequest, findings: Findings) -> None:
        outcome = call_unary(fuzzed.gateway.RegisterItems, request)
        fuzzed.ledger.calls["RegisterItems"] += 1
        note_registered(fuzzed.ledger, request, outcome)
        check_outcome(
            "RegisterItems",
            shorten(request),
            register_items_verdict(request),
            outcome,
            findings,
            fuzzed.ledger,
            register_items_ok(request),
        )

    def one(item_id: str, attributes: dict[str, str]) -> synthetic_pb2.RegisterItemsRequest:
        return synthetic_pb2.RegisterItemsRequest(items=[common_pb2.Item(item_id=item_id, attributes=attributes)])

    explicit = [
        synthetic_pb2.RegisterItemsRequest(),
        one("\ufeff", {}),
        one(f"{FUZZ_PREFIX}explicit", {"\x00": "x"}),
        one(f"{FUZZ_PREFIX}explicit", {"genres": "\x07"}),
        synthetic_pb2.RegisterItemsRequest(items=[common_pb2.Item(item_id=f"{FUZZ_PREFIX}explicit")] * 1001),
    ]
    run_fuzz(fuzzed, "RegisterItems", register_items_requests(catalogue), REGISTER_ITEMS_EXAMPLES, explicit, probe)


def test_generate_synthetic_answers_every_request_properly(fuzzed: Fuzzed, catalogue: Catalogue) -> None:
    def probe(request: synthetic_pb2.GenerateSyntheticRequest, findings: Findings) -> None:
        outcome = call_stream(fuzzed.gateway.GenerateSynthetic, request)
        fuzzed.ledger.calls["GenerateSynthetic"] += 1
        check_outcome(
            "GenerateSynthetic",
            shorten(request),
            generate_synthetic_verdict(request),
            outcome,
            findings,
            fuzzed.ledger,
            generate_synthetic_ok(request),
        )

    explicit = [
        *(Synthetic(kind=kind, count=1) for kind in (Synthetic.KIND_UNSPECIFIED, 4, 7, -1)),  # type: ignore[arg-type]
        *(Synthetic(kind=Synthetic.KIND_USERS, count=count) for count in (0, -1, MAX_SYNTHETIC_ROWS + 1)),
        *(Synthetic(kind=Synthetic.KIND_USERS, count=1, chunk_size=chunk) for chunk in (-1, MAX_CHUNK_ROWS + 1)),
        Synthetic(kind=Synthetic.KIND_USERS, count=1, conditions={f"c{i}": "v" * 1000 for i in range(5)}),
        Synthetic(kind=Synthetic.KIND_INTERACTIONS, count=MAX_SYNTHETIC_ROWS),  # valid: the reader cancels it
    ]
    strategy = generate_synthetic_requests(catalogue)
    run_fuzz(fuzzed, "GenerateSynthetic", strategy, GENERATE_SYNTHETIC_EXAMPLES, explicit, probe)


@dataclass(frozen=True)
class Method:
    """One Gateway method as raw bytes: its request type, oracle, OK check and strategy for typed requests."""

    name: str
    request_type: type[protobuf_message.Message]
    reply_type: type[protobuf_message.Message]
    streaming: bool
    verdict: Callable[[Any], Verdict]
    ok: Callable[[Any], Callable[[list[Any], bool], list[str]]]
    typed: st.SearchStrategy[Any]

    @property
    def path(self) -> str:
        return f"/recsys.v1.Gateway/{self.name}"


def gateway_methods(catalogue: Catalogue) -> list[Method]:
    return [
        Method(
            "Recommend",
            gateway_pb2.RecommendRequest,
            gateway_pb2.RecommendResponse,
            False,
            recommend_verdict,
            lambda r: recommend_ok(r, catalogue),
            recommend_requests(catalogue),
        ),
        Method(
            "RecordEvents",
            gateway_pb2.RecordEventsRequest,
            gateway_pb2.RecordEventsResponse,
            False,
            record_events_verdict,
            record_events_ok,
            record_events_requests(catalogue),
        ),
        Method(
            "RegisterItems",
            synthetic_pb2.RegisterItemsRequest,
            synthetic_pb2.RegisterItemsResponse,
            False,
            register_items_verdict,
            register_items_ok,
            register_items_requests(catalogue),
        ),
        Method(
            "GenerateSynthetic",
            synthetic_pb2.GenerateSyntheticRequest,
            synthetic_pb2.GenerateSyntheticResponse,
            True,
            generate_synthetic_verdict,
            generate_synthetic_ok,
            generate_synthetic_requests(catalogue),
        ),
    ]


def send_raw(fuzzed: Fuzzed, method: Method, data: bytes) -> Outcome:
    if method.streaming:
        outcome = call_stream(fuzzed.channel.unary_stream(method.path), data)
    else:
        outcome = call_unary(fuzzed.channel.unary_unary(method.path), data)
    outcome.replies = [method.reply_type.FromString(reply) for reply in outcome.replies]
    fuzzed.ledger.calls[f"{method.name} (raw bytes)"] += 1
    return outcome


def probe_raw(fuzzed: Fuzzed, catalogue: Catalogue, method: Method, data: bytes, findings: Findings) -> None:
    """Bytes the server cannot parse get grpc.aio's own parse-failure status; bytes it can are judged as the
    request they parse to."""
    if len(data) > DEFAULT_MAX_MESSAGE_BYTES:
        outcome = send_raw(fuzzed, method, data)
        if outcome.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            findings.add(f"{method.name} (raw bytes): over 4 MiB not RESOURCE_EXHAUSTED", shorten(data), outcome)
        return
    try:
        request = method.request_type.FromString(data)
    except protobuf_message.DecodeError:
        request = None
    # Written events stay off the trained users, whose answers the other checks rely on.
    if isinstance(request, gateway_pb2.RecordEventsRequest) and any(
        e.user_id in catalogue.histories for e in request.events
    ):
        return
    outcome = send_raw(fuzzed, method, data)
    rpc, text = f"{method.name} (raw bytes)", shorten(data)
    if isinstance(request, synthetic_pb2.RegisterItemsRequest):
        note_registered(fuzzed.ledger, request, outcome)
    if request is not None:
        check_outcome(rpc, text, method.verdict(request), outcome, findings, fuzzed.ledger, method.ok(request))
        return
    fuzzed.ledger.answers[f"{rpc} {outcome.code.name} (unparsable)"] += 1
    expected = PARSE_FAILURE_DETAILS.format(method.request_type.DESCRIPTOR.full_name)
    if (outcome.code, outcome.details) != (PARSE_FAILURE_CODE, expected):
        findings.add(f"{rpc}: unparsable bytes not answered as grpc.aio does", text, outcome)
    if TRACEBACK.search(outcome.details):
        findings.add(f"{rpc}: stack trace text in the status details", text, outcome)
    if outcome.elapsed_s >= HANG_S:
        findings.add(f"{rpc}: hang", text, outcome)


def fuzz_raw(fuzzed: Fuzzed, catalogue: Catalogue, method: Method, findings: Findings) -> None:
    @fuzz_settings(RAW_EXAMPLES_PER_METHOD)
    @given(raw_requests(method.typed))
    def each(data: bytes) -> None:
        probe_raw(fuzzed, catalogue, method, data, findings)

    each()


def test_raw_bytes_get_a_status_from_every_method(fuzzed: Fuzzed, catalogue: Catalogue) -> None:
    findings = Findings()
    started = time.monotonic()
    for method in gateway_methods(catalogue):
        # Over the server's 4 MiB limit (refused by gRPC before parsing), and exactly at it (parsed, then judged).
        over = DEFAULT_MAX_MESSAGE_BYTES + 1
        probe_raw(fuzzed, catalogue, method, b"\x0a" + varint(over) + b"x" * over, findings)
        at_limit = DEFAULT_MAX_MESSAGE_BYTES - 1 - len(varint(DEFAULT_MAX_MESSAGE_BYTES))
        probe_raw(fuzzed, catalogue, method, b"\x0a" + varint(at_limit) + b"x" * at_limit, findings)
        fuzz_raw(fuzzed, catalogue, method, findings)
    fuzzed.ledger.seconds["raw bytes"] = time.monotonic() - started
    assert not findings.by_kind, f"raw bytes: {len(findings.by_kind)} kinds of failure\n{findings.report()}"


def test_suite_survives_the_fuzzing_unchanged(fuzzed: Fuzzed, catalogue: Catalogue) -> None:
    with grpc.insecure_channel(fuzzed.served.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "recsys.v1.Gateway"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    assert fuzzed.served.process.poll() is None, "recsys serve exited"
    now = {name: fuzzed.served.service_pid(name) for name in SERVICES}
    assert now == fuzzed.pids, "a service process was restarted"
    assert all(alive(pid) for pid in now.values())
    # Items registered online join every user's candidates: left out, the answer is the one before.
    registered = {*SEEDED_ITEMS, *fuzzed.ledger.registered} - set(catalogue.item_ids)
    assert top_without(fuzzed.gateway, fuzzed.fixed_user, registered) == fuzzed.fixed_answer
