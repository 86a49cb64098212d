"""CandidateService: proto ↔ domain only."""

from __future__ import annotations

import grpc
import numpy as np

from recsys.v1 import candidates_pb2, candidates_pb2_grpc, common_pb2
from services.candidates.core import POPULARITY_NAME, Candidate, CandidateCore, CandidateQuery, Candidates
from services.common.encoding import history_indices, pack_candidates, seen_indices
from services.common.server import Registration
from services.common.service import CoreSlot

NO_LIKELIHOODS = np.zeros(0, np.float64)


def candidate_query(request: candidates_pb2.GetCandidatesRequest, core: CandidateCore) -> CandidateQuery:
    context = request.context
    return CandidateQuery(
        history=history_indices(context, core.workflow, core.version),
        seen=seen_indices(context, core.workflow, core.version),
        # Only a generated history carries likelihoods: a recorded one's are not decoded on every request.
        likelihoods=np.fromiter((h.weight for h in context.history), np.float64, len(context.history))
        if context.generated_history
        else NO_LIKELIHOODS,
        exclude=list(request.exclude_item_ids),
        n=request.n,
        generated_history=context.generated_history,
    )


def _reply(items: list[Candidate], model: str, version: str) -> candidates_pb2.GetCandidatesResponse:
    return candidates_pb2.GetCandidatesResponse(
        items=[common_pb2.ScoredItem(item_id=c.item_id, score=c.score, source=model) for c in items],
        model=model,
        model_version=version,
    )


def _packed_reply(found: Candidates, version: str) -> candidates_pb2.GetCandidatesResponse:
    return candidates_pb2.GetCandidatesResponse(
        packed=pack_candidates(found.item_ids, found.scores, found.model, found.indices, version),
        model=found.model,
        model_version=version,
    )


class CandidateServicer(candidates_pb2_grpc.CandidateServiceServicer, CoreSlot[CandidateCore]):
    async def GetCandidates(
        self, request: candidates_pb2.GetCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> candidates_pb2.GetCandidatesResponse:
        core = self.ready_core
        found = core.candidates(candidate_query(request, core))
        if request.packed:
            return _packed_reply(found, core.version)
        return _reply(found.as_list(), found.model, core.version)

    async def GetPopular(
        self, request: candidates_pb2.GetPopularRequest, context: grpc.aio.ServicerContext
    ) -> candidates_pb2.GetCandidatesResponse:
        core = self.ready_core
        return _reply(core.popular(list(request.exclude_item_ids), request.n), POPULARITY_NAME, core.version)


def registration(servicer: CandidateServicer) -> Registration:
    return Registration(
        candidates_pb2_grpc.add_CandidateServiceServicer_to_server,
        servicer,
        candidates_pb2.DESCRIPTOR.services_by_name["CandidateService"].full_name,
    )
