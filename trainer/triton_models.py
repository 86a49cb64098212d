"""Artefact versions written before recsys_runtime existed name this module in their
triton/ranker/1/model.py (`from trainer.triton_models import RankerModel as TritonPythonModel`). It stays,
importing the runtime only, so those versions still load in Triton and can be rolled back to."""

from recsys_runtime.triton_models import RankerModel

__all__ = ["RankerModel"]
