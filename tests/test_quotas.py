"""Per-client rate limits and per-method concurrency limits: the token buckets on their own (a fake clock),
then in front of the real Gateway service over real gRPC connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from services.common.auth import authentication, new_api_key
from services.common.quotas import (
    DEFAULT_CONCURRENCY,
    QuotaInterceptor,
    QuotaSettings,
    TokenBuckets,
    parse_concurrency,
    peer_host,
)
from services.common.settings import EnvReader
from tests.gateway_harness import HOLD_OPEN, bearer, recommend, serve_gateway, synthetic


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def quotas(**env: str) -> QuotaInterceptor:
    reader = EnvReader(env)
    interceptor = QuotaSettings.read(reader).interceptor()
    reader.finish()
    assert interceptor is not None
    return interceptor


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return retry.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo in the status details")


# --- token buckets ----------------------------------------------------------------------------------------


def test_a_bucket_admits_its_burst_then_says_when_it_refills() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=4.0, burst=2, max_clients=10, clock=clock)
    assert buckets.take("shop") == 0.0
    assert buckets.take("shop") == 0.0
    assert buckets.take("shop") == pytest.approx(0.25)
    clock.now += 0.125
    assert buckets.take("shop") == pytest.approx(0.125)  # half a token back
    clock.now += 0.125
    assert buckets.take("shop") == 0.0
    clock.now += 3600.0  # refills to the burst, never past it
    assert [buckets.take("shop") for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take("shop") > 0.0
    assert buckets.take("ops") == 0.0  # every client has its own bucket


def test_buckets_are_bounded_least_recently_used_first() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_clients=3, clock=clock)
    for client in ("a", "b", "c"):
        buckets.take(client)
    assert buckets.take("a") > 0.0  # a is used again: b is now the least recent
    buckets.take("d")
    assert "b" not in buckets and "a" in buckets and len(buckets) == 3
    assert buckets.take("a") > 0.0  # a's state survived the eviction of b
    for number in range(10_000):  # a flood of made-up client ids
        buckets.take(f"flood-{number}")
    assert len(buckets) == 3


def test_peer_addresses_lose_their_port() -> None:
    assert peer_host("ipv4:10.0.0.7:51234") == "10.0.0.7"
    assert peer_host("ipv6:[::1]:51234") == "::1"
    assert peer_host("ipv6:%5B2001:db8::1%5D:443") == "2001:db8::1"
    assert peer_host("unix:/run/gateway.sock") == "unix:/run/gateway.sock"


def test_quota_settings() -> None:
    assert parse_concurrency("GenerateSynthetic=1, Recommend=0") == {
        **DEFAULT_CONCURRENCY,
        "GenerateSynthetic": 1,
        "Recommend": 0,
    }
    for text, reason in [("Nope=3", "'Nope=3' is not"), ("Recommend", "is not"), ("Recommend=-1", "0..")]:
        with pytest.raises(ValueError, match=reason):
            parse_concurrency(text)
    env = EnvReader({"RECSYS_QUOTA_RPS": "2.5", "RECSYS_CONCURRENCY_LIMITS": "Recomend=3"})
    settings = QuotaSettings.read(env)
    assert settings.burst == 3  # default: one second's worth
    assert env.problems == [
        "RECSYS_CONCURRENCY_LIMITS: 'Recomend=3' is not <method>=<limit> with a method of "
        "Recommend, RecordEvents, RegisterItems, GenerateSynthetic"
    ]
    all_off = ",".join(f"{name}=0" for name in DEFAULT_CONCURRENCY)
    assert QuotaSettings.read(EnvReader({"RECSYS_CONCURRENCY_LIMITS": all_off})).interceptor() is None


# --- over gRPC --------------------------------------------------------------------------------------------


async def test_a_caller_over_its_rate_gets_resource_exhausted_with_retry_info_then_refills() -> None:
    async with serve_gateway([quotas(RECSYS_QUOTA_RPS="2", RECSYS_QUOTA_BURST="2")]) as gateway:
        stub = gateway.stub()
        await stub.Recommend(recommend(), timeout=5)
        await stub.Recommend(recommend(), timeout=5)
        error = await rpc_error(stub.Recommend(recommend(), timeout=5))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit exceeded: address 127.0.0.1 may make 2 calls a second" in error.details()
        delay = retry_delay_s(error)
        assert 0.0 < delay <= 0.5
        assert await gateway.health() == health_pb2.HealthCheckResponse.SERVING  # health is never limited
        await asyncio.sleep(delay)
        assert (await stub.Recommend(recommend(), timeout=5)).items[0].item_id == "i1"


async def test_authenticated_clients_have_buckets_of_their_own(tmp_path: Path) -> None:
    shop, shop_line = new_api_key("shop", ["recommend"])
    ops, ops_line = new_api_key("ops", ["admin"])
    path = tmp_path / "api-keys"
    path.write_text(f"{shop_line}\n{ops_line}\n")
    auth = authentication(EnvReader({"RECSYS_AUTH": "api-keys", "RECSYS_AUTH_API_KEYS": str(path)}))
    assert auth is not None
    async with serve_gateway([auth, quotas(RECSYS_QUOTA_RPS="0.5", RECSYS_QUOTA_BURST="1")]) as gateway:
        stub = gateway.stub()
        await stub.Recommend(recommend(), metadata=bearer(shop), timeout=5)
        error = await rpc_error(stub.Recommend(recommend(), metadata=bearer(shop), timeout=5))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "client shop" in error.details()
        assert 1.0 < retry_delay_s(error) <= 2.0
        # Same address, another client: its own bucket.
        assert (await stub.Recommend(recommend(), metadata=bearer(ops), timeout=5)).model_version == "ops"


async def _wait_for(condition: Any, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_streams_at_their_limit_are_refused_at_once_and_never_starve_recommend() -> None:
    limits = quotas(RECSYS_CONCURRENCY_LIMITS="GenerateSynthetic=2,Recommend=192")
    async with serve_gateway([limits]) as gateway:
        stub = gateway.stub()
        streams = [stub.GenerateSynthetic(synthetic(seed=HOLD_OPEN), timeout=30) for _ in range(2)]
        for stream in streams:
            await stream.read()  # its first chunk: the stream is running and holds its slot
        assert limits.running("GenerateSynthetic") == 2

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GenerateSynthetic(synthetic(seed=HOLD_OPEN), timeout=30).read()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "GenerateSynthetic is at its limit of 2 concurrent calls" in raised.value.details()
        assert time.monotonic() - started < 1.0  # refused, not queued

        replies = await asyncio.gather(*(stub.Recommend(recommend(), timeout=5) for _ in range(50)))
        assert len(replies) == 50

        streams[0].cancel()  # a cancelled stream gives its slot back
        await _wait_for(lambda: limits.running("GenerateSynthetic") == 1)
        assert gateway.servicer.streams_open == 1
        third = stub.GenerateSynthetic(synthetic(seed=HOLD_OPEN), timeout=30)
        await third.read()
        assert limits.running("GenerateSynthetic") == 2

        gateway.servicer.let_go.set()  # streams that end give theirs back too
        for stream in (streams[1], third):
            assert await stream.code() == grpc.StatusCode.OK
        await _wait_for(lambda: limits.running("GenerateSynthetic") == 0)


async def test_reflection_a_bidirectional_stream_passes_through_the_gate() -> None:
    async with serve_gateway([quotas(RECSYS_QUOTA_RPS="0.01", RECSYS_QUOTA_BURST="1")]) as gateway:

        def list_services() -> list[str]:
            # The reflection client is synchronous: run it off the loop that serves it.
            with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                return list(ProtoReflectionDescriptorDatabase(channel).get_services())

        assert "recsys.v1.Gateway" in await asyncio.to_thread(list_services)
        # It took the caller's one token.
        error = await rpc_error(gateway.stub().Recommend(recommend(), timeout=5))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
