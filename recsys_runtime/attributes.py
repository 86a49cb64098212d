"""Attribute encoding for users and items: categorical, numeric, multi-valued and free-text columns.

The same per-value code encodes the training tables offline and one user or item online, so the two
paths give identical tensors by construction. Pure numpy/pandas; persisted as JSON.

Index conventions: categorical and multi-valued index 0 is "missing or out of vocabulary"; text token
0 is padding and 1 is out of vocabulary.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

KINDS = ("categorical", "numeric", "multi", "text")
SCALINGS = ("zscore", "robust")
MULTI_SEPARATOR = "|"
TEXT_PAD, TEXT_OOV = 0, 1
_TOKEN = re.compile(r"[a-z0-9]+")
# Normalised numbers are clipped to this many scale units, so one outlier cannot dominate a model input.
NUMERIC_CLIP = 5.0


def _clean(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str).map(str.strip)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def infer_kind(values: pd.Series) -> str:
    """A best guess from the data; `[workflow.attribute_kinds]` in the config overrides it."""
    present = values[values != ""]
    if present.empty:
        return "categorical"
    unique_ratio = present.nunique() / len(present)
    numeric = pd.to_numeric(present, errors="coerce").notna().mean()
    # Many distinct numbers are codes (zip codes, ids), not quantities.
    if numeric >= 0.95 and unique_ratio < 0.5:
        return "numeric"
    if present.str.contains(MULTI_SEPARATOR, regex=False).mean() >= 0.1:
        return "multi"
    if unique_ratio > 0.5 and present.map(lambda v: len(tokenize(v))).mean() >= 2:
        return "text"
    return "categorical"


@dataclass
class ColumnEncoder:
    name: str
    kind: str
    vocabulary: list[str] = field(default_factory=list)
    center: float = 0.0
    scale: float = 1.0
    max_tokens: int = 0
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        offset = 2 if self.kind == "text" else 1
        self._index = {value: i + offset for i, value in enumerate(self.vocabulary)}

    @property
    def width(self) -> int:
        """Columns this encoder adds to its block of the encoded tensor."""
        if self.kind == "multi":
            return len(self.vocabulary) + 1
        if self.kind == "text":
            return self.max_tokens
        return 1

    @classmethod
    def fit(cls, name: str, kind: str, values: pd.Series, options: Mapping[str, Any]) -> ColumnEncoder:
        values = _clean(values)
        min_count = int(options["min_category_count"])
        if kind == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
            numbers = numbers[np.isfinite(numbers)]  # as in encode(): non-finite values are missing
            if len(numbers) == 0:
                return cls(name, kind)
            if options["numeric_scaling"] == "robust":
                center = float(np.median(numbers))
                spread = float(np.subtract(*np.percentile(numbers, [75, 25])))
            else:
                center, spread = float(numbers.mean()), float(numbers.std())
            return cls(name, kind, center=center, scale=spread if spread > 0 else 1.0)
        if kind == "text":
            counts = Counter(token for value in values for token in tokenize(value))
            kept = [t for t, c in counts.items() if c >= min_count]
            kept.sort(key=lambda t: (-counts[t], t))
            return cls(name, kind, kept[: int(options["max_text_vocabulary"])], max_tokens=int(options["max_tokens"]))
        if kind == "multi":
            counts = Counter(part.strip() for value in values for part in value.split(MULTI_SEPARATOR) if part.strip())
        else:
            counts = Counter(v for v in values if v)
        return cls(name, kind, sorted(v for v, c in counts.items() if c >= min_count))

    def encode(self, value: str) -> list[float] | list[int]:
        """One value as this column's slice of the encoded row."""
        value = value.strip()
        if self.kind == "categorical":
            return [self._index.get(value, 0)]
        if self.kind == "numeric":
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                return [0.0]  # missing: the centre of the distribution
            return [max(-NUMERIC_CLIP, min(NUMERIC_CLIP, (number - self.center) / self.scale))]
        if self.kind == "multi":
            hot = [0] * self.width
            for part in value.split(MULTI_SEPARATOR):
                if part.strip():
                    hot[self._index.get(part.strip(), 0)] = 1
            return hot
        tokens = [self._index.get(t, TEXT_OOV) for t in tokenize(value)][: self.max_tokens]
        return tokens + [TEXT_PAD] * (self.max_tokens - len(tokens))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "vocabulary": self.vocabulary,
            "center": self.center,
            "scale": self.scale,
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ColumnEncoder:
        return cls(
            data["name"],
            data["kind"],
            list(data["vocabulary"]),
            float(data["center"]),
            float(data["scale"]),
            int(data["max_tokens"]),
        )


@dataclass
class EncodedAttributes:
    """Rows of encoded attributes; one block per kind, columns in the encoder's column order."""

    categorical: np.ndarray  # int32 [n, categorical columns]
    numeric: np.ndarray  # float32 [n, numeric columns]
    multi_hot: np.ndarray  # int8 [n, sum of multi-valued widths]
    tokens: np.ndarray  # int32 [n, sum of max_tokens of text columns]

    def row(self, i: int) -> EncodedAttributes:
        return EncodedAttributes(
            self.categorical[i : i + 1], self.numeric[i : i + 1], self.multi_hot[i : i + 1], self.tokens[i : i + 1]
        )


@dataclass
class AttributeEncoder:
    key: str
    columns: list[ColumnEncoder]

    @classmethod
    def fit(
        cls, frame: pd.DataFrame | None, key: str, kinds: Mapping[str, str], options: Mapping[str, Any]
    ) -> AttributeEncoder:
        if frame is None:
            return cls(key, [])
        columns = []
        for name in frame.columns:
            if name == key:
                continue
            values = _clean(frame[name])
            kind = kinds.get(name) or infer_kind(values)
            columns.append(ColumnEncoder.fit(name, kind, values, options))
        return cls(key, columns)

    def _of(self, kind: str) -> list[ColumnEncoder]:
        return [c for c in self.columns if c.kind == kind]

    def encode_rows(self, rows: Sequence[Mapping[str, str]]) -> EncodedAttributes:
        """The one encoding path, for a whole table and for a single online row alike."""

        def block(kind: str, dtype: type) -> np.ndarray:
            encoders = self._of(kind)
            width = sum(c.width for c in encoders)
            out: np.ndarray = np.zeros((len(rows), width), dtype=dtype)
            for r, row in enumerate(rows):
                values: list[float | int] = []
                for encoder in encoders:
                    values += encoder.encode(str(row.get(encoder.name, "")))
                out[r] = values
            return out

        return EncodedAttributes(
            block("categorical", np.int32),
            block("numeric", np.float32),
            block("multi", np.int8),
            block("text", np.int32),
        )

    def encode_frame(self, frame: pd.DataFrame) -> EncodedAttributes:
        columns = [c.name for c in self.columns if c.name in frame.columns]
        if not columns:  # one (empty) row per frame row, which to_dict would not give
            return self.encode_rows([{}] * len(frame))
        records = frame[columns].fillna("").astype(str).to_dict("records")
        return self.encode_rows([{str(k): str(v) for k, v in row.items()} for row in records])

    def _cells(self, encoded: EncodedAttributes) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The non-zero cells (rows, columns, float32 values) of the model input rows, and their width: categorical
        one-hot (without the missing bucket), numeric, multi-hot and a bag of text tokens (without padding). A
        token repeated in one value appears twice, to be summed (a bag, not a set)."""
        rows: list[np.ndarray] = [np.zeros(0, np.int64)]
        columns: list[np.ndarray] = [np.zeros(0, np.int64)]
        values: list[np.ndarray] = [np.zeros(0, np.float32)]
        offset = 0

        def add(row: np.ndarray, column: np.ndarray, value: np.ndarray | None = None) -> None:
            rows.append(row)
            columns.append(offset + column)
            values.append(np.ones(len(row), np.float32) if value is None else value.astype(np.float32))

        for position, encoder in enumerate(self._of("categorical")):
            codes = encoded.categorical[:, position]
            present = np.flatnonzero(codes > 0)  # index 0 (missing/unknown) carries no content
            add(present, codes[present] - 1)
            offset += len(encoder.vocabulary)
        row, column = np.nonzero(encoded.numeric)
        add(row, column, encoded.numeric[row, column])
        offset += encoded.numeric.shape[1]
        row, column = np.nonzero(encoded.multi_hot)
        add(row, column)
        offset += encoded.multi_hot.shape[1]
        start = 0
        for encoder in self._of("text"):
            tokens = encoded.tokens[:, start : start + encoder.max_tokens]
            start += encoder.max_tokens
            row, slot = np.nonzero(tokens != TEXT_PAD)
            add(row, tokens[row, slot] - 1)
            offset += len(encoder.vocabulary) + 1
        return np.concatenate(rows), np.concatenate(columns), np.concatenate(values), offset

    def sparse(self, encoded: EncodedAttributes) -> sp.csr_matrix:
        """The model input rows, sparse: a text column's bag is as wide as its vocabulary, so 100k items x 5k
        tokens would be 2 GB dense. The conversion to CSR sums a repeated token's cells."""
        rows, columns, values, width = self._cells(encoded)
        return sp.coo_matrix((values, (rows, columns)), shape=(len(encoded.categorical), width)).tocsr()

    def dense(self, encoded: EncodedAttributes) -> np.ndarray:
        """The model input rows, dense: for a few rows at a time (online requests), without scipy's conversions
        (one ml-100k user row: 53 us, against 192 us through sparse().toarray())."""
        rows, columns, values, width = self._cells(encoded)
        out = np.zeros((len(encoded.categorical), width), np.float32)
        np.add.at(out, (rows, columns), values)
        return out

    def sparse_table(self, table: pd.DataFrame | None, ids: pd.Index) -> sp.csr_matrix:
        """sparse() for every id of a vocabulary, row i for index i; row 0 (the OOV bucket) is empty, as is
        every id the table does not describe."""
        frame = pd.DataFrame({self.key: ids.astype(str)})
        if table is not None:
            frame = frame.merge(table.astype(str), on=self.key, how="left").fillna("")
        features = self.sparse(self.encode_frame(frame))
        return sp.vstack([sp.csr_matrix((1, features.shape[1]), dtype=np.float32), features], format="csr")

    def describe(self) -> dict[str, str]:
        return {c.name: c.kind for c in self.columns}

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "columns": [c.to_json() for c in self.columns]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttributeEncoder:
        return cls(data["key"], [ColumnEncoder.from_json(c) for c in data["columns"]])
