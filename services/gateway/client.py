"""How a backend connects to the gateway: plaintext on a local port, or TLS with a bearer token.

    from recsys.v1 import gateway_pb2, gateway_pb2_grpc
    from services.gateway.client import GatewayConnection

    connection = GatewayConnection("gateway.example:443", ca=Path("ca.crt"), token=os.environ["RECSYS_TOKEN"])
    with connection.channel() as channel:
        reply = gateway_pb2_grpc.GatewayStub(channel).Recommend(
            gateway_pb2.RecommendRequest(user_id="42", k=10), timeout=1.0
        )

The token travels as `authorization: Bearer <token>` on every call, and only over TLS: a connection with a
token is always a TLS channel, so a token is never sent in the clear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

Metadata = tuple[tuple[str, str | bytes], ...]


def _with_token(metadata: Metadata | None, token: str) -> Metadata:
    return (*(metadata or ()), ("authorization", f"Bearer {token}"))


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the token to every call's metadata on a TLS channel. grpc's call credentials would do the same
    through a plugin that starts a thread per call: measured, that is most of the client's cost of TLS with
    a token (bench/secure_bench.py)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self._token),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Metadata | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _AioBearerToken(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """The same for grpc.aio channels."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(tuple(details.metadata or ()), self._token)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)

    async def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


@dataclass(frozen=True)
class GatewayConnection:
    target: str
    # The CA that signed the gateway's certificate; None with a token: the system's trust store.
    ca: Path | None = None
    token: str | None = None
    # Connect over TLS even without a CA or token (a gateway with a publicly trusted certificate).
    tls: bool = False

    @property
    def secure(self) -> bool:
        # A token makes the channel TLS: it is never sent in the clear.
        return self.tls or self.ca is not None or self.token is not None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes() if self.ca else None)

    def channel(self, options: list[tuple[str, int | str]] | None = None) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(self.target, options=options)
        channel = grpc.secure_channel(self.target, self.credentials(), options=options)
        return channel if self.token is None else grpc.intercept_channel(channel, _BearerToken(self.token))

    def aio_channel(self, options: list[tuple[str, int | str]] | None = None) -> grpc.aio.Channel:
        if not self.secure:
            return grpc.aio.insecure_channel(self.target, options=options)
        interceptors = [] if self.token is None else [_AioBearerToken(self.token)]
        return grpc.aio.secure_channel(self.target, self.credentials(), options=options, interceptors=interceptors)
