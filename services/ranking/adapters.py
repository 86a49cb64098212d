"""The ranking models behind Triton (KServe v2 over gRPC, tritonclient's asyncio client)."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from recsys_runtime import triton_contract as contract
from services.common import tracing
from services.common.errors import DeadlineExceeded, DomainError, InvalidArgument, Unavailable

log = logging.getLogger(__name__)


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
    """One connection to Triton, and the ranker models of artefact versions loaded through it (explicit model
    control: each version's ranker is its own model, ranker-<version>, so two can be loaded during a switch)."""

    def __init__(
        self, address: str, load_timeout_s: float = 300.0, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.load_timeout_s = load_timeout_s
        self._client: triton_aio.InferenceServerClient | None = None
        # One load or unload of a model at a time: a rollback that loads the version whose unload is still in
        # flight would otherwise see it ready, then lose it.
        self._model_locks: dict[str, asyncio.Lock] = {}

    def model_lock(self, name: str) -> asyncio.Lock:
        return self._model_locks.setdefault(name, asyncio.Lock())

    @property
    def client(self) -> triton_aio.InferenceServerClient:
        if self._client is None:
            raise Unavailable("triton client is not open")
        return self._client

    async def open(self, wait_s: float) -> None:
        """Connect and wait until the server is ready (models are loaded per version by `model`)."""
        self._client = triton_aio.InferenceServerClient(self.address, creds=self.credentials)
        deadline = time.monotonic() + wait_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if await self._client.is_server_ready():
                    return
                last = "server not ready"
            except InferenceServerException as error:
                last = str(error.status())
            await asyncio.sleep(0.2)
        raise Unavailable(f"triton at {self.address} not ready after {wait_s:.0f}s ({last})")

    async def model(self, version: str) -> TritonModel:
        """The ranker of `version`, loaded if Triton does not serve it yet."""
        model = TritonModel(self, contract.served_model_name(version))
        await model.ensure_loaded()
        return model

    async def unload(self, name: str) -> None:
        async with self.model_lock(name):
            try:
                await self.client.unload_model(name)
            except InferenceServerException as error:
                log.warning("triton model unload failed", extra={"model": name, "error": error.message()})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class TritonModel:
    """One version's ranker in Triton."""

    # After Triton lost the model (a restart), at most one load is attempted in this many seconds.
    RELOAD_INTERVAL_S = 2.0

    def __init__(self, ranker: TritonRanker, name: str) -> None:
        self.ranker = ranker
        self.name = name
        self._last_load = -float("inf")
        self._loading: asyncio.Task[None] | None = None

    async def ensure_loaded(self) -> None:
        client = self.ranker.client
        async with self.ranker.model_lock(self.name):
            self._last_load = time.monotonic()
            try:
                if await client.is_model_ready(self.name):
                    return
                # Waits until loaded; a model that fails to load raises with Triton's reason.
                await client.load_model(self.name, client_timeout=self.ranker.load_timeout_s)
            except InferenceServerException as error:
                raise Unavailable(f"triton could not load {self.name}: {error.message()}") from None
        log.info("triton model loaded", extra={"model": self.name})

    def _reload_in_background(self) -> None:
        """Triton restarted without this model (or it was unloaded under us): load it again, off the request
        path; meanwhile requests fail over as with any Triton outage."""
        if self._loading is not None and not self._loading.done():
            return
        if time.monotonic() - self._last_load < self.RELOAD_INTERVAL_S:
            return

        async def load() -> None:
            try:
                await self.ensure_loaded()
            except Unavailable as error:
                log.warning("triton model reload failed", extra={"model": self.name, "error": str(error)})

        self._loading = asyncio.get_running_loop().create_task(load())

    async def unload(self) -> None:
        await self.ranker.unload(self.name)

    async def score(
        self,
        history: np.ndarray,
        user: int,
        candidates: np.ndarray,
        candidate_scores: np.ndarray,
        timeout_s: float,
        max_history: int,
    ) -> np.ndarray:
        client = self.ranker.client
        # Padded to the contract's buckets (index 0, score 0): requests then share a few shapes, which GPU
        # configurations need to batch them. The models ignore the padding; its scores are dropped below.
        arrays = {
            contract.HISTORY: contract.pad_to_bucket(
                history.astype(np.int32), contract.HISTORY_BUCKET, front=True, limit=max_history
            ),
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
            result = await client.infer(
                self.name, inputs, outputs=outputs, client_timeout=timeout_s, headers=tracing.outgoing_headers()
            )
        except InferenceServerException as error:
            failure = domain_error(error)
            if isinstance(failure, Unavailable):
                self._reload_in_background()
            raise failure from None
        scores = result.as_numpy(contract.SCORES)
        scores = scores.reshape(-1) if scores is not None else None
        if scores is None or scores.shape != arrays[contract.CANDIDATES].shape:
            raise Unavailable("triton answered without one score per candidate")
        return scores[: len(candidates)]
