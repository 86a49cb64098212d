"""Approximate top-k by inner product over item vectors (faiss IVF-Flat), for catalogues too large to score
exhaustively on every request. The index is faiss' own binary format, never pickle.

IVF-Flat was chosen by measurement (bench/candidates_bench.py): it builds a 1M-item index in seconds
(HNSW took minutes on 2 cores), which matters for retraining, and answers in well under a millisecond.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FILE = "items.faiss"
META_FILE = "items_index.json"


@dataclass
class ItemIndex:
    index: Any  # faiss.IndexIVFFlat
    size: int
    nprobe: int

    @classmethod
    def build(cls, vectors: np.ndarray, nprobe: int, seed: int = 0) -> ItemIndex:
        """vectors[i] is item index i's vector (row 0, the OOV bucket, is indexed too and filtered by callers)."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        nlist = max(1, min(4096, int(4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, size=min(n, max(nlist * 40, 10_000)), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        index.nprobe = nprobe
        return cls(index, n, nprobe)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and inner products of the k best items, best first."""
        scores, indices = self.index.search(np.ascontiguousarray(query, dtype=np.float32)[None, :], k)
        found = indices[0] >= 0
        return indices[0][found].astype(np.int64), scores[0][found]

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(directory / INDEX_FILE))
        (directory / META_FILE).write_text(json.dumps({"size": self.size, "nprobe": self.nprobe}))

    @classmethod
    def load(cls, directory: Path) -> ItemIndex | None:
        if not (directory / INDEX_FILE).is_file():
            return None
        import faiss

        meta = json.loads((directory / META_FILE).read_text())
        index: Any = faiss.read_index(str(directory / INDEX_FILE))
        index.nprobe = int(meta["nprobe"])
        return cls(index, int(meta["size"]), int(meta["nprobe"]))
