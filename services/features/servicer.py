"""FeatureService: proto ↔ domain only."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc
from services.common.server import Registration
from services.common.service import CoreSlot
from services.common.validation import EventInput
from services.features.core import FeatureCore, UserContext


def context_to_proto(context: UserContext) -> common_pb2.UserContext:
    return common_pb2.UserContext(
        user_id=context.user_id,
        known_user=context.known_user,
        history=[
            common_pb2.HistoryEntry(item_id=item, timestamp=ts, item_index=index)
            for item, ts, index in zip(context.item_ids, context.timestamps, context.item_indices, strict=True)
        ],
        attributes=context.attributes,
        artifact_version=context.artifact_version,
        seen_item_ids=context.seen_item_ids,
    )


def events_from_proto(events: Sequence[common_pb2.Event]) -> list[EventInput]:
    return [EventInput(e.user_id, e.item_id, e.timestamp, e.event_id, e.rating) for e in events]


class FeatureServicer(features_pb2_grpc.FeatureServiceServicer, CoreSlot[FeatureCore]):
    async def GetUserContext(
        self, request: features_pb2.GetUserContextRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.UserContext:
        user = await self.ready_core.user_context(request.user_id, dict(request.attributes))
        return context_to_proto(user)

    async def RecordEvents(
        self, request: features_pb2.FeatureRecordEventsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.FeatureRecordEventsResponse:
        accepted, duplicates = await self.ready_core.record(events_from_proto(request.events))
        return features_pb2.FeatureRecordEventsResponse(accepted=accepted, duplicates=duplicates)


def registration(servicer: FeatureServicer) -> Registration:
    return Registration(
        features_pb2_grpc.add_FeatureServiceServicer_to_server,
        servicer,
        features_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
    )
