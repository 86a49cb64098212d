"""Names and types the Triton model repository and the ranking service share: the one definition of the
ranking models' tensors."""

from __future__ import annotations

import numpy as np

REPOSITORY_DIR = "triton"
RANKER_MODEL = "ranker"
# Inside a model's directory: its deployment configurations (configs/<name>.pbtxt), which `recsys serve
# --triton-config NAME` picks from; the default configuration is config.pbtxt beside it.
CONFIGS_DIR = "configs"
# Inside a model version's directory: the ranker as one ONNX graph (trainer.ranker_onnx writes it), what
# every configuration serves.
ONNX_MODEL_FILE = "model.onnx"
# Beside the versions of an artefact root: the model repository Triton serves. Every version's ranker appears
# there as ranker-<version>, a relative link into that version, so two versions can be loaded at once while
# the suite switches between them (and rolled back to) without restarting Triton.
SERVING_REPOSITORY_DIR = "triton-repository"
MAX_BATCH_SIZE = 64
# How long the dynamic batcher may hold a request to group it with others.
MAX_QUEUE_DELAY_US = 300

# Inputs: the user's recent item indices (oldest first), the user's index (0 when unknown), the candidates'
# item indices and their scores from the candidate stage. Output: one ranking score per candidate.
HISTORY = "HISTORY"
USER = "USER"
CANDIDATES = "CANDIDATES"
CANDIDATE_SCORES = "CANDIDATE_SCORES"
SCORES = "SCORES"

# Every tensor travels with a leading batch dimension of 1: shape [1, n]. The ranking service pads HISTORY
# and CANDIDATES (and CANDIDATE_SCORES) with zeros to the next multiple of these, so that requests share a
# few shapes: GPU configurations batch only requests of equal shapes. Index 0 is padding to every model.
# HISTORY pads no further than the workflow's max_history: a full 50-item history stays 50 wide, not 64, and
# the GRU runs no steps over padding.
HISTORY_BUCKET = 16
CANDIDATE_BUCKET = 32

# name -> (Triton data type, numpy dtype name)
INPUTS = {
    HISTORY: ("TYPE_INT32", "int32"),
    USER: ("TYPE_INT32", "int32"),
    CANDIDATES: ("TYPE_INT32", "int32"),
    CANDIDATE_SCORES: ("TYPE_FP32", "float32"),
}
OUTPUTS = {SCORES: ("TYPE_FP32", "float32")}


def served_model_name(version: str) -> str:
    """The Triton model name of an artefact version's ranker in the serving repository."""
    return f"{RANKER_MODEL}-{version}"


def wire_type(triton_type: str) -> str:
    """TYPE_INT32 -> INT32, as tritonclient's InferInput wants it."""
    return triton_type.removeprefix("TYPE_")


def pad_to_bucket(values: np.ndarray, bucket: int, front: bool = False, limit: int = 0) -> np.ndarray:
    """Zeros added (in front, or behind) up to the next multiple of bucket; at least one bucket. A limit
    (0: none) caps that size for values no longer than it; longer values are never cut."""
    size = max(bucket, -(-len(values) // bucket) * bucket)
    if limit > 0:
        size = min(size, max(limit, len(values)))
    padded = np.zeros(size, values.dtype)  # not np.pad: its generality costs more than the copy per request
    if front:
        padded[size - len(values) :] = values
    else:
        padded[: len(values)] = values
    return padded
