"""Per-user, time-ordered item sequences: the last L items, left-padded, with time gaps as a feature."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PAD_INDEX = 0


@dataclass
class EncodedSequences:
    item_indices: np.ndarray  # int32 [n, L], oldest first, left-padded with 0
    timestamps: np.ndarray  # int64 [n, L], 0 in padding
    gaps: np.ndarray  # float32 [n, L], log1p(seconds since the previous item); 0 for the first and padding
    lengths: np.ndarray  # int32 [n], real (unpadded) length


def encode_sequence(item_indices: np.ndarray, timestamps: np.ndarray, max_length: int) -> EncodedSequences:
    """One user's history (oldest first) as a fixed-length row; the one path offline and online."""
    items = np.asarray(item_indices, dtype=np.int32)[-max_length:]
    times = np.asarray(timestamps, dtype=np.int64)[-max_length:]
    length = len(items)
    out_items = np.full((1, max_length), PAD_INDEX, dtype=np.int32)
    out_times = np.zeros((1, max_length), dtype=np.int64)
    out_gaps = np.zeros((1, max_length), dtype=np.float32)
    if length:
        out_items[0, -length:] = items
        out_times[0, -length:] = times
        # The gap of the oldest kept item is measured from the item before it, when there was one.
        full_times = np.asarray(timestamps, dtype=np.int64)
        previous = (
            full_times[-length - 1 : -1] if len(full_times) > length else np.concatenate([[times[0]], times[:-1]])
        )
        out_gaps[0, -length:] = np.log1p(np.maximum(times - previous, 0)).astype(np.float32)
    return EncodedSequences(out_items, out_times, out_gaps, np.array([length], dtype=np.int32))


def encode_sequences(encoded: pd.DataFrame, max_length: int) -> tuple[np.ndarray, EncodedSequences]:
    """Every user's sequence from interactions sorted by user then time; returns (user indices, sequences)."""
    if encoded.empty:
        empty = EncodedSequences(
            np.zeros((0, max_length), np.int32),
            np.zeros((0, max_length), np.int64),
            np.zeros((0, max_length), np.float32),
            np.zeros(0, np.int32),
        )
        return np.zeros(0, dtype=np.int32), empty
    users = encoded["user_index"].to_numpy()
    items = encoded["item_index"].to_numpy()
    times = encoded["timestamp"].to_numpy()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]).astype(int)
    ends = np.concatenate([bounds, [len(users)]]).astype(int)
    rows = [encode_sequence(items[s:e], times[s:e], max_length) for s, e in zip(starts, ends, strict=True)]
    stacked = EncodedSequences(
        np.vstack([r.item_indices for r in rows]),
        np.vstack([r.timestamps for r in rows]),
        np.vstack([r.gaps for r in rows]),
        np.concatenate([r.lengths for r in rows]),
    )
    return users[starts].astype(np.int32), stacked
