"""Item indices of a user context, trusted only when the same artefact version encoded them."""

from __future__ import annotations

import numpy as np

from recsys.v1 import common_pb2
from trainer.workflow import Workflow


def history_indices(context: common_pb2.UserContext, workflow: Workflow, version: str) -> np.ndarray:
    """Oldest first. A context from another version (during a switch) is re-encoded from its item ids."""
    if context.artifact_version == version:
        return np.fromiter((h.item_index for h in context.history), dtype=np.int32, count=len(context.history))
    return workflow.items.encode([h.item_id for h in context.history])
