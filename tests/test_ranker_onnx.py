"""The ONNX ranker (GPU configurations) scores exactly as the numpy ranker the python backend runs, batched
and padded the way the ranking service sends requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from recsys_runtime import triton_contract as contract
from recsys_runtime.models.markov import Markov
from recsys_runtime.models.ranking import Ranker
from recsys_runtime.models.sequential import Caser, GRU4Rec
from recsys_runtime.triton_contract import CONFIGS_DIR
from trainer.config import load_config
from trainer.models.sequential import build_caser, build_gru4rec, caser_windows, gru_chunks
from trainer.ranker_onnx import IR_VERSION, OPSET, build_ranker_graph
from trainer.triton_repository import GPU_CONFIGS, read_config, write_ranker

N_ITEMS, N_USERS = 40, 8


def sequences(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(1, N_ITEMS, rng.integers(3, 25)).astype(np.int32) for _ in range(N_USERS - 1)]


@pytest.fixture(scope="module")
def ranker() -> Ranker:
    """Every component trained (briefly) on random sequences, with every weight non-zero."""
    rng = np.random.default_rng(7)
    train = sequences(rng)
    users = np.concatenate([np.full(len(s), u + 1) for u, s in enumerate(train)])
    markov = Markov.fit(users, np.concatenate(train), N_ITEMS, neighbours=6, order=3, recency_decay=0.7)
    gru_config = dict(load_config()["gru4rec"], max_length=8, embedding=6, units=5)
    gru = build_gru4rec(N_ITEMS, gru_config)
    chunks = gru_chunks(train, gru_config["max_length"])
    gru.fit(chunks[:, :-1], chunks[:, 1:], epochs=2, verbose=0)
    caser_config = dict(load_config()["caser"], length=4, embedding=6, vertical_filters=2, horizontal_filters=3)
    caser = build_caser(N_ITEMS, N_USERS, caser_config)
    windows, owners, targets = caser_windows(train, list(range(1, N_USERS)), caser_config["length"])
    caser.fit([windows, owners], targets, epochs=2, verbose=0)
    return Ranker(
        markov,
        GRU4Rec.from_model(gru),
        Caser.from_model(caser, caser_config["length"]),
        {"candidates": 0.2, "markov": 0.3, "gru4rec": 0.25, "caser": 0.25},
    )


@pytest.fixture(scope="module")
def session(ranker: Ranker) -> ort.InferenceSession:
    return ort.InferenceSession(build_ranker_graph(ranker).SerializeToString(), providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, rows: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """One batch, each row padded as the ranking service pads it, then to the batch's widest row."""
    width_h = max(len(contract.pad_to_bucket(h, contract.HISTORY_BUCKET)) for h, _, _, _ in rows)
    width_c = max(len(contract.pad_to_bucket(c, contract.CANDIDATE_BUCKET)) for _, _, c, _ in rows)
    feeds = {
        contract.HISTORY: np.stack([np.pad(h, (width_h - len(h), 0)) for h, _, _, _ in rows]).astype(np.int32),
        contract.USER: np.array([[u] for _, u, _, _ in rows], np.int32),
        contract.CANDIDATES: np.stack([np.pad(c, (0, width_c - len(c))) for _, _, c, _ in rows]).astype(np.int32),
        contract.CANDIDATE_SCORES: np.stack([np.pad(s, (0, width_c - len(s))) for _, _, _, s in rows]).astype(
            np.float32
        ),
    }
    return session.run([contract.SCORES], feeds)[0]


def test_onnx_batch_equals_the_numpy_ranker_row_by_row(ranker: Ranker, session: ort.InferenceSession) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for n in range(12):
        history = rng.integers(1, N_ITEMS, n * 3).astype(np.int32)  # 0 .. 33 items: empty and longer than L
        history[::5] = 0  # unknown items inside the history are skipped, as in numpy
        candidates = rng.choice(np.arange(1, N_ITEMS), 1 + n * 2, replace=False).astype(np.int32)
        if n % 3 == 0:
            candidates[0] = 0  # an item the models never saw
        scores = rng.random(len(candidates)).astype(np.float32) - 0.1
        rows.append((history, int(rng.integers(-1, N_USERS + 2)), candidates, scores))
    batch = run(session, rows)
    for i, (history, user, candidates, scores) in enumerate(rows):
        expected = ranker.score(history, user, candidates, scores)
        np.testing.assert_allclose(batch[i, : len(candidates)], expected, rtol=2e-4, atol=2e-6)
        assert not batch[i, len(candidates) :].any(), "padding candidates must score 0"


def test_components_are_each_exported(ranker: Ranker) -> None:
    """Each component alone (weight 1): a wrong sub-graph cannot hide behind the others in the blend."""
    rng = np.random.default_rng(5)
    history = rng.integers(1, N_ITEMS, 17).astype(np.int32)
    candidates = np.arange(1, N_ITEMS, dtype=np.int32)
    scores = rng.random(len(candidates)).astype(np.float32)
    for name in ("candidates", "markov", "gru4rec", "caser"):
        alone = Ranker(ranker.markov, ranker.gru4rec, ranker.caser, {name: 1.0})
        session = ort.InferenceSession(build_ranker_graph(alone).SerializeToString())
        got = run(session, [(history, 3, candidates, scores)])[0, : len(candidates)]
        np.testing.assert_allclose(got, alone.score(history, 3, candidates, scores), rtol=2e-4, atol=2e-6, err_msg=name)
        assert got.sum() == pytest.approx(1.0, abs=1e-4), name


def test_a_component_weighted_zero_is_left_out_and_changes_nothing(ranker: Ranker) -> None:
    """ml-100k's fitted blend weighs Markov 0: its nodes (a fifth of the graph's time) are not exported."""
    without_markov = Ranker(ranker.markov, ranker.gru4rec, ranker.caser, {**ranker.weights, "markov": 0.0})
    model = build_ranker_graph(without_markov)
    assert "Equal" not in {node.op_type for node in model.graph.node}
    assert not any(i.name.startswith("markov_") for i in model.graph.initializer)
    rng = np.random.default_rng(11)
    history = rng.integers(1, N_ITEMS, 9).astype(np.int32)
    candidates = np.arange(1, N_ITEMS, dtype=np.int32)
    scores = rng.random(len(candidates)).astype(np.float32)
    got = run(ort.InferenceSession(model.SerializeToString()), [(history, 2, candidates, scores)])[0, : len(candidates)]
    np.testing.assert_allclose(got, without_markov.score(history, 2, candidates, scores), rtol=2e-4, atol=2e-6)
    assert len(build_ranker_graph(ranker).graph.node) > len(model.graph.node)  # the same parts, Markov weighted


def test_graph_is_plain_opset_onnx(ranker: Ranker) -> None:
    model = build_ranker_graph(ranker)
    assert model.ir_version == IR_VERSION and model.opset_import[0].version == OPSET
    assert [i.name for i in model.graph.input] == list(contract.INPUTS)
    assert [o.name for o in model.graph.output] == [contract.SCORES]
    onnx.checker.check_model(model, full_check=True)


def test_repository_holds_gpu_configurations(ranker: Ranker, tmp_path: Path) -> None:
    version = write_ranker(tmp_path, ranker, cpu_instances=1)
    model_dir = version.parent
    assert (version / "model.onnx").is_file() and (version / "model.py").is_file()
    for name, accelerator in GPU_CONFIGS.items():
        config = read_config(model_dir / CONFIGS_DIR / f"{name}.pbtxt")
        assert config.name == "" and config.platform == "onnxruntime_onnx"
        assert config.default_model_filename == "model.onnx"
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        assert config.max_batch_size == contract.MAX_BATCH_SIZE and config.HasField("dynamic_batching")
        assert {i.name: mc.DataType.Name(i.data_type) for i in config.input} == {
            n: dtype for n, (dtype, _) in contract.INPUTS.items()
        }
        assert not any(i.allow_ragged_batch for i in config.input)
        accelerators = [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator]
        assert accelerators == ([accelerator] if accelerator else [])
        assert set(config.model_warmup[0].inputs) == set(contract.INPUTS)


def test_pad_to_bucket() -> None:
    assert contract.pad_to_bucket(np.array([5, 6]), 4, front=True).tolist() == [0, 0, 5, 6]
    assert contract.pad_to_bucket(np.array([5, 6]), 4).tolist() == [5, 6, 0, 0]
    assert len(contract.pad_to_bucket(np.array([], np.int32), 4)) == 4
    assert len(contract.pad_to_bucket(np.arange(4), 4)) == 4
    # A limit caps the bucket for values no longer than it (a full history) and never cuts longer ones.
    assert len(contract.pad_to_bucket(np.arange(1, 51), 16, front=True, limit=50)) == 50
    assert contract.pad_to_bucket(np.arange(1, 51), 16, front=True, limit=50).tolist() == list(range(1, 51))
    assert len(contract.pad_to_bucket(np.arange(1, 41), 16, front=True, limit=50)) == 48
    assert len(contract.pad_to_bucket(np.arange(1, 4), 16, front=True, limit=50)) == 16
    assert len(contract.pad_to_bucket(np.arange(1, 61), 16, front=True, limit=50)) == 60
    assert len(contract.pad_to_bucket(np.arange(1, 4), 16, limit=2)) == 3
