"""How much each caller may ask of the public gateway: a rate per client and a concurrency limit per method.

Rate: a token bucket per client, refilled at RECSYS_QUOTA_RPS calls a second and holding at most
RECSYS_QUOTA_BURST (0: one second's worth); RECSYS_QUOTA_RPS=0 (the default) turns it off. The client is the
authenticated client id (services.common.auth), else the caller's IP address without its port (a reconnect
is the same caller; behind a proxy, every caller is the proxy). A call over the rate is answered at once with
RESOURCE_EXHAUSTED and a google.rpc.RetryInfo saying when the next one will be admitted. At most
RECSYS_QUOTA_MAX_CLIENTS buckets are kept and the least recently used goes first, so a flood of client ids
cannot grow memory without bound; a dropped bucket comes back full, which is what an idle client's bucket
would be anyway.

Concurrency: RECSYS_CONCURRENCY_LIMITS, e.g. `GenerateSynthetic=2,RegisterItems=4,Recommend=192`, overrides
DEFAULT_CONCURRENCY per Gateway method (0: no limit of its own). A method at its limit answers
RESOURCE_EXHAUSTED at once instead of queueing, and a stream holds its slot until it ends or is cancelled,
so long synthetic-data streams can never take the slots Recommend needs.

Health checks are never limited.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from recsys.v1 import gateway_pb2
from services.common.auth import HEALTH_METHODS, Gate, GatingInterceptor, authentication, current_client_id
from services.common.errors import ResourceExhausted
from services.common.settings import ENV_PREFIX, EnvReader

_GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
# Method name -> the path gRPC calls it by.
GATEWAY_METHODS: Mapping[str, str] = {
    method.name: f"/{_GATEWAY.full_name}/{method.name}" for method in _GATEWAY.methods
}
# Together below the server's default RECSYS_MAX_CONCURRENT_RPCS (256), so health probes always find room.
DEFAULT_CONCURRENCY: Mapping[str, int] = {
    "Recommend": 192,
    "RecordEvents": 48,
    "RegisterItems": 4,
    "GenerateSynthetic": 2,
}
MAX_CONCURRENCY = 100_000


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class QuotaExceeded(ResourceExhausted):
    """RESOURCE_EXHAUSTED with what was exceeded (QuotaFailure) and, when known, when to retry (RetryInfo)."""

    def __init__(self, message: str, subject: str, retry_delay_s: float | None = None) -> None:
        super().__init__(message)
        self.subject = subject
        self.retry_delay_s = retry_delay_s

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.QuotaFailure(
            violations=[error_details_pb2.QuotaFailure.Violation(subject=self.subject, description=self.message)]
        )
        if self.retry_delay_s is None:
            return [_packed(failure)]
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(math.ceil(self.retry_delay_s * 1e9))
        return [_packed(error_details_pb2.RetryInfo(retry_delay=delay)), _packed(failure)]


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    """One token bucket per client, at most `max_clients` of them (least recently used dropped first)."""

    def __init__(self, rate: float, burst: int, max_clients: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, client: str) -> bool:
        return client in self._buckets

    def take(self, client: str) -> float:
        """Take a token from the client's bucket: 0.0 if it had one, else the seconds until it will."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class MethodSlots:
    """The calls of one method running now, against its limit."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.running = 0


def peer_host(peer: str) -> str:
    """The caller's address without its port: `ipv4:10.0.0.7:51234` -> `10.0.0.7`, `ipv6:[::1]:5` -> `::1`."""
    kind, _, address = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        host = address.rpartition(":")[0]
        return host.strip("[]") or address
    return peer


def _caller(context: grpc.aio.ServicerContext) -> str:
    client_id = current_client_id()
    return f"client {client_id}" if client_id is not None else f"address {peer_host(context.peer())}"


class _QuotaGate:
    def __init__(self, buckets: TokenBuckets | None, slots: MethodSlots | None) -> None:
        self._buckets = buckets
        self._slots = slots

    async def admit(self, context: grpc.aio.ServicerContext) -> MethodSlots | None:
        buckets, slots = self._buckets, self._slots
        if buckets is not None:
            caller = _caller(context)
            wait_s = buckets.take(caller)
            if wait_s > 0.0:
                raise QuotaExceeded(
                    f"rate limit exceeded: {caller} may make {buckets.rate:g} calls a second "
                    f"(bursts of {buckets.burst}); retry in {wait_s:.3f} s",
                    subject=caller,
                    retry_delay_s=wait_s,
                )
        if slots is None:
            return None
        if slots.running >= slots.limit:
            raise QuotaExceeded(
                f"{slots.name} is at its limit of {slots.limit} concurrent calls; retry later",
                subject=f"method {slots.name}",
            )
        slots.running += 1
        return slots

    def release(self, admitted: MethodSlots | None) -> None:
        if admitted is not None:
            admitted.running -= 1


class QuotaInterceptor(GatingInterceptor):
    """Rate per client and concurrency per method, checked on every call but health. Goes after the
    authentication interceptor, whose client id it counts by."""

    def __init__(self, buckets: TokenBuckets | None, concurrency: Mapping[str, int]) -> None:
        """`concurrency`: Gateway method name -> limit (0: none)."""
        super().__init__()
        self.buckets = buckets
        self._slots = {
            GATEWAY_METHODS[name]: MethodSlots(name, limit) for name, limit in concurrency.items() if limit > 0
        }

    def running(self, name: str) -> int:
        """Calls of the Gateway method `name` holding a slot now (0 where it has no limit)."""
        slots = self._slots.get(GATEWAY_METHODS[name])
        return 0 if slots is None else slots.running

    def gate_for(self, method: str) -> Gate | None:
        slots = self._slots.get(method)
        if method.startswith(HEALTH_METHODS) or (self.buckets is None and slots is None):
            return None
        return _QuotaGate(self.buckets, slots)


def parse_concurrency(text: str) -> dict[str, int]:
    """`Name=limit,...` over DEFAULT_CONCURRENCY; ValueError names what is wrong."""
    limits = dict(DEFAULT_CONCURRENCY)
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = (piece.strip() for piece in part.partition("="))
        if not sep or name not in GATEWAY_METHODS:
            raise ValueError(f"{part.strip()!r} is not <method>=<limit> with a method of {', '.join(GATEWAY_METHODS)}")
        if not value.isdigit() or int(value) > MAX_CONCURRENCY:
            raise ValueError(f"{name}={value!r}: the limit must be 0..{MAX_CONCURRENCY} (0: none)")
        limits[name] = int(value)
    return limits


@dataclass(frozen=True)
class QuotaSettings:
    rps: float
    burst: int
    max_clients: int
    concurrency: Mapping[str, int]

    @classmethod
    def read(cls, env: EnvReader) -> QuotaSettings:
        rps = env.number("QUOTA_RPS", 0.0, 0.0, 1_000_000.0)
        burst = env.integer("QUOTA_BURST", 0, 0, 1_000_000)
        max_clients = env.integer("QUOTA_MAX_CLIENTS", 10_000, 1, 10_000_000)
        try:
            concurrency = parse_concurrency(env.string("CONCURRENCY_LIMITS", ""))
        except ValueError as error:
            env.problems.append(f"{ENV_PREFIX}CONCURRENCY_LIMITS: {error}")
            concurrency = dict(DEFAULT_CONCURRENCY)
        return cls(rps, burst or max(1, math.ceil(rps)), max_clients, concurrency)

    def interceptor(self) -> QuotaInterceptor | None:
        buckets = TokenBuckets(self.rps, self.burst, self.max_clients) if self.rps > 0 else None
        if buckets is None and not any(self.concurrency.values()):
            return None
        return QuotaInterceptor(buckets, self.concurrency)


def gateway_interceptors(env: EnvReader) -> list[grpc.aio.ServerInterceptor]:
    """The public gateway's own interceptors, in order: authentication (who), then quotas (how much, by who)."""
    chain: list[grpc.aio.ServerInterceptor] = []
    auth = authentication(env)
    if auth is not None:
        chain.append(auth)
    quotas = QuotaSettings.read(env).interceptor()
    if quotas is not None:
        chain.append(quotas)
    return chain
