"""Models run inside Triton's python backend (CPU). Imported by the repository's model.py shim, in the stub
interpreter, where triton_python_backend_utils exists; the scoring itself is the trainer's numpy code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer import triton_contract as contract
from trainer.models.ranking import Ranker


class RankerModel:
    """Re-ranks candidates: GRU4Rec, Caser, Markov transitions and the candidate score, blended with the
    weights fitted on validation (trainer.models.ranking)."""

    def initialize(self, args: dict[str, Any]) -> None:
        self.ranker = Ranker.load(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                # One request is one user: batch dimension 1, dropped here and restored on the output.
                arrays = {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
                    for name in contract.INPUTS
                }
                if arrays[contract.CANDIDATES].shape != arrays[contract.CANDIDATE_SCORES].shape:
                    raise ValueError("CANDIDATES and CANDIDATE_SCORES must have the same length")
                user = int(arrays[contract.USER][0]) if arrays[contract.USER].size else 0
                scores = self.ranker.score(
                    arrays[contract.HISTORY], user, arrays[contract.CANDIDATES], arrays[contract.CANDIDATE_SCORES]
                )
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.SCORES, scores[None, :])]))
            except Exception as error:  # noqa: BLE001 - one bad request must not fail the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
        return responses

    def finalize(self) -> None:
        pass
