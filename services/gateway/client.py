"""How a backend connects to the gateway: plaintext on a local port, or TLS with a bearer token.

    from recsys.v1 import gateway_pb2, gateway_pb2_grpc
    from services.gateway.client import GatewayConnection

    connection = GatewayConnection("gateway.example:443", ca=Path("ca.crt"), token=os.environ["RECSYS_TOKEN"])
    with connection.channel() as channel:
        reply = gateway_pb2_grpc.GatewayStub(channel).Recommend(
            gateway_pb2.RecommendRequest(user_id="42", k=10), timeout=1.0
        )

The token travels as `authorization: Bearer <token>` on every call, and only over TLS: grpc refuses call
credentials on a plaintext channel, so a token is never sent in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


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
        return self.tls or self.ca is not None or self.token is not None

    def credentials(self) -> grpc.ChannelCredentials:
        transport = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes() if self.ca else None)
        if self.token is None:
            return transport
        return grpc.composite_channel_credentials(transport, grpc.access_token_call_credentials(self.token))

    def channel(self, options: list[tuple[str, int | str]] | None = None) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(self.target, options=options)
        return grpc.secure_channel(self.target, self.credentials(), options=options)

    def aio_channel(self, options: list[tuple[str, int | str]] | None = None) -> grpc.aio.Channel:
        if not self.secure:
            return grpc.aio.insecure_channel(self.target, options=options)
        return grpc.aio.secure_channel(self.target, self.credentials(), options=options)
