"""RankingService: proto ↔ domain only."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from recsys.v1 import ranking_pb2, ranking_pb2_grpc
from services.common.clients import Deadline
from services.common.encoding import history_indices, packed_indices, packed_scores
from services.common.errors import FieldViolation, InvalidArgument
from services.common.server import Registration
from services.common.service import CoreSlot
from services.ranking.core import RankingCore, RankInput


def rank_input(request: ranking_pb2.RankRequest, core: RankingCore) -> RankInput:
    """The request as the core takes it; the candidates come listed or packed, never both."""
    indices: np.ndarray | None = None
    if request.HasField("packed_candidates"):
        if request.candidates:
            raise InvalidArgument([FieldViolation("candidates", "give candidates or packed_candidates, not both")])
        packed = request.packed_candidates
        candidate_ids: Sequence[str] = packed.item_ids
        candidate_scores = packed_scores(packed)
        indices = packed_indices(packed, core.workflow, core.version)
    else:
        candidate_ids = [c.item_id for c in request.candidates]
        candidate_scores = np.fromiter((c.score for c in request.candidates), np.float32, len(request.candidates))
    return RankInput(
        user_id=request.context.user_id,
        history=history_indices(request.context, core.workflow, core.version),
        candidate_ids=candidate_ids,
        candidate_scores=candidate_scores,
        k=request.k,
        generated_history=request.context.generated_history,
        candidate_indices=indices,
    )


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer, CoreSlot[RankingCore]):
    def __init__(self, default_timeout_s: float) -> None:
        self.default_timeout_s = default_timeout_s

    async def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.aio.ServicerContext
    ) -> ranking_pb2.RankResponse:
        core = self.ready_core
        ranking = await core.rank(
            rank_input(request, core), Deadline.from_context(context, self.default_timeout_s), self.default_timeout_s
        )
        reply = ranking_pb2.RankResponse(model=ranking.model, model_version=core.version)
        add = reply.items.add  # in place: cheaper than messages built to be copied in
        for item in ranking.items:
            add(item_id=item.item_id, score=item.score, source=ranking.model)
        return reply


def registration(servicer: RankingServicer) -> Registration:
    return Registration(
        ranking_pb2_grpc.add_RankingServiceServicer_to_server,
        servicer,
        ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name,
    )
