"""The next-item rankers' inference path in numpy: GRU4Rec and Caser (trained by trainer.models.sequential)
as .npy weight arrays. The sequence is encoded once per request and the candidates are scored against that
state: cost grows with the candidates only by a dot product. Validation, the blend's fit and `recsys evaluate`
run these; Triton serves the same computation as an ONNX graph (trainer/ranker_onnx.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class GRU4Rec:
    embedding: np.ndarray  # [n_items, e]
    kernel: np.ndarray  # [e, 3u]  (z, r, h)
    recurrent: np.ndarray  # [u, 3u]
    bias: np.ndarray  # [2, 3u]  (input, recurrent): Keras' reset_after=True layout
    out_kernel: np.ndarray  # [u, n_items]
    out_bias: np.ndarray  # [n_items]
    name: str = "gru4rec"

    @classmethod
    def from_model(cls, model: Any) -> GRU4Rec:
        embedding = model.get_layer("items").get_weights()[0]
        kernel, recurrent, bias = model.get_layer("gru").get_weights()
        out_kernel, out_bias = model.get_layer("output").get_weights()
        return cls(embedding, kernel, recurrent, bias, out_kernel, out_bias)

    def state(self, history: np.ndarray, user: int = 0) -> np.ndarray:
        units = self.recurrent.shape[0]
        h = np.zeros(units, dtype=np.float32)
        for item in history[history > 0]:
            x = self.embedding[item] @ self.kernel + self.bias[0]
            r_h = h @ self.recurrent + self.bias[1]
            z = _sigmoid(x[:units] + r_h[:units])
            r = _sigmoid(x[units : 2 * units] + r_h[units : 2 * units])
            candidate = np.tanh(x[2 * units :] + r * r_h[2 * units :])
            h = z * h + (1.0 - z) * candidate
        return h.astype(np.float32)

    def score(self, state: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return (state @ self.out_kernel[:, candidates] + self.out_bias[candidates]).astype(np.float32)

    def save(self, directory: Path) -> None:
        _save(
            directory,
            self.name,
            {k: getattr(self, k) for k in ("embedding", "kernel", "recurrent", "bias", "out_kernel", "out_bias")},
        )

    @classmethod
    def load(cls, directory: Path) -> GRU4Rec:
        arrays = _load(directory, "gru4rec")
        return cls(
            arrays["embedding"],
            arrays["kernel"],
            arrays["recurrent"],
            arrays["bias"],
            arrays["out_kernel"],
            arrays["out_bias"],
        )


@dataclass
class Caser:
    weights: dict[str, np.ndarray]
    length: int
    name: str = "caser"

    @classmethod
    def from_model(cls, model: Any, length: int) -> Caser:
        weights = {
            "embedding": model.get_layer("items").get_weights()[0],
            # [L, n_v] and [h, d, n_h] as the image convolutions' [L, 1, 1, n_v] and [h, d, 1, n_h].
            "vertical_kernel": model.get_layer("vertical").get_weights()[0][:, None, None, :],
            "vertical_bias": model.get_layer("vertical").get_weights()[1],
            "hidden_kernel": model.get_layer("hidden").get_weights()[0],
            "hidden_bias": model.get_layer("hidden").get_weights()[1],
            "users": model.get_layer("users").get_weights()[0],
            "out_kernel": model.get_layer("output").get_weights()[0],
            "out_bias": model.get_layer("output").get_weights()[1],
        }
        for height in range(1, length + 1):
            kernel, bias = model.get_layer(f"horizontal{height}").get_weights()
            weights[f"horizontal{height}_kernel"], weights[f"horizontal{height}_bias"] = kernel[:, :, None, :], bias
        return cls(weights, length)

    def state(self, history: np.ndarray, user: int = 0) -> np.ndarray:
        w = self.weights
        recent = history[history > 0][-self.length :]
        window = np.pad(recent, (self.length - len(recent), 0))
        e = w["embedding"][window]  # [L, d]
        vertical = np.einsum("ld,lf->df", e, w["vertical_kernel"][:, 0, 0, :]) + w["vertical_bias"]  # [d, n_v]
        parts = [vertical.reshape(-1)]
        for height in range(1, self.length + 1):
            kernel = w[f"horizontal{height}_kernel"][:, :, 0, :]  # [h, d, n_h]
            steps = np.stack(
                [np.einsum("hd,hdf->f", e[t : t + height], kernel) for t in range(self.length - height + 1)]
            )
            parts.append(np.maximum(steps + w[f"horizontal{height}_bias"], 0.0).max(axis=0))
        z = np.maximum(np.concatenate(parts) @ w["hidden_kernel"] + w["hidden_bias"], 0.0)
        user_vector = w["users"][user if 0 <= user < len(w["users"]) else 0]
        return np.concatenate([z, user_vector]).astype(np.float32)

    def score(self, state: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        w = self.weights
        return (state @ w["out_kernel"][:, candidates] + w["out_bias"][candidates]).astype(np.float32)

    def save(self, directory: Path) -> None:
        _save(directory, self.name, self.weights, {"length": self.length})

    @classmethod
    def load(cls, directory: Path) -> Caser:
        meta = json.loads((directory / "caser.json").read_text())
        return cls(_load(directory, "caser"), int(meta["length"]))


def _save(directory: Path, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        np.save(directory / f"{name}.{key}.npy", np.asarray(array, np.float32), allow_pickle=False)
    (directory / f"{name}.json").write_text(json.dumps({**(meta or {}), "arrays": sorted(arrays)}))


def _load(directory: Path, name: str) -> dict[str, np.ndarray]:
    meta = json.loads((directory / f"{name}.json").read_text())
    return {key: np.load(directory / f"{name}.{key}.npy", allow_pickle=False) for key in meta["arrays"]}


def softmax_over(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A probability over the candidates (what the blend combines); candidates outside the mask (padding,
    unknown items) get 0."""
    if mask is not None and not mask.all():
        out = np.zeros_like(scores)
        out[mask] = softmax_over(scores[mask])
        return out
    shifted = np.exp(scores - scores.max()) if len(scores) else scores
    total = float(shifted.sum())
    return shifted / total if total > 0 and math.isfinite(total) else np.zeros_like(scores)
