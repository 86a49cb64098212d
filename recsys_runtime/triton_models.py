"""Models run inside Triton's python backend (CPU). Imported by the repository's model.py shim, in the stub
interpreter, where triton_python_backend_utils exists.

The ranker runs the artefact's ONNX graph (trainer.ranker_onnx, the same one the GPU configurations serve)
with onnxruntime on one thread: the requests the dynamic batcher hands over together are padded to one
shape and scored in one call. The graph ignores the padding (index 0), so each request's scores are what
it would get alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys_runtime import triton_contract as contract


def pad_rows(rows: list[np.ndarray], front: bool) -> np.ndarray:
    """Rows of different lengths as one zero-padded matrix (padding in front or behind)."""
    width = max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), max(width, 1)), dtype=rows[0].dtype if rows else np.int32)
    for i, row in enumerate(rows):
        if len(row):
            if front:
                out[i, width - len(row) :] = row
            else:
                out[i, : len(row)] = row
    return out


class RankerModel:
    """Re-ranks candidates: GRU4Rec, Caser, Markov transitions and the candidate score, blended with the
    weights fitted on validation (recsys_runtime.models.ranking)."""

    def initialize(self, args: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one core per instance; Triton scales with instances
        options.inter_op_num_threads = 1
        path = Path(args["model_repository"]) / args["model_version"] / contract.ONNX_MODEL_FILE
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses: list[Any] = [None] * len(requests)
        batch: list[tuple[int, dict[str, np.ndarray]]] = []
        for i, request in enumerate(requests):
            # One request is one user: batch dimension 1, dropped here and restored on the output.
            arrays = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
                for name in contract.INPUTS
            }
            if arrays[contract.CANDIDATES].shape != arrays[contract.CANDIDATE_SCORES].shape:
                error = pb_utils.TritonError("CANDIDATES and CANDIDATE_SCORES must have the same length")
                responses[i] = pb_utils.InferenceResponse(error=error)  # one bad request must not fail the rest
            else:
                batch.append((i, arrays))
        if batch:
            try:
                scores = self.score([arrays for _, arrays in batch])
                for (i, _), row in zip(batch, scores, strict=True):
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(contract.SCORES, row[None, :])])
            except Exception as error:  # noqa: BLE001 - reported per request, the model stays up
                for i, _ in batch:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
        return responses

    def score(self, requests: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Each request's scores, computed in one padded batch."""
        users = [r[contract.USER][:1] if len(r[contract.USER]) else np.zeros(1, np.int32) for r in requests]
        feeds = {
            contract.HISTORY: pad_rows([r[contract.HISTORY].astype(np.int32) for r in requests], front=True),
            contract.USER: np.stack(users).astype(np.int32),
            contract.CANDIDATES: pad_rows([r[contract.CANDIDATES].astype(np.int32) for r in requests], front=False),
            contract.CANDIDATE_SCORES: pad_rows(
                [r[contract.CANDIDATE_SCORES].astype(np.float32) for r in requests], front=False
            ),
        }
        (out,) = self.session.run([contract.SCORES], feeds)
        return [out[i, : len(r[contract.CANDIDATES])].astype(np.float32) for i, r in enumerate(requests)]

    def finalize(self) -> None:
        pass
