"""SyntheticService: proto ↔ domain only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import grpc

from recsys.v1 import common_pb2, synthetic_pb2, synthetic_pb2_grpc
from services.common.encoding import validate_synthetic_request
from services.common.server import Registration
from services.common.service import CoreSlot
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES, EnvReader, ServerSettings
from services.synthetic.core import Chunk, SyntheticCore, SyntheticQuery

DEFAULT_MAX_STREAM_S = 600.0


@dataclass(frozen=True)
class StreamLimits:
    """What one GenerateSynthetic stream may take: its longest run, whatever deadline the caller set (or none),
    and the largest message it may send (the server's own limit)."""

    max_stream_s: float = DEFAULT_MAX_STREAM_S
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    @classmethod
    def read(cls, env: EnvReader, settings: ServerSettings) -> StreamLimits:
        max_stream_s = env.number("SYNTHETIC_MAX_STREAM_S", DEFAULT_MAX_STREAM_S, 1.0, 86_400.0)
        return cls(max_stream_s, settings.max_message_bytes)


def _response(chunk: Chunk) -> synthetic_pb2.GenerateSyntheticResponse:
    users, items, rows = chunk
    return synthetic_pb2.GenerateSyntheticResponse(
        users=[common_pb2.User(user_id=u, attributes=a) for u, a in users],
        items=[common_pb2.Item(item_id=i, attributes=a) for i, a in items],
        interactions=[common_pb2.Event(user_id=u, item_id=i, timestamp=t) for u, i, t in rows],
    )


def _encoded_size(chunk: Chunk) -> int:
    return _response(chunk).ByteSize()


class SyntheticServicer(synthetic_pb2_grpc.SyntheticServiceServicer, CoreSlot[SyntheticCore]):
    def __init__(self, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()

    async def GenerateSynthetic(
        self, request: synthetic_pb2.GenerateSyntheticRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        # Callable directly, not only through the gateway: the request is checked here as well.
        conditions = dict(request.conditions)
        kind = validate_synthetic_request(request, conditions)
        query = SyntheticQuery(kind, request.count, request.seed, conditions, request.chunk_size)
        chunks = self.ready_core.stream(query, _encoded_size, self.limits.max_message_bytes, self.limits.max_stream_s)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield _response(chunk)

    async def RegisterItems(
        self, request: synthetic_pb2.RegisterItemsRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.RegisterItemsResponse:
        items = [(item.item_id, dict(item.attributes)) for item in request.items]
        return synthetic_pb2.RegisterItemsResponse(registered=await self.ready_core.register(items))

    async def GenerateHistory(
        self, request: synthetic_pb2.GenerateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.GenerateHistoryResponse:
        core = self.ready_core
        history = await core.cold_history(request.user_id, dict(request.attributes), request.length)
        return synthetic_pb2.GenerateHistoryResponse(
            history=[
                common_pb2.HistoryEntry(item_id=item_id, item_index=index, weight=weight)
                for item_id, index, weight in history
            ],
            model_version=core.version,
        )


def registration(servicer: SyntheticServicer) -> Registration:
    return Registration(
        synthetic_pb2_grpc.add_SyntheticServiceServicer_to_server,
        servicer,
        synthetic_pb2.DESCRIPTOR.services_by_name["SyntheticService"].full_name,
    )
