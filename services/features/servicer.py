"""FeatureService: proto ↔ domain only."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import field_mask_pb2

from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc
from recsys_runtime.attributes import EncodedAttributes
from recsys_runtime.sequences import EncodedSequences
from services.common.encoding import WIRE_INDEX
from services.common.errors import Violations
from services.common.server import Registration
from services.common.service import CoreSlot
from services.common.validation import EventInput
from services.features.core import FeatureCore, UserContext


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


CONTEXT_FIELDS = frozenset(common_pb2.UserContext.DESCRIPTOR.fields_by_name)
MODEL_INPUTS = frozenset({"sequence", "encoded_attributes"})


def requested_fields(read_mask: field_mask_pb2.FieldMask) -> frozenset[str]:
    """The UserContext fields a read mask asks for (top-level names; empty mask: all)."""
    return _fields_of(tuple(read_mask.paths))


# A caller sends the same mask with every request: checked and turned into a set once.
@functools.lru_cache(maxsize=64)
def _fields_of(paths: tuple[str, ...]) -> frozenset[str]:
    if not paths:
        return CONTEXT_FIELDS
    violations = Violations()
    for i, path in enumerate(paths):
        violations.check(path in CONTEXT_FIELDS, f"read_mask.paths[{i}]", f"not a UserContext field: {path!r}")
    violations.raise_if_any()
    return frozenset(paths)


def context_to_proto(context: UserContext, fields: frozenset[str] = CONTEXT_FIELDS) -> common_pb2.UserContext:
    """The context with just the requested fields set."""
    values: dict[str, Any] = {
        "user_id": context.user_id,
        "known_user": context.known_user,
        "attributes": context.attributes,
        "artifact_version": context.artifact_version,
    }
    if "seen_item_ids" in fields:
        values["seen_item_ids"] = context.seen_item_ids
    if "seen_item_indices" in fields:
        values["seen_item_indices"] = np.asarray(context.seen_item_indices, WIRE_INDEX).tobytes()
    if "sequence" in fields and context.sequence is not None:
        values["sequence"] = sequence_to_proto(context.sequence)
    if "encoded_attributes" in fields and context.encoded_attributes is not None:
        values["encoded_attributes"] = attributes_to_proto(context.encoded_attributes)
    reply = common_pb2.UserContext(**{name: value for name, value in values.items() if name in fields})
    if context.online_state_missing:  # whatever the mask: a partial context never passes for a complete one
        reply.online_state_missing = True
    if "history" in fields:
        add = reply.history.add  # entries added in place: half the cost of building messages to copy in
        for item, ts, index in zip(context.item_ids, context.timestamps, context.item_indices, strict=True):
            add(item_id=item, timestamp=ts, item_index=index)
    return reply


def events_from_proto(events: Sequence[common_pb2.Event]) -> list[EventInput]:
    return [EventInput(e.user_id, e.item_id, e.timestamp, e.event_id, e.rating) for e in events]


class FeatureServicer(features_pb2_grpc.FeatureServiceServicer, CoreSlot[FeatureCore]):
    async def GetUserContext(
        self, request: features_pb2.GetUserContextRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.UserContext:
        fields = requested_fields(request.read_mask)
        user = await self.ready_core.user_context(
            request.user_id, dict(request.attributes), model_inputs=not MODEL_INPUTS.isdisjoint(fields)
        )
        return context_to_proto(user, fields)

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
