"""SyntheticService: proto ↔ domain only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from recsys.v1 import common_pb2, synthetic_pb2, synthetic_pb2_grpc
from services.common.errors import DeadlineExceeded
from services.common.server import Registration
from services.common.service import CoreSlot
from services.common.settings import EnvReader, ServerSettings
from services.common.validation import DEFAULT_MAX_MESSAGE_BYTES, SYNTHETIC_KINDS, validate_synthetic
from services.synthetic.core import Chunk, SyntheticCore, chunk_rows

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


class SyntheticServicer(synthetic_pb2_grpc.SyntheticServiceServicer, CoreSlot[SyntheticCore]):
    def __init__(self, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()

    async def GenerateSynthetic(
        self, request: synthetic_pb2.GenerateSyntheticRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        # Callable directly, not only through the gateway: the request is checked here as well.
        conditions = dict(request.conditions)
        validate_synthetic(request.kind, request.count, request.chunk_size, conditions)
        core = self.ready_core
        kind = SYNTHETIC_KINDS[request.kind]
        # The widest row's encoded size bounds every row's, so `rows` of them always fit one message.
        row_bytes = _response(core.widest_chunk(kind, request.count, request.seed, conditions)).ByteSize()
        rows = chunk_rows(request.chunk_size, row_bytes, self.limits.max_message_bytes)
        # The chunks are generated off the event loop, one at a time, so a slow reader holds back generation
        # instead of piling rows up in memory.
        chunks = core.generate(kind, request.count, request.seed, conditions, rows)
        ends = time.monotonic() + self.limits.max_stream_s
        sent = 0
        while True:
            remaining = ends - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(asyncio.to_thread(next, chunks, None), remaining)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"GenerateSynthetic stopped at its maximum duration of {self.limits.max_stream_s:g} s after "
                    f"{sent} messages; ask for fewer rows per call"
                ) from None
            if chunk is None:
                return
            yield _response(chunk)
            sent += 1

    async def RegisterItems(
        self, request: synthetic_pb2.RegisterItemsRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.RegisterItemsResponse:
        items = [(item.item_id, dict(item.attributes)) for item in request.items]
        return synthetic_pb2.RegisterItemsResponse(registered=await self.ready_core.register(items))

    async def GenerateHistory(
        self, request: synthetic_pb2.GenerateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.GenerateHistoryResponse:
        core = self.ready_core
        # The generator runs off the event loop: health checks and other calls go on meanwhile.
        history = await asyncio.to_thread(core.cold_history, request.user_id, dict(request.attributes), request.length)
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
