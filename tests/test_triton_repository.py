"""The Triton model repository: config.pbtxt parsed back, and the ranker served by the real tritonserver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from recsys_runtime import triton_contract as contract
from recsys_runtime.models.markov import Markov
from recsys_runtime.models.ranking import Ranker
from services.launcher.triton import TritonServer
from tests.redis_server import free_port
from trainer.triton_repository import read_config, write_ranker


def fitted_markov() -> Markov:
    users = np.repeat(np.arange(30), 4)
    items = np.tile([1, 2, 3, 4], 30)
    return Markov.fit(users, items, n_items=8, neighbours=5, order=2, recency_decay=0.5)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "repository"
    # Two instances: the tests below run against both, as `recsys serve` does with the default configuration.
    write_ranker(root, Ranker(fitted_markov(), weights={"candidates": 0.4, "markov": 0.6}), cpu_instances=2)
    return root


def test_config_parses_back_with_the_shared_tensor_names(repository: Path) -> None:
    config = read_config(repository / contract.RANKER_MODEL / "config.pbtxt")
    # No name: Triton names the model after its directory (ranker-<version> in the serving repository).
    assert config.name == "" and config.backend == "python"
    assert {i.name: mc.DataType.Name(i.data_type) for i in config.input} == {
        name: dtype for name, (dtype, _) in contract.INPUTS.items()
    }
    assert [o.name for o in config.output] == [contract.SCORES]
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    assert config.max_batch_size == contract.MAX_BATCH_SIZE
    assert all(i.allow_ragged_batch for i in config.input)
    assert config.dynamic_batching.max_queue_delay_microseconds == contract.MAX_QUEUE_DELAY_US
    assert (repository / contract.RANKER_MODEL / "1" / "model.py").read_text().count("RankerModel") == 1


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[triton_grpc.InferenceServerClient]:
    server = TritonServer(repository, free_port(), tmp_path_factory.mktemp("logs") / "triton.log")
    server.start()
    try:
        server.wait_ready([contract.RANKER_MODEL], 120)
        with triton_grpc.InferenceServerClient(server.address) as client:
            yield client
    finally:
        server.stop()


def infer(client: triton_grpc.InferenceServerClient, history, candidates, scores):  # type: ignore[no-untyped-def]
    inputs = []
    for name, array in (
        (contract.HISTORY, np.asarray(history, np.int32)),
        (contract.USER, np.asarray([0], np.int32)),
        (contract.CANDIDATES, np.asarray(candidates, np.int32)),
        (contract.CANDIDATE_SCORES, np.asarray(scores, np.float32)),
    ):
        tensor = triton_grpc.InferInput(name, [1, len(array)], contract.wire_type(contract.INPUTS[name][0]))
        tensor.set_data_from_numpy(array[None, :])
        inputs.append(tensor)
    return client.infer(contract.RANKER_MODEL, inputs).as_numpy(contract.SCORES)[0]


def test_triton_scores_equal_the_in_process_model(triton: triton_grpc.InferenceServerClient) -> None:
    history, candidates = np.array([3, 1, 2]), np.array([3, 4, 5, 6, 7])
    candidate_scores = np.array([0.5, 0.1, 0.4, 0.3, 0.2], np.float32)
    ranker = Ranker(fitted_markov(), weights={"candidates": 0.4, "markov": 0.6})
    expected = ranker.score(history, 0, candidates, candidate_scores)
    np.testing.assert_allclose(infer(triton, history, candidates, candidate_scores), expected, rtol=1e-6)


def test_concurrent_requests_of_different_lengths_come_back_to_their_callers(
    triton: triton_grpc.InferenceServerClient,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ranker = Ranker(fitted_markov(), weights={"candidates": 0.4, "markov": 0.6})
    cases = [
        (np.array([1, 2]), np.arange(1, 2 + n % 6), np.linspace(1, 0, 1 + n % 6).astype(np.float32)) for n in range(24)
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda case: infer(triton, *case), cases))
    for (history, candidates, scores), answer in zip(cases, answers, strict=True):
        np.testing.assert_allclose(answer, ranker.score(history, 0, candidates, scores), rtol=1e-6)


def test_a_bad_request_is_refused_and_the_model_stays_up(triton: triton_grpc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="same length"):
        infer(triton, [1], [2, 3], [0.5])
    assert triton.is_model_ready(contract.RANKER_MODEL)
    assert infer(triton, [], [2], [1.0]).shape == (1,)
