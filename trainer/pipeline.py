"""`recsys train`: raw data in, one complete, checksummed artefact version out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer import artifacts
from trainer.data import Dataset
from trainer.evaluation import histories_by_user, hit_rate_ndcg, leave_last_out
from trainer.layout import (
    CATALOG_DIR,
    CONFIG_FILE,
    HISTORIES_FILE,
    MODELS_DIR,
    RANKING_FILE,
    REPORT_JSON,
    REPORT_MD,
    WORKFLOW_DIR,
)
from trainer.models.item_knn import ItemKNN, candidate_scores
from trainer.models.markov import Markov, blend
from trainer.models.neighbours import top_n
from trainer.models.popularity import fit_popularity, save_popularity
from trainer.workflow import Workflow

Step = Callable[[str], None]


@dataclass
class TrainResult:
    version_dir: Path
    report: dict[str, Any]


@dataclass
class FittedModels:
    popularity: np.ndarray
    item_knn: ItemKNN
    markov: Markov


def fit_models(encoded: pd.DataFrame, workflow: Workflow, config: dict[str, Any]) -> FittedModels:
    # Users below min_user_count share the OOV index; as one "user" they would invent co-occurrences.
    encoded = encoded[encoded["user_index"] > 0]
    users = encoded["user_index"].to_numpy()
    items = encoded["item_index"].to_numpy()
    timestamps = encoded["timestamp"].to_numpy()
    popularity = fit_popularity(items, timestamps, workflow.items.size, config["popularity"]["half_life_days"])
    knn = config["item_knn"]
    item_knn = ItemKNN.fit(
        users,
        items,
        workflow.users.size,
        workflow.items.size,
        knn["neighbours"],
        knn["shrinkage"],
        knn["recency_decay"],
    )
    markov_config = config["markov"]
    markov = Markov.fit(
        users,
        items,
        workflow.items.size,
        markov_config["neighbours"],
        markov_config["order"],
        markov_config["recency_decay"],
    )
    return FittedModels(popularity, item_knn, markov)


def validate(encoded: pd.DataFrame, workflow: Workflow, config: dict[str, Any]) -> dict[str, Any]:
    """Fit on all but each sampled user's last item, score that item; pick the blend weight on it."""
    ranking = config["ranking"]
    train_rows, held_out = leave_last_out(encoded, ranking["validation_users"], config["seed"])
    if held_out.empty:
        return {"users": 0, "markov_weight": ranking["markov_weight"]}
    models = fit_models(train_rows, workflow, config)
    histories = histories_by_user(train_rows)
    max_history = workflow.max_history
    n_candidates = config["serving"]["candidates"]
    targets = held_out["item_index"].to_numpy()
    grid = ranking["blend_grid"] if ranking["fit_blend"] else [ranking["markov_weight"]]
    popular, candidate_lists = [], []
    blended: dict[float, list[np.ndarray]] = {w: [] for w in grid}
    for user in held_out["user_index"].to_numpy():
        seen = histories[int(user)]
        recent = seen[-max_history:]
        popular.append(top_n(models.popularity, n_candidates, seen))
        scores = candidate_scores(models.item_knn, recent, models.popularity)
        candidates = top_n(scores, n_candidates, seen)
        candidate_lists.append(candidates)
        transition = models.markov.score(recent, candidates)
        for weight in grid:
            order = np.argsort(-blend(scores[candidates], transition, weight), kind="stable")
            blended[weight].append(candidates[order])
    by_weight = {w: hit_rate_ndcg(lists, targets, 10) for w, lists in blended.items()}
    best = max(grid, key=lambda w: (by_weight[w]["NDCG@10"], -abs(w - ranking["markov_weight"])))
    return {
        "users": len(targets),
        "popularity": hit_rate_ndcg(popular, targets, 10),
        "item_knn": {
            **hit_rate_ndcg(candidate_lists, targets, 10),
            f"HR@{n_candidates}": hit_rate_ndcg(candidate_lists, targets, n_candidates)[f"HR@{n_candidates}"],
        },
        "blend_by_weight": {str(w): m for w, m in by_weight.items()},
        "markov_weight": best,
        "blend": by_weight[best],
    }


def previous_workflow(out_root: Path) -> Workflow | None:
    """The workflow of the version `current` points at, so ids that persist keep their indices."""
    try:
        return Workflow.load(artifacts.resolve_version(out_root) / WORKFLOW_DIR)
    except (artifacts.ArtifactError, OSError, ValueError, KeyError):
        return None


def _entity_table(frame: pd.DataFrame | None, key: str) -> pd.DataFrame:
    if frame is None:
        return pd.DataFrame({key: pd.Series([], dtype=str)})
    return frame.astype(str)


def train(dataset: Dataset, config: dict[str, Any], out_root: Path, step: Step | None = None) -> TrainResult:
    """Fit every model and write one artefact version under out_root; returns its directory."""
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        if step is not None:
            step(name)
        started = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - started, 3)

    interactions = dataset.interactions
    if interactions.empty:
        raise ValueError("no usable interactions after cleaning; see the data-quality report")
    data_config = config["data"]
    with stage("workflow"):
        workflow = Workflow.fit(
            interactions,
            config["workflow"]["max_history"],
            data_config["min_user_count"],
            data_config["min_item_count"],
            items=dataset.items,
            users=dataset.users,
            options=config["workflow"],
            previous=previous_workflow(out_root),
        )
        encoded = workflow.encode_interactions(interactions)
    with stage("validation"):
        validation = validate(encoded, workflow, config)
    with stage("models"):
        models = fit_models(encoded, workflow, config)

    version = artifacts.new_version_name()
    if step is not None:
        step("write")  # not timed: the report is written inside this step
    with artifacts.staging_directory(out_root, version) as staging:
        workflow.save(staging / WORKFLOW_DIR)
        catalog = staging / CATALOG_DIR
        catalog.mkdir()
        _entity_table(dataset.items, "item_id").to_parquet(catalog / "items.parquet", index=False)
        _entity_table(dataset.users, "user_id").to_parquet(catalog / "users.parquet", index=False)
        ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
        ordered[["user_id", "item_id", "timestamp"]].to_parquet(staging / HISTORIES_FILE, index=False)
        models_dir = staging / MODELS_DIR
        models_dir.mkdir()
        save_popularity(models_dir, models.popularity)
        models.item_knn.save(models_dir)
        models.markov.save(models_dir)
        (models_dir / RANKING_FILE).write_text(json.dumps({"markov_weight": validation["markov_weight"]}))
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))
        report = {
            "version": version,
            "data": {
                "interactions": len(interactions),
                "users": len(workflow.users),
                "items": len(workflow.items),
                "items_with_attributes": 0 if dataset.items is None else len(dataset.items),
                "users_with_attributes": 0 if dataset.users is None else len(dataset.users),
                "item_attribute_kinds": workflow.item_attributes.describe(),
                "user_attribute_kinds": workflow.user_attributes.describe(),
            },
            "quality": [q.to_dict() for q in dataset.quality],
            "validation": validation,
            "timings_s": timings,
            "models": {"candidates": "item_knn", "ranking": "markov blend", "synthetic": None},
        }
        (staging / REPORT_JSON).write_text(json.dumps(report, indent=1, sort_keys=True))
        (staging / REPORT_MD).write_text(render_report(report))
        version_dir = artifacts.publish(staging, out_root, version, {"config": config, "report": report})
    return TrainResult(version_dir, report)


def render_report(report: dict[str, Any]) -> str:
    lines = [f"# Training report {report['version']}", "", "## Data", ""]
    lines += [f"- {name}: {value}" for name, value in report["data"].items()]
    lines += ["", "## Data quality", ""]
    for quality in report["quality"]:
        rejected = ", ".join(f"{k}={v}" for k, v in quality["rejected"].items()) or "none"
        lines.append(
            f"- {quality['source']}: read {quality['rows_read']}, kept {quality['rows_kept']}, rejected: {rejected}"
        )
        if quality["unknown_columns"]:
            lines.append(f"  - unknown columns ignored: {', '.join(quality['unknown_columns'])}")
    validation = report["validation"]
    lines += ["", f"## Validation (last item of {validation['users']} users held out)", ""]
    for name in ("popularity", "item_knn", "blend"):
        if name in validation:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in validation[name].items())
            lines.append(f"- {name}: {metrics}")
    lines.append(f"- fitted markov_weight: {validation['markov_weight']}")
    lines += ["", "## Timings (s)", ""]
    lines += [f"- {name}: {seconds}" for name, seconds in report["timings_s"].items()]
    return "\n".join(lines) + "\n"
