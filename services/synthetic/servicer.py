"""SyntheticService: proto ↔ domain only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from recsys.v1 import common_pb2, synthetic_pb2, synthetic_pb2_grpc
from services.common.server import Registration
from services.common.service import CoreSlot
from services.synthetic.core import SyntheticCore

_KINDS = {
    synthetic_pb2.GenerateSyntheticRequest.KIND_USERS: "users",
    synthetic_pb2.GenerateSyntheticRequest.KIND_ITEMS: "items",
    synthetic_pb2.GenerateSyntheticRequest.KIND_INTERACTIONS: "interactions",
}


class SyntheticServicer(synthetic_pb2_grpc.SyntheticServiceServicer, CoreSlot[SyntheticCore]):
    async def GenerateSynthetic(
        self, request: synthetic_pb2.GenerateSyntheticRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        # The gateway validated the request; the chunks are generated off the event loop, one at a time, so
        # a slow reader holds back generation instead of piling rows up in memory.
        chunks = self.ready_core.generate(
            _KINDS[request.kind], request.count, request.seed, dict(request.conditions), request.chunk_size
        )
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            users, items, rows = chunk
            yield synthetic_pb2.GenerateSyntheticResponse(
                users=[common_pb2.User(user_id=u, attributes=a) for u, a in users],
                items=[common_pb2.Item(item_id=i, attributes=a) for i, a in items],
                interactions=[common_pb2.Event(user_id=u, item_id=i, timestamp=t) for u, i, t in rows],
            )

    async def RegisterItems(
        self, request: synthetic_pb2.RegisterItemsRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.RegisterItemsResponse:
        items = [(item.item_id, dict(item.attributes)) for item in request.items]
        return synthetic_pb2.RegisterItemsResponse(registered=await self.ready_core.register(items))

    async def GenerateHistory(
        self, request: synthetic_pb2.GenerateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.GenerateHistoryResponse:
        core = self.ready_core
        history = core.cold_history(request.user_id, dict(request.attributes), request.length)
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
