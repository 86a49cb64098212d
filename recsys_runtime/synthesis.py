"""What the synthetic service serves, from the conditional GANs' generators (recsys_runtime.models.generator;
trainer.synthesis fits them):

- cold users: attributes -> the generator's expected interaction vector -> a generated history, which the
  candidate and ranking stages read like a real one;
- synthetic users, items and time-ordered interactions, seeded, optionally conditioned on attribute values,
  generated chunk by chunk (nothing holds all rows);
- registered items: attributes -> a collaborative vector for the candidate model.

Attributes of synthetic users and items are drawn column by column from the training marginals (never a
whole real row, which could single out a person), then the generators are conditioned on them. Text
columns (titles, descriptions) are not synthesised.

    gan/user_generator.*   gan/item_generator.*   gan/synthesis.json
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from recsys_runtime.models.generator import ITEM_GENERATOR, USER_GENERATOR, Generator
from recsys_runtime.workflow import Workflow

GAN_DIR = "gan"
META_FILE = "synthesis.json"
SYNTHETIC_USER_PREFIX = "synthetic-user-"
SYNTHETIC_ITEM_PREFIX = "synthetic-item-"
TRAINING_SETS_FILE = "training_sets.npy"
MAX_REDRAWS = 20


def item_set_key(indices: np.ndarray) -> int:
    """A 64-bit digest of a set of item indices."""
    digest = hashlib.blake2b(np.sort(np.asarray(indices, np.int64)).astype("<i8").tobytes(), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


def synthetic_id(prefix: str, seed: int, index: int) -> str:
    """The id of the index-th synthetic user or item of a seeded stream."""
    return f"{prefix}{seed}-{index}"


def _utf8_size(value: str) -> int:
    return len(value.encode())


def stable_seed(*parts: object) -> int:
    """A seed from strings, equal across processes and machines (Python's hash() is salted)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class Synthesis:
    workflow: Workflow
    users: Generator
    items: Generator | None
    user_marginals: dict[str, dict[str, list[Any]]]
    item_marginals: dict[str, dict[str, list[Any]]]
    history_lengths: np.ndarray  # quantiles of real history lengths
    first_timestamps: np.ndarray  # quantiles of users' first timestamps
    gaps: np.ndarray  # quantiles of seconds between a user's consecutive interactions
    samples: int  # generator samples averaged for a cold user
    cold_history_length: int  # items in a cold user's generated history
    curves: dict[str, dict[str, list[float]]]
    training_sets: set[int]  # item_set_key of every training user's items

    # ------------------------------------------------------------ conditions

    def user_conditions(self, rows: Sequence[Mapping[str, str]]) -> np.ndarray:
        encoder = self.workflow.user_attributes
        return encoder.dense(encoder.encode_rows(rows))

    def item_conditions(self, rows: Sequence[Mapping[str, str]]) -> np.ndarray:
        encoder = self.workflow.item_attributes
        return encoder.dense(encoder.encode_rows(rows))

    # ------------------------------------------------------------ cold start

    def cold_history(
        self, user_id: str, attributes: Mapping[str, str], length: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, expected probabilities) of the items such a user is expected to have interacted
        with, least likely first, so that the most likely are the most recent to sequence models. Seeded by
        the user id: the same user gets the same history."""
        rng = np.random.default_rng(stable_seed("cold", user_id))
        expected = self.users.expected(self.user_conditions([attributes]), rng, self.samples)[0]
        expected[0] = -np.inf  # the out-of-vocabulary bucket is never an item
        length = min(length or self.cold_history_length, len(expected) - 1)
        best = np.argpartition(-expected, length - 1)[:length]
        ordered = best[np.lexsort((best, expected[best]))]  # ascending score, ties by index
        return ordered, expected[ordered]

    def item_vectors(self, attributes: list[Mapping[str, str]], item_ids: list[str]) -> np.ndarray:
        """Collaborative vectors for new items: the generator's expectation given their attributes."""
        if self.items is None:
            raise LookupError("this artefact has no item generator (no item attributes or no autoencoder)")
        rng = np.random.default_rng(stable_seed("items", *item_ids))
        return self.items.expected(self.item_conditions(attributes), rng, self.samples)

    # ------------------------------------------------------------ synthetic data

    def _attributes(
        self,
        marginals: dict[str, dict[str, list[Any]]],
        conditions: Mapping[str, str],
        n: int,
        rng: np.random.Generator,
    ) -> list[dict[str, str]]:
        columns: dict[str, np.ndarray] = {}
        for name, table in marginals.items():
            columns[name] = rng.choice(np.asarray(table["values"], dtype=object), n, p=np.asarray(table["weights"]))
        for name, value in conditions.items():
            columns[name] = np.full(n, value, dtype=object)
        return [{name: str(values[i]) for name, values in columns.items()} for i in range(n)]

    def _quantile_sample(self, quantiles: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.interp(rng.random(n), np.linspace(0.0, 1.0, len(quantiles)), quantiles)

    def _entities(
        self,
        kind: str,
        prefix: str,
        marginals: dict[str, dict[str, list[Any]]],
        count: int,
        seed: int,
        conditions: Mapping[str, str],
        chunk: int,
    ) -> Iterator[list[tuple[str, dict[str, str]]]]:
        rng = np.random.default_rng(stable_seed(kind, seed))
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            attributes = self._attributes(marginals, conditions, n, rng)
            yield [(synthetic_id(prefix, seed, start + i), attributes[i]) for i in range(n)]

    def generate_users(
        self, count: int, seed: int, conditions: Mapping[str, str], chunk: int
    ) -> Iterator[list[tuple[str, dict[str, str]]]]:
        return self._entities("users", SYNTHETIC_USER_PREFIX, self.user_marginals, count, seed, conditions, chunk)

    def generate_items(
        self, count: int, seed: int, conditions: Mapping[str, str], chunk: int
    ) -> Iterator[list[tuple[str, dict[str, str]]]]:
        return self._entities("items", SYNTHETIC_ITEM_PREFIX, self.item_marginals, count, seed, conditions, chunk)

    def generate_interactions(
        self, count: int, seed: int, conditions: Mapping[str, str], chunk: int
    ) -> Iterator[tuple[list[tuple[str, dict[str, str]]], list[tuple[str, str, int]]]]:
        """Synthetic users (with attributes) and their time-ordered interactions, `count` interactions in all,
        in chunks of at most `chunk` interactions. Each user's items are drawn without replacement from
        one generated interaction vector (its values as weights); history lengths and time gaps follow the
        training data's distributions."""
        rng = np.random.default_rng(stable_seed("interactions", seed))
        item_ids = np.asarray(self.workflow.items.decode(np.arange(1, self.workflow.items.size)), dtype=object)
        made, user = 0, 0
        users: list[tuple[str, dict[str, str]]] = []
        rows: list[tuple[str, str, int]] = []
        batch = 256  # users generated per generator call
        while made < count:
            attributes = self._attributes(self.user_marginals, conditions, batch, rng)
            vectors = self.users.sample(self.user_conditions(attributes), rng)[:, 1:].astype(np.float64)
            lengths = np.maximum(1, np.rint(self._quantile_sample(self.history_lengths, batch, rng))).astype(int)
            starts = self._quantile_sample(self.first_timestamps, batch, rng)
            for b in range(batch):
                if made >= count:
                    break
                length = int(min(lengths[b], count - made, len(item_ids)))
                chosen = self._draw_items(vectors[b], length, rng)
                if chosen is None:
                    continue  # every draw equalled a training user's item set
                times = starts[b] + np.cumsum(self._quantile_sample(self.gaps, length, rng))
                user_id = synthetic_id(SYNTHETIC_USER_PREFIX, seed, user)
                users.append((user_id, attributes[b]))
                rows.extend(
                    zip([user_id] * length, item_ids[chosen].tolist(), times.astype(np.int64).tolist(), strict=True)
                )
                made += length
                user += 1
                while len(rows) >= chunk:
                    yield users, rows[:chunk]
                    users, rows = [], rows[chunk:]
        if rows or users:
            yield users, rows

    def _draw_items(self, weights: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray | None:
        """`length` item positions drawn without replacement in proportion to weights (Gumbel top-k, one
        vectorised step), redrawn when the set equals a training user's: no synthetic user copies a real one."""
        log_weights = np.log(np.maximum(weights, 1e-12))
        for _ in range(MAX_REDRAWS):
            keys = log_weights - np.log(-np.log(rng.random(len(weights))))
            chosen = np.argpartition(-keys, length - 1)[:length]
            if item_set_key(chosen + 1) not in self.training_sets:
                return chosen
        return None

    # ------------------------------------------------------------ size bounds
    # A streamed chunk must fit one message: these rows are at least as large, field by field in UTF-8, as any
    # row the generators above make for the same request, so rows x their size bounds a chunk.

    def widest_entity(
        self, kind: str, count: int, seed: int, conditions: Mapping[str, str]
    ) -> tuple[str, dict[str, str]]:
        """For generate_users (kind "users") or generate_items: the id with the most digits and, per attribute
        (the sampled columns and the conditions), the longest value it can take."""
        prefix = SYNTHETIC_USER_PREFIX if kind == "users" else SYNTHETIC_ITEM_PREFIX
        marginals = self.user_marginals if kind == "users" else self.item_marginals
        attributes = {name: max(map(str, table["values"]), key=_utf8_size) for name, table in marginals.items()}
        attributes.update(conditions)
        return synthetic_id(prefix, seed, count - 1), attributes

    def widest_interaction(self, count: int, seed: int) -> tuple[str, str, int]:
        """For generate_interactions (which makes at most `count` users): the user id with the most digits,
        the longest catalogue item id and a timestamp of the widest varint (a negative one takes 10 bytes)."""
        return synthetic_id(SYNTHETIC_USER_PREFIX, seed, count - 1), self._longest_item_id, -1

    @cached_property
    def _longest_item_id(self) -> str:
        item_ids = self.workflow.items.decode(np.arange(1, self.workflow.items.size))
        return max(map(str, item_ids), key=_utf8_size, default="")

    # ------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users.save(directory, USER_GENERATOR)
        if self.items is not None:
            self.items.save(directory, ITEM_GENERATOR)
        meta = {
            "user_marginals": self.user_marginals,
            "item_marginals": self.item_marginals,
            "history_lengths": self.history_lengths.tolist(),
            "first_timestamps": self.first_timestamps.tolist(),
            "gaps": self.gaps.tolist(),
            "samples": self.samples,
            "cold_history_length": self.cold_history_length,
            "item_generator": self.items is not None,
            "curves": self.curves,
        }
        (directory / META_FILE).write_text(json.dumps(meta))
        keys = np.asarray(sorted(self.training_sets), dtype=np.uint64)
        np.save(directory / TRAINING_SETS_FILE, keys, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, workflow: Workflow) -> Synthesis:
        meta = json.loads((directory / META_FILE).read_text())
        return cls(
            workflow,
            Generator.load(directory, USER_GENERATOR),
            Generator.load(directory, ITEM_GENERATOR) if meta["item_generator"] else None,
            meta["user_marginals"],
            meta["item_marginals"],
            np.asarray(meta["history_lengths"], np.float64),
            np.asarray(meta["first_timestamps"], np.float64),
            np.asarray(meta["gaps"], np.float64),
            int(meta["samples"]),
            int(meta["cold_history_length"]),
            meta["curves"],
            {int(k) for k in np.load(directory / TRAINING_SETS_FILE, allow_pickle=False)},
        )
