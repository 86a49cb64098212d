"""The ranker as one ONNX graph, for GPU serving (Triton's onnxruntime backend, optionally with TensorRT).

It computes exactly what recsys_runtime.models.ranking.Ranker computes in numpy, batched: GRU4Rec and Caser
encode each user's sequence once, candidates are scored against that state, Markov transitions and the
candidate stage's scores become shares, and the fitted weights blend them. Tests hold the two equal.

Inputs are padded batches (the contract's names): HISTORY [B, T] item indices, 0 for padding anywhere in
the row; USER [B, 1+]; CANDIDATES [B, N], 0 for padding; CANDIDATE_SCORES [B, N]. Output SCORES [B, N].
Padding candidates score 0 and the caller drops them.

Built node by node with onnx.helper (no converter: every operator here is plain opset-17 ONNX that
onnxruntime's CUDA and TensorRT providers run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from recsys_runtime import triton_contract as contract
from recsys_runtime.models.ranking import Ranker
from recsys_runtime.models.sequential import Caser, GRU4Rec

OPSET = 17
# IR 8 is what onnxruntime releases from 1.14 on load, so the file serves on older Triton images too.
IR_VERSION = 8
# Large enough to vanish under exp(), small enough to stay finite in float16 after TensorRT's casts.
MASKED_LOGIT = -3.0e4


class GraphBuilder:
    """Names every node and initializer, so the graph reads like the numpy code it mirrors."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        return self.ops(op_type, *inputs, outputs=1, **attributes)[0]

    def ops(self, op_type: str, *inputs: str, outputs: int, **attributes: Any) -> list[str]:
        names = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names

    def i64(self, *values: int) -> str:
        """A 1-D int64 constant (axes, shapes, slice bounds)."""
        return self.constant("i64", np.asarray(values, dtype=np.int64))

    def scalar_i64(self, value: int) -> str:
        return self.constant("i64", np.asarray(value, dtype=np.int64))

    def f32(self, value: float) -> str:
        return self.constant("f32", np.asarray(value, dtype=np.float32))


def _compact(g: GraphBuilder, history: str, valid: str, items_first: bool) -> str:
    """The row's valid items in their order, moved to the end (items_first=False: left padding) or the
    start (right padding). A stable sort by a key: TopK over (group * T + position)."""
    width = g.op("Shape", history, start=1, end=2)  # [1]: T
    positions = g.op("Range", g.scalar_i64(0), g.op("Squeeze", width), g.scalar_i64(1))  # [T]
    group = g.op("Cast", valid, to=TensorProto.INT64)
    if items_first:
        group = g.op("Sub", g.i64(1), group)
    key = g.op("Add", g.op("Mul", group, g.op("Squeeze", width)), positions)
    _, order = g.ops("TopK", key, width, outputs=2, axis=1, largest=0, sorted=1)
    return g.op("GatherElements", history, order, axis=1)


def _last_columns(g: GraphBuilder, left_padded: str, count: int) -> str:
    """The last `count` columns, with zero columns in front when the batch is narrower."""
    batch = g.op("Shape", left_padded, start=0, end=1)
    zeros = g.op(
        "ConstantOfShape",
        g.op("Concat", batch, g.i64(count), axis=0),
        value=numpy_helper.from_array(np.zeros(1, np.int64)),
    )
    widened = g.op("Concat", zeros, left_padded, axis=1)
    return g.op("Slice", widened, g.i64(-count), g.i64(np.iinfo(np.int64).max), g.i64(1))


def _candidate_logits(g: GraphBuilder, state: str, out_kernel: np.ndarray, out_bias: np.ndarray, cands: str) -> str:
    """state [B, k] . out_kernel[:, candidate] + out_bias[candidate]  ->  [B, N]."""
    columns = g.op("Gather", g.constant("out_kernel_t", out_kernel.T.astype(np.float32)), cands)  # [B, N, k]
    dots = g.op("MatMul", columns, g.op("Unsqueeze", state, g.i64(2)))  # [B, N, 1]
    bias = g.op("Gather", g.constant("out_bias", out_bias.astype(np.float32)), cands)
    return g.op("Add", g.op("Squeeze", dots, g.i64(2)), bias)


def _gru4rec(g: GraphBuilder, model: GRU4Rec, right_padded: str, lengths: str, cands: str) -> str:
    units = model.recurrent.shape[0]
    embedded = g.op("Gather", g.constant("gru_embedding", model.embedding.astype(np.float32)), right_padded)
    sequence = g.op("Transpose", embedded, perm=[1, 0, 2])  # [T, B, e]
    # Keras' GRU (reset_after=True) is ONNX's GRU with linear_before_reset=1; both order the gates z, r, h.
    weights = g.constant("gru_w", model.kernel.T[None].astype(np.float32))
    recurrent = g.constant("gru_r", model.recurrent.T[None].astype(np.float32))
    bias = g.constant("gru_b", model.bias.reshape(1, 6 * units).astype(np.float32))
    steps = g.op("Cast", g.op("Max", lengths, g.i64(1)), to=TensorProto.INT32)
    _, last = g.ops(
        "GRU", sequence, weights, recurrent, bias, steps, outputs=2, hidden_size=units, linear_before_reset=1
    )
    state = g.op("Squeeze", last, g.i64(0))  # [B, u]
    # An empty history leaves the state at zero, as the numpy model does.
    has_items = g.op("Unsqueeze", g.op("Greater", lengths, g.i64(0)), g.i64(1))
    state = g.op("Where", has_items, state, g.op("Mul", state, g.f32(0.0)))
    return _candidate_logits(g, state, model.out_kernel, model.out_bias, cands)


def _caser(g: GraphBuilder, model: Caser, left_padded: str, user: str, cands: str) -> str:
    w, length = model.weights, model.length
    window = _last_columns(g, left_padded, length)  # [B, L]
    embedded = g.op("Gather", g.constant("caser_embedding", w["embedding"].astype(np.float32)), window)  # [B, L, d]
    # Vertical filters: weighted sums of the L rows -> [B, d, n_v], flattened d-major as Keras does.
    vertical = g.op(
        "MatMul",
        g.op("Transpose", embedded, perm=[0, 2, 1]),
        g.constant("vertical_kernel", w["vertical_kernel"][:, 0, 0, :].astype(np.float32)),
    )
    vertical = g.op("Add", vertical, g.constant("vertical_bias", w["vertical_bias"].astype(np.float32)))
    parts = [g.op("Flatten", vertical, axis=1)]
    image = g.op("Unsqueeze", embedded, g.i64(1))  # [B, 1, L, d]
    for height in range(1, length + 1):
        # Keras kernel [h, d, 1, n_h] -> ONNX [n_h, 1, h, d]; both are cross-correlations.
        kernel = np.transpose(w[f"horizontal{height}_kernel"], (3, 2, 0, 1)).astype(np.float32)
        conv = g.op(
            "Conv",
            image,
            g.constant(f"horizontal{height}_kernel", kernel),
            g.constant(f"horizontal{height}_bias", w[f"horizontal{height}_bias"].astype(np.float32)),
        )
        parts.append(g.op("ReduceMax", g.op("Relu", conv), axes=[2, 3], keepdims=0))
    features = g.op("Concat", *parts, axis=1)
    hidden = g.op("MatMul", features, g.constant("hidden_kernel", w["hidden_kernel"].astype(np.float32)))
    hidden = g.op("Relu", g.op("Add", hidden, g.constant("hidden_bias", w["hidden_bias"].astype(np.float32))))
    n_users = w["users"].shape[0]
    known = g.op("And", g.op("GreaterOrEqual", user, g.i64(0)), g.op("Less", user, g.i64(n_users)))
    user_index = g.op("Where", known, user, g.op("Mul", user, g.i64(0)))
    user_vector = g.op("Gather", g.constant("users", w["users"].astype(np.float32)), user_index)  # [B, d]
    state = g.op("Concat", hidden, user_vector, axis=1)
    return _candidate_logits(g, state, w["out_kernel"], w["out_bias"], cands)


def _markov(g: GraphBuilder, ranker: Ranker, left_padded: str, cands: str) -> str:
    """Recency-weighted transition values from the last `order` items to each candidate: the neighbour
    lists of those items compared with the candidates, summed by a matrix product."""
    markov = ranker.markov
    order = markov.order
    recent = _last_columns(g, left_padded, order)  # [B, r], most recent last
    decay = (markov.recency_decay ** np.arange(order - 1, -1, -1)).astype(np.float32)
    present = g.op("Cast", g.op("Greater", recent, g.i64(0)), to=TensorProto.FLOAT)
    weights = g.op("Mul", present, g.constant("recency", decay))  # [B, r]
    # Stored int32 (half the graph's largest table after the user embeddings at 100k items); the few gathered
    # rows are widened to the candidates' int64 for the comparison.
    stored = g.constant("markov_indices", markov.transitions.indices.astype(np.int32))
    neighbours = g.op("Cast", g.op("Gather", stored, recent), to=TensorProto.INT64)  # [B, r, M]
    values = g.op("Gather", g.constant("markov_values", markov.transitions.values.astype(np.float32)), recent)
    values = g.op("Mul", values, g.op("Unsqueeze", weights, g.i64(2)))  # [B, r, M]
    flat_neighbours = g.op("Reshape", neighbours, g.i64(0, -1))  # [B, rM]
    flat_values = g.op("Reshape", values, g.i64(0, -1, 1))  # [B, rM, 1]
    matches = g.op("Equal", g.op("Unsqueeze", cands, g.i64(2)), g.op("Unsqueeze", flat_neighbours, g.i64(1)))
    summed = g.op("MatMul", g.op("Cast", matches, to=TensorProto.FLOAT), flat_values)  # [B, N, 1]
    return g.op("Squeeze", summed, g.i64(2))


def _shares(g: GraphBuilder, values: str) -> str:
    """Non-negative values as shares of their row sum (zeros when the row sums to nothing)."""
    positive = g.op("Max", values, g.f32(0.0))
    total = g.op("ReduceSum", positive, g.i64(1), keepdims=1)
    safe = g.op("Where", g.op("Greater", total, g.f32(0.0)), total, g.op("Add", total, g.f32(1.0)))
    return g.op("Div", positive, safe)


def _masked_softmax(g: GraphBuilder, logits: str, mask_f: str, mask: str) -> str:
    """Softmax over each row's real candidates; padding and unknown items get 0."""
    masked = g.op("Where", mask, logits, g.op("Add", g.op("Mul", logits, g.f32(0.0)), g.f32(MASKED_LOGIT)))
    top = g.op("ReduceMax", masked, axes=[1], keepdims=1)
    exps = g.op("Mul", g.op("Exp", g.op("Sub", masked, top)), mask_f)
    return _shares(g, exps)


def build_ranker_graph(ranker: Ranker) -> onnx.ModelProto:
    n_items = ranker.markov.transitions.size
    g = GraphBuilder()
    history = g.op("Cast", contract.HISTORY, to=TensorProto.INT64)
    valid = g.op("And", g.op("Greater", history, g.i64(0)), g.op("Less", history, g.i64(n_items)))
    history = g.op("Where", valid, history, g.op("Mul", history, g.i64(0)))
    left_padded = _compact(g, history, valid, items_first=False)
    lengths = g.op("ReduceSum", g.op("Cast", valid, to=TensorProto.INT64), g.i64(1), keepdims=0)  # [B]

    user = g.op("Slice", g.op("Cast", contract.USER, to=TensorProto.INT64), g.i64(0), g.i64(1), g.i64(1))
    user = g.op("Squeeze", user, g.i64(1))  # [B]

    candidates = g.op("Cast", contract.CANDIDATES, to=TensorProto.INT64)
    mask = g.op("And", g.op("Greater", candidates, g.i64(0)), g.op("Less", candidates, g.i64(n_items)))
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)
    safe_candidates = g.op("Where", mask, candidates, g.op("Mul", candidates, g.i64(0)))

    # A component the fitted blend weighs 0 adds nothing: its nodes are left out, as onnxruntime would run
    # them anyway (ml-100k: Markov at weight 0 was a fifth of the graph's time).
    weighted = {name for name, weight in ranker.weights.items() if weight}
    components = {"candidates": _shares(g, contract.CANDIDATE_SCORES)}
    if "markov" in weighted:
        components["markov"] = _shares(g, g.op("Mul", _markov(g, ranker, left_padded, safe_candidates), mask_f))
    if ranker.gru4rec is not None and "gru4rec" in weighted:
        right_padded = _compact(g, history, valid, items_first=True)
        logits = _gru4rec(g, ranker.gru4rec, right_padded, lengths, safe_candidates)
        components["gru4rec"] = _masked_softmax(g, logits, mask_f, mask)
    if ranker.caser is not None and "caser" in weighted:
        logits = _caser(g, ranker.caser, left_padded, user, safe_candidates)
        components["caser"] = _masked_softmax(g, logits, mask_f, mask)

    total = g.op("Mul", components["candidates"], g.f32(0.0))
    for name, weight in ranker.weights.items():
        if weight and name in components:
            total = g.op("Add", total, g.op("Mul", components[name], g.f32(weight)))
    g.nodes.append(helper.make_node("Identity", [total], [contract.SCORES]))

    def tensor(name: str, element: int, dims: list[str]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, element, dims)

    graph = helper.make_graph(
        g.nodes,
        "recsys_ranker",
        inputs=[
            tensor(contract.HISTORY, TensorProto.INT32, ["batch", "history"]),
            tensor(contract.USER, TensorProto.INT32, ["batch", "user"]),
            tensor(contract.CANDIDATES, TensorProto.INT32, ["batch", "candidates"]),
            tensor(contract.CANDIDATE_SCORES, TensorProto.FLOAT, ["batch", "candidates"]),
        ],
        outputs=[tensor(contract.SCORES, TensorProto.FLOAT, ["batch", "candidates"])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="recsys")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_ranker_onnx(ranker: Ranker, version_dir: Path) -> Path:
    """model.onnx beside the python backend's files, written atomically."""
    path = version_dir / contract.ONNX_MODEL_FILE
    partial = path.with_suffix(".onnx.partial")
    partial.write_bytes(build_ranker_graph(ranker).SerializeToString())
    partial.replace(path)
    return path
