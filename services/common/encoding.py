"""Proto ↔ domain translation shared by the servicers: item indices that travel between the stages (trusted only
when the same artefact version encoded them) and GenerateSynthetic's kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.v1 import common_pb2, synthetic_pb2
from recsys_runtime.workflow import Workflow
from services.common.errors import Violations
from services.common.validation import validate_synthetic

# The byte layout of PackedCandidates' arrays.
WIRE_INDEX = np.dtype("<i4")
WIRE_SCORE = np.dtype("<f4")


def seen_indices(context: common_pb2.UserContext, workflow: Workflow, version: str) -> np.ndarray:
    """The seen items' indices in `workflow`'s vocabulary: as packed when `version` encoded them (and they are
    well formed), else the ids encoded here."""
    indices = _trusted(context.seen_item_indices, len(context.seen_item_ids), workflow)
    if context.artifact_version == version and indices is not None:
        return indices
    return workflow.items.encode(list(context.seen_item_ids)) if context.seen_item_ids else np.zeros(0, np.int32)


def history_indices(context: common_pb2.UserContext, workflow: Workflow, version: str) -> np.ndarray:
    """Oldest first. A context from another version (during a switch) is re-encoded from its item ids."""
    if context.artifact_version == version:
        return np.fromiter((h.item_index for h in context.history), dtype=np.int32, count=len(context.history))
    return workflow.items.encode([h.item_id for h in context.history])


def pack_candidates(
    item_ids: Sequence[str], scores: np.ndarray, source: str, indices: np.ndarray | None = None, version: str = ""
) -> common_pb2.PackedCandidates:
    """Without indices (or version), a receiver encodes the ids itself."""
    packed = common_pb2.PackedCandidates(
        item_ids=item_ids, scores=np.asarray(scores, WIRE_SCORE).tobytes(), source=source
    )
    if indices is not None:
        packed.item_indices = np.asarray(indices, WIRE_INDEX).tobytes()
        packed.artifact_version = version
    return packed


def packed_scores(packed: common_pb2.PackedCandidates) -> np.ndarray:
    """The scores as float32, or an empty array when the bytes are not one float per id."""
    if len(packed.scores) != WIRE_SCORE.itemsize * len(packed.item_ids):
        return np.zeros(0, WIRE_SCORE)
    return np.frombuffer(packed.scores, WIRE_SCORE)


def packed_indices(packed: common_pb2.PackedCandidates, workflow: Workflow, version: str) -> np.ndarray | None:
    """The indices in `workflow`'s vocabulary when `version` packed them and they are well formed; None when
    the ids must be encoded instead."""
    if packed.artifact_version != version:
        return None
    return _trusted(packed.item_indices, len(packed.item_ids), workflow)


def _trusted(packed: bytes, count: int, workflow: Workflow) -> np.ndarray | None:
    """`count` packed indices, or None when the bytes are not that many indices of `workflow`'s vocabulary."""
    if len(packed) != WIRE_INDEX.itemsize * count:
        return None
    indices = np.frombuffer(packed, WIRE_INDEX)
    if len(indices) and (indices.min() < 0 or indices.max() >= workflow.items.size):
        return None
    return indices


_Kind = synthetic_pb2.GenerateSyntheticRequest
# The wire's kinds and the domain's (validation.SYNTHETIC_KINDS); KIND_UNSPECIFIED, the unset field, names none.
SYNTHETIC_KIND_BY_ENUM: dict[int, str] = {
    _Kind.KIND_USERS: "users",
    _Kind.KIND_ITEMS: "items",
    _Kind.KIND_INTERACTIONS: "interactions",
}


def decode_synthetic_kind(violations: Violations, kind: int) -> str | None:
    """The domain kind a GenerateSyntheticRequest.Kind names; None for the unset value or one the proto does not
    define, refused on "kind" in `violations` with the accepted enum names and the value received."""
    decoded = SYNTHETIC_KIND_BY_ENUM.get(kind)
    if decoded is None:
        accepted = ", ".join(_Kind.Kind.Name(k) for k in SYNTHETIC_KIND_BY_ENUM)
        violations.add("kind", f"must be one of {accepted}, got {kind}")
    return decoded


def validate_synthetic_request(request: synthetic_pb2.GenerateSyntheticRequest, conditions: Mapping[str, str]) -> str:
    """Checks the whole request (validate_synthetic), raising INVALID_ARGUMENT naming every bad field; returns its
    domain kind. `conditions` are the request's, as the caller goes on to use them."""
    violations = Violations()
    kind = decode_synthetic_kind(violations, request.kind)
    validate_synthetic(kind, request.count, request.chunk_size, conditions, violations)
    assert kind is not None  # an undecoded kind was refused just above
    return kind
