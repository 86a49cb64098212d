"""Models run inside Triton's python backend (CPU). Imported by the repository's model.py shim, in the stub
interpreter, where triton_python_backend_utils exists; the scoring itself is the trainer's numpy code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer import triton_contract as contract
from trainer.models.markov import Markov, blend


class RankerModel:
    """Re-ranks candidates: first-order Markov transitions from the recent history, blended with the
    candidate stage's scores by the weight fitted on validation."""

    def initialize(self, args: dict[str, Any]) -> None:
        version_dir = Path(args["model_repository"]) / args["model_version"]
        meta = json.loads((version_dir / "ranker.json").read_text())
        self.markov = Markov.load(version_dir, int(meta["order"]), float(meta["recency_decay"]))
        self.markov_weight = float(meta["markov_weight"])

    def score(self, history: np.ndarray, candidates: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
        transitions = self.markov.score(history[history > 0], candidates)
        return blend(candidate_scores.astype(np.float32), transitions, self.markov_weight)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                arrays = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in contract.INPUTS}
                if arrays[contract.CANDIDATES].shape != arrays[contract.CANDIDATE_SCORES].shape:
                    raise ValueError("CANDIDATES and CANDIDATE_SCORES must have the same length")
                scores = self.score(
                    arrays[contract.HISTORY], arrays[contract.CANDIDATES], arrays[contract.CANDIDATE_SCORES]
                )
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.SCORES, scores)]))
            except Exception as error:  # noqa: BLE001 - one bad request must not fail the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
        return responses

    def finalize(self) -> None:
        pass
