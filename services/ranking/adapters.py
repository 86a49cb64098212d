"""The ranking models behind Triton (KServe v2 over gRPC, tritonclient's asyncio client)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from services.common.errors import DeadlineExceeded, DomainError, InvalidArgument, Unavailable
from trainer import triton_contract as contract


def domain_error(error: InferenceServerException) -> DomainError:
    """Triton's failures as the service's own: a timeout is a timeout, a refused input is bad input,
    everything else means the model server is unavailable to us."""
    status = str(error.status() or "")
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceeded("triton did not answer in time")
    if "INVALID_ARGUMENT" in status:
        return InvalidArgument([], message=f"triton refused the request: {error.message()}")
    return Unavailable(f"triton is unavailable ({status or 'no status'})")


class TritonRanker:
    def __init__(self, address: str) -> None:
        self.address = address
        self._client: triton_aio.InferenceServerClient | None = None

    async def open(self, wait_s: float) -> None:
        """Connect and wait until the ranker model is ready."""
        self._client = triton_aio.InferenceServerClient(self.address)
        deadline = time.monotonic() + wait_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if await self._client.is_model_ready(contract.RANKER_MODEL):
                    return
                last = "model not ready"
            except InferenceServerException as error:
                last = str(error.status())
            await asyncio.sleep(0.2)
        raise Unavailable(f"triton at {self.address}: {contract.RANKER_MODEL} not ready after {wait_s:.0f}s ({last})")

    async def ready(self) -> bool:
        try:
            return self._client is not None and bool(await self._client.is_model_ready(contract.RANKER_MODEL))
        except InferenceServerException:
            return False

    async def score(
        self, history: np.ndarray, user: int, candidates: np.ndarray, candidate_scores: np.ndarray, timeout_s: float
    ) -> np.ndarray:
        if self._client is None:
            raise Unavailable("triton client is not open")
        # Padded to the contract's buckets (index 0, score 0): requests then share a few shapes, which GPU
        # configurations need to batch them. The models ignore the padding; its scores are dropped below.
        arrays = {
            contract.HISTORY: contract.pad_to_bucket(history.astype(np.int32), contract.HISTORY_BUCKET, front=True),
            contract.USER: np.array([user], dtype=np.int32),
            contract.CANDIDATES: contract.pad_to_bucket(candidates.astype(np.int32), contract.CANDIDATE_BUCKET),
            contract.CANDIDATE_SCORES: contract.pad_to_bucket(
                candidate_scores.astype(np.float32), contract.CANDIDATE_BUCKET
            ),
        }
        inputs = []
        for name, array in arrays.items():
            batch = array[None, :]  # batch dimension: one request, one user
            tensor = triton_grpc.InferInput(name, list(batch.shape), contract.wire_type(contract.INPUTS[name][0]))
            tensor.set_data_from_numpy(batch)
            inputs.append(tensor)
        outputs = [triton_grpc.InferRequestedOutput(contract.SCORES)]
        try:
            result = await self._client.infer(contract.RANKER_MODEL, inputs, outputs=outputs, client_timeout=timeout_s)
        except InferenceServerException as error:
            raise domain_error(error) from None
        scores = result.as_numpy(contract.SCORES)
        scores = scores.reshape(-1) if scores is not None else None
        if scores is None or scores.shape != arrays[contract.CANDIDATES].shape:
            raise Unavailable("triton answered without one score per candidate")
        return scores[: len(candidates)]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
