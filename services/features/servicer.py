"""FeatureService: proto ↔ domain only."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc
from services.common.server import Registration
from services.common.service import CoreSlot
from services.common.validation import EventInput
from services.features.core import FeatureCore, UserContext
from trainer.attributes import EncodedAttributes
from trainer.sequences import EncodedSequences


def attributes_to_proto(encoded: EncodedAttributes) -> common_pb2.EncodedAttributes:
    """One encoded row; the multi-hot block travels as the positions that are set."""
    return common_pb2.EncodedAttributes(
        categorical=encoded.categorical[0].tolist(),
        numeric=encoded.numeric[0].tolist(),
        multi_hot_indices=np.flatnonzero(encoded.multi_hot[0]).tolist(),
        tokens=encoded.tokens[0].tolist(),
    )


def sequence_to_proto(sequence: EncodedSequences) -> common_pb2.EncodedSequence:
    return common_pb2.EncodedSequence(
        item_indices=sequence.item_indices[0].tolist(),
        timestamps=sequence.timestamps[0].tolist(),
        gaps=sequence.gaps[0].tolist(),
        length=int(sequence.lengths[0]),
    )


def context_to_proto(context: UserContext) -> common_pb2.UserContext:
    length = int(context.sequence.lengths[0])
    indices = context.sequence.item_indices[0, len(context.sequence.item_indices[0]) - length :].tolist()
    return common_pb2.UserContext(
        user_id=context.user_id,
        known_user=context.known_user,
        history=[
            common_pb2.HistoryEntry(item_id=item, timestamp=ts, item_index=index)
            for item, ts, index in zip(context.item_ids, context.timestamps, indices, strict=True)
        ],
        attributes=context.attributes,
        artifact_version=context.artifact_version,
        seen_item_ids=context.seen_item_ids,
        sequence=sequence_to_proto(context.sequence),
        encoded_attributes=attributes_to_proto(context.encoded_attributes),
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

    async def EncodeItems(
        self, request: features_pb2.EncodeItemsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.EncodeItemsResponse:
        encoded = self.ready_core.encode_items([(item.item_id, dict(item.attributes)) for item in request.items])
        return features_pb2.EncodeItemsResponse(
            items=[
                features_pb2.EncodedItem(
                    item_id=e.item_id, item_index=e.item_index, attributes=attributes_to_proto(e.attributes)
                )
                for e in encoded
            ]
        )


def registration(servicer: FeatureServicer) -> Registration:
    return Registration(
        features_pb2_grpc.add_FeatureServiceServicer_to_server,
        servicer,
        features_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
    )
