"""The candidate model's inference path: a trained Mult-VAE/DAE (trainer.models.autoencoder) as plain .npy
weight arrays, scored with numpy, so the candidates service never imports TensorFlow."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

NAME = "autoencoder"


@dataclass
class AutoencoderScorer:
    """The trained network's inference path in numpy: history indices → logits over all item indices."""

    encoder: list[tuple[np.ndarray, np.ndarray]]  # tanh layers, then the (linear) mean layer last
    decoder: list[tuple[np.ndarray, np.ndarray]]  # tanh layers, then the (linear) logits layer last
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.decoder[-1][0].shape[1])

    def user_state(self, history: np.ndarray) -> np.ndarray:
        """The decoder's last hidden layer for a history of item indices: logits = state @ kernel + bias."""
        kernel, bias = self.encoder[0]
        # Items added after training (with_items) have output columns but no input rows.
        known = np.unique(history[(history > 0) & (history < kernel.shape[0])])
        # The input is binary and L2-normalised, so x @ W is the sum of the history's rows over sqrt(n).
        first = kernel[known].sum(axis=0) / math.sqrt(len(known)) if len(known) else np.zeros(kernel.shape[1])
        return self._state_from_first_layer(first + bias)

    def user_states(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """user_state of many histories at once ([len(histories), state]): one sparse product and a few
        matrix products, where a loop of user_state pays numpy's per-call cost for every user."""
        kernel, bias = self.encoder[0]
        known = [np.unique(h[(h > 0) & (h < kernel.shape[0])]) for h in histories]
        counts = np.array([len(k) for k in known], dtype=np.int64)
        rows = np.repeat(np.arange(len(known)), counts)
        values = (1.0 / np.sqrt(np.repeat(np.maximum(counts, 1), counts))).astype(np.float32)
        columns = np.concatenate(known) if known else np.zeros(0, np.int64)
        inputs = sp.csr_matrix((values, (rows, columns)), shape=(len(known), kernel.shape[0]))
        return self._state_from_first_layer(np.asarray(inputs @ kernel) + bias)

    def _state_from_first_layer(self, h: np.ndarray) -> np.ndarray:
        """The rest of the network from the first layer's pre-activation, for one user ([hidden]) or many."""
        if len(self.encoder) > 1:  # tanh layers, then the linear mean layer
            h = np.tanh(h)
            for kernel, bias in self.encoder[1:-1]:
                h = np.tanh(h @ kernel + bias)
            kernel, bias = self.encoder[-1]
            h = h @ kernel + bias
        for kernel, bias in self.decoder[:-1]:
            h = np.tanh(h @ kernel + bias)
        return h.astype(np.float32)

    def with_items(self, vectors: np.ndarray) -> AutoencoderScorer:
        """A scorer whose catalogue also holds these items (rows [kernel column, bias], as item_vectors
        gives them): they get logits; as input they are unknown."""
        kernel, bias = self.decoder[-1]
        logits = (np.hstack([kernel, vectors[:, :-1].T]).astype(np.float32), np.append(bias, vectors[:, -1]))
        return AutoencoderScorer(self.encoder, [*self.decoder[:-1], logits], self.meta)

    def item_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel [state, n_items], bias [n_items]): logits = state @ kernel + bias."""
        return self.decoder[-1]

    def score(self, history: np.ndarray) -> np.ndarray:
        kernel, bias = self.decoder[-1]
        return (self.user_state(history) @ kernel + bias).astype(np.float32)

    def save(self, directory: Path) -> None:
        target = directory / NAME
        target.mkdir(parents=True, exist_ok=True)
        for part, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, (kernel, bias) in enumerate(layers):
                np.save(target / f"{part}{i}.kernel.npy", kernel.astype(np.float32), allow_pickle=False)
                np.save(target / f"{part}{i}.bias.npy", bias.astype(np.float32), allow_pickle=False)
        meta = {**self.meta, "encoder_layers": len(self.encoder), "decoder_layers": len(self.decoder)}
        (target / "autoencoder.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> AutoencoderScorer:
        source = directory / NAME
        meta = json.loads((source / "autoencoder.json").read_text())

        def layers(part: str, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
            return [
                (
                    np.load(source / f"{part}{i}.kernel.npy", allow_pickle=False),
                    np.load(source / f"{part}{i}.bias.npy", allow_pickle=False),
                )
                for i in range(count)
            ]

        return cls(layers("encoder", meta["encoder_layers"]), layers("decoder", meta["decoder_layers"]), meta)
