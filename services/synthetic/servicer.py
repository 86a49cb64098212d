"""SyntheticService: proto ↔ domain only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from recsys.v1 import synthetic_pb2, synthetic_pb2_grpc
from services.common.server import Registration
from services.common.service import CoreSlot
from services.synthetic.core import SyntheticCore


class SyntheticServicer(synthetic_pb2_grpc.SyntheticServiceServicer, CoreSlot[SyntheticCore]):
    async def GenerateSynthetic(
        self, request: synthetic_pb2.GenerateSyntheticRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[synthetic_pb2.GenerateSyntheticResponse]:
        self.ready_core.require_generator()  # always raises in this release
        yield synthetic_pb2.GenerateSyntheticResponse()

    async def RegisterItems(
        self, request: synthetic_pb2.RegisterItemsRequest, context: grpc.aio.ServicerContext
    ) -> synthetic_pb2.RegisterItemsResponse:
        self.ready_core.require_generator()  # always raises in this release
        return synthetic_pb2.RegisterItemsResponse()


def registration(servicer: SyntheticServicer) -> Registration:
    return Registration(
        synthetic_pb2_grpc.add_SyntheticServiceServicer_to_server,
        servicer,
        synthetic_pb2.DESCRIPTOR.services_by_name["SyntheticService"].full_name,
    )
