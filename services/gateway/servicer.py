"""Gateway: the public contract, proto ↔ domain only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from recsys.v1 import gateway_pb2, gateway_pb2_grpc, synthetic_pb2
from services.common.clients import Deadline
from services.common.encoding import validate_synthetic_request
from services.common.server import Registration
from services.common.service import CoreSlot
from services.common.validation import EventInput, validate_items
from services.gateway.adapters import Downstream
from services.gateway.core import GatewayCore, Stage

_STAGES = {
    Stage.FEATURES: gateway_pb2.STAGE_FEATURES,
    Stage.CANDIDATES: gateway_pb2.STAGE_CANDIDATES,
    Stage.RANKING: gateway_pb2.STAGE_RANKING,
    Stage.SYNTHETIC: gateway_pb2.STAGE_SYNTHETIC,
}


class GatewayServicer(gateway_pb2_grpc.GatewayServicer, CoreSlot[GatewayCore]):
    def __init__(self, downstream: Downstream, default_deadline_s: float) -> None:
        self.downstream = downstream
        self.default_deadline_s = default_deadline_s

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        return Deadline.from_context(context, self.default_deadline_s)

    async def Recommend(
        self, request: gateway_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecommendResponse:
        answer = await self.ready_core.recommend(
            request.user_id,
            request.k,
            dict(request.user_attributes),
            list(request.exclude_item_ids),
            self._deadline(context),
        )
        reply = gateway_pb2.RecommendResponse(
            model_version=answer.model_version,
            degraded_stages=[_STAGES[s] for s in answer.degraded],
            cold_start=answer.cold_start,
        )
        add = reply.items.add  # in place: cheaper than messages built to be copied in
        for item in answer.items:
            add(item_id=item.item_id, score=item.score, source=item.source)
        return reply

    async def RecordEvents(
        self, request: gateway_pb2.RecordEventsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecordEventsResponse:
        events = [EventInput(e.user_id, e.item_id, e.timestamp, e.event_id, e.rating) for e in request.events]
        accepted, duplicates = await self.ready_core.record_events(events, self._deadline(context))
        return gateway_pb2.RecordEventsResponse(accepted=accepted, duplicates=duplicates)

    async def RegisterItems(
        self, request: synthetic_pb2.RegisterItemsRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.RegisterItemsResponse:
        validate_items([(item.item_id, dict(item.attributes)) for item in request.items])
        return await self.downstream.register_items(request, self._deadline(context))

    async def GenerateSynthetic(
        self, request: synthetic_pb2.GenerateSyntheticRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        validate_synthetic_request(request, dict(request.conditions))
        async for chunk in self.downstream.generate(request, Deadline.of_caller(context)):
            yield chunk


def registration(servicer: GatewayServicer) -> Registration:
    return Registration(
        gateway_pb2_grpc.add_GatewayServicer_to_server,
        servicer,
        gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name,
    )
