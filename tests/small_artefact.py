"""A small real artefact for the cores' unit tests: demo data, the fitted workflow and the trainer's numpy
models (item-kNN candidates, popularity, Markov), saved as the trainer lays them out; no Keras training."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_runtime.layout import MODELS_DIR, WORKFLOW_DIR
from recsys_runtime.models.popularity import save_popularity
from recsys_runtime.workflow import Workflow
from trainer.config import load_config
from trainer.demo import generate
from trainer.pipeline import FittedModels, fit_models


@dataclass
class SmallArtefact:
    directory: Path
    config: dict[str, Any]
    models: FittedModels


def item_knn_artefact(directory: Path, seed: int) -> SmallArtefact:
    data = generate(n_users=80, n_items=60, mean_history=8, seed=seed)
    workflow = Workflow.fit(data.interactions, 20, items=data.items, users=data.users)
    config: dict[str, Any] = copy.deepcopy(load_config())
    config["candidates"]["model"] = "item_knn"
    models = fit_models(workflow.encode_interactions(data.interactions), workflow, config)
    workflow.save(directory / WORKFLOW_DIR)
    models_dir = directory / MODELS_DIR
    models_dir.mkdir()
    save_popularity(models_dir, models.popularity)
    models.candidates.save(models_dir)
    return SmallArtefact(directory, config, models)
