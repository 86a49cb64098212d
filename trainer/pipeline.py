"""`recsys train`: raw data in, one complete, checksummed artefact version out."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_runtime import artifacts
from recsys_runtime.evaluation import histories_by_user, hit_rate_ndcg, leave_last_out
from recsys_runtime.layout import (
    CATALOG_DIR,
    CONFIG_FILE,
    CURVES_PNG,
    GAN_CURVES_PNG,
    HISTORIES_FILE,
    MODELS_DIR,
    REPORT_JSON,
    REPORT_MD,
    WORKFLOW_DIR,
)
from recsys_runtime.models.candidates import (
    AutoencoderCandidates,
    CandidateModel,
    CandidateScorer,
    ItemKNNCandidates,
    item_vectors,
)
from recsys_runtime.models.cold_items import ColdItemTransfer
from recsys_runtime.models.item_index import ItemIndex
from recsys_runtime.models.item_knn import ItemKNN
from recsys_runtime.models.markov import Markov
from recsys_runtime.models.neighbours import top_n
from recsys_runtime.models.popularity import fit_popularity, save_popularity
from recsys_runtime.models.ranking import Ranker, fit_weights
from recsys_runtime.models.sequential import Caser, GRU4Rec
from recsys_runtime.synthesis import GAN_DIR, Synthesis
from recsys_runtime.triton_contract import REPOSITORY_DIR
from recsys_runtime.triton_links import link_served_version
from recsys_runtime.workflow import Workflow
from trainer import distributed, resources
from trainer.data import Dataset
from trainer.models.autoencoder import TrainedAutoencoder, train_autoencoder
from trainer.models.item_autoencoder import CODES_FILE, cold_neighbours, item_features, train_item_codes
from trainer.models.sequential import choose_softmax, train_caser, train_gru4rec
from trainer.progress import SILENT, TrainingProgress
from trainer.report import plot_curves, plot_gan_curves
from trainer.synthesis import fit_synthesis
from trainer.synthetic_quality import synthetic_quality
from trainer.triton_repository import write_ranker


@dataclass
class TrainResult:
    version_dir: Path  # on a worker other than the chief: its temporary copy, already removed
    report: dict[str, Any]
    chief: bool = True


@dataclass
class FittedModels:
    popularity: np.ndarray
    candidates: CandidateModel
    markov: Markov
    autoencoder: TrainedAutoencoder | None = None


def interaction_matrix(encoded: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary user x item matrix (repeated interactions count once)."""
    ones = np.ones(len(encoded), dtype=np.float32)
    matrix = sp.csr_matrix(
        (ones, (encoded["user_index"].to_numpy(), encoded["item_index"].to_numpy())), shape=(n_users, n_items)
    )
    matrix.data[:] = 1.0
    return matrix


def fit_models(
    encoded: pd.DataFrame,
    workflow: Workflow,
    config: dict[str, Any],
    validate_candidates: Callable[[CandidateModel], float] | None = None,
    autoencoder: TrainedAutoencoder | None = None,
    progress: TrainingProgress = SILENT,
) -> FittedModels:
    """Popularity, the candidate model and the Markov ranker. The autoencoder is trained here, keeping its best
    epoch by validate_candidates, unless `autoencoder` (already trained) is given."""
    # Users below min_user_count share the OOV index; as one "user" they would invent co-occurrences.
    encoded = encoded[encoded["user_index"] > 0]
    users = encoded["user_index"].to_numpy()
    items = encoded["item_index"].to_numpy()
    timestamps = encoded["timestamp"].to_numpy()
    popularity = fit_popularity(items, timestamps, workflow.items.size, config["popularity"]["half_life_days"])
    markov_config = config["markov"]
    markov = Markov.fit(
        users,
        items,
        workflow.items.size,
        markov_config["neighbours"],
        markov_config["order"],
        markov_config["recency_decay"],
    )
    if config["candidates"]["model"] == "item_knn":
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
        return FittedModels(popularity, ItemKNNCandidates(item_knn), markov)

    if autoencoder is None:
        validate = None
        if validate_candidates is not None:
            validate = lambda scorer: validate_candidates(AutoencoderCandidates(scorer))  # noqa: E731
        autoencoder = train_autoencoder(
            interaction_matrix(encoded, workflow.users.size, workflow.items.size),
            config["autoencoder"],
            config["seed"],
            validate,
            progress,
        )
    return FittedModels(popularity, AutoencoderCandidates(autoencoder.scorer), markov, autoencoder)


@dataclass
class ValidationResult:
    metrics: dict[str, Any]
    ranker: Ranker | None
    autoencoder: TrainedAutoencoder | None
    curves: dict[str, list[float]]


def train_sequence_models(
    histories: dict[int, np.ndarray],
    workflow: Workflow,
    config: dict[str, Any],
    progress: TrainingProgress = SILENT,
) -> tuple[GRU4Rec | None, Caser | None, dict[str, list[float]], dict[str, dict[str, Any]]]:
    """GRU4Rec and Caser as ranking.models asks; their loss curves, and per model the softmax (full or sampled,
    by catalogue size), the epochs run (fewer than configured where max_steps caps them) and the seconds."""
    users = sorted(u for u in histories if u > 0)
    sequences = [histories[u] for u in users]
    gru4rec = caser = None
    losses: dict[str, list[float]] = {}
    training: dict[str, dict[str, Any]] = {}
    ranking = config["ranking"]
    softmax = choose_softmax(workflow.items.size, ranking["sampled_softmax_min_items"], ranking["sampled_negatives"])
    if "gru4rec" in ranking["models"]:
        started = time.perf_counter()
        gru4rec, losses["gru4rec"] = train_gru4rec(
            sequences,
            workflow.items.size,
            config["gru4rec"],
            config["seed"],
            softmax,
            progress,
            ranking["sparse_update_min_rows"],
        )
        training["gru4rec"] = {
            **softmax.describe(),
            "sparse_update_min_rows": ranking["sparse_update_min_rows"],
            "epochs": len(losses["gru4rec"]),
            "seconds": round(time.perf_counter() - started, 3),
        }
    if "caser" in ranking["models"]:
        started = time.perf_counter()
        caser, losses["caser"] = train_caser(
            sequences,
            users,
            workflow.items.size,
            workflow.users.size,
            config["caser"],
            config["seed"],
            softmax,
            progress,
            ranking["sparse_update_min_rows"],
        )
        training["caser"] = {
            **softmax.describe(),
            "sparse_update_min_rows": ranking["sparse_update_min_rows"],
            "epochs": len(losses["caser"]),
            "seconds": round(time.perf_counter() - started, 3),
        }
    return gru4rec, caser, losses, training


def fit_with_validation(
    encoded: pd.DataFrame, workflow: Workflow, config: dict[str, Any], progress: TrainingProgress = SILENT
) -> ValidationResult:
    """Train the autoencoder and the rankers on all but each sampled user's last item, scoring that item for
    the autoencoder's early stopping, the blend weights and the report's metrics. These models are the ones
    served: they saw all but ranking.validation_users interactions, and a retrain to add those would double
    the training time for no measurable gain."""
    ranking = config["ranking"]
    train_rows, held_out = leave_last_out(encoded, ranking["validation_users"], config["seed"])
    if held_out.empty:
        return ValidationResult({"users": 0}, None, None, {})
    histories = histories_by_user(train_rows)
    max_history = workflow.max_history
    n_candidates = config["serving"]["candidates"]
    shrinkage = config["candidates"]["popularity_shrinkage"]
    targets = held_out["item_index"].to_numpy()
    users = [int(u) for u in held_out["user_index"].to_numpy()]
    validation_popularity = fit_popularity(
        train_rows["item_index"].to_numpy(),
        train_rows["timestamp"].to_numpy(),
        workflow.items.size,
        config["popularity"]["half_life_days"],
    )

    def candidate_lists(model: CandidateModel) -> list[tuple[np.ndarray, np.ndarray]]:
        scorer = CandidateScorer(model, validation_popularity, shrinkage)
        return scorer.top_many(
            [histories[u][-max_history:] for u in users], [histories[u] for u in users], n_candidates
        )

    def validation_ndcg(model: CandidateModel) -> float:
        return hit_rate_ndcg([c for c, _ in candidate_lists(model)], targets, 100)["NDCG@100"]

    models = fit_models(train_rows, workflow, config, validation_ndcg, progress=progress)
    candidates = candidate_lists(models.candidates)
    gru4rec, caser, losses, ranker_training = train_sequence_models(histories, workflow, config, progress)
    ranker = Ranker(models.markov, gru4rec, caser)
    per_user = [
        (best, ranker.components(histories[user][-max_history:], user, best, scores))
        for user, (best, scores) in zip(users, candidates, strict=True)
    ]
    ranker.weights, alone = fit_weights(per_user, targets, ranking["blend_grid"])
    blended = [best[np.argsort(-ranker.combine(parts), kind="stable")] for best, parts in per_user]
    lists = [c for c, _ in candidates]
    popular = [top_n(validation_popularity, n_candidates, histories[user]) for user in users]
    metrics = {
        "users": len(targets),
        "popularity": {**hit_rate_ndcg(popular, targets, 10), "HR@100": hit_rate_ndcg(popular, targets, 100)["HR@100"]},
        models.candidates.name: {
            **hit_rate_ndcg(lists, targets, 10),
            "HR@100": hit_rate_ndcg(lists, targets, 100)["HR@100"],
            f"HR@{n_candidates}": hit_rate_ndcg(lists, targets, n_candidates)[f"HR@{n_candidates}"],
        },
        "rankers_alone": alone,
        "blend": {**hit_rate_ndcg(blended, targets, 10), "HR@100": hit_rate_ndcg(blended, targets, 100)["HR@100"]},
        "blend_weights": ranker.weights,
        "ranker_losses": losses,
        "ranker_training": ranker_training,
    }
    trained = models.autoencoder
    if trained is not None:
        metrics["autoencoder_training"] = {"epochs": trained.epochs_run, "best_epoch": trained.best_epoch}
    return ValidationResult(metrics, ranker, trained, trained.curves if trained else {})


def fit_cold_items(
    dataset: Dataset, workflow: Workflow, config: dict[str, Any], models: FittedModels
) -> dict[str, Any]:
    """Content codes for every item and, for items without interactions, the warm items they borrow from.

    Sets the transfer on the autoencoder candidates; returns the report entry (with the codes), or {}."""
    options = config["item_autoencoder"]
    if not options["enabled"] or dataset.items is None or not isinstance(models.candidates, AutoencoderCandidates):
        return {}
    features = item_features(workflow.item_attributes, dataset.items, workflow.items.ids)
    if features.shape[1] == 0:
        return {}
    codes, losses = train_item_codes(features, options, config["seed"])
    warm = models.popularity > 0
    cold = np.flatnonzero(~warm)
    cold = cold[cold > 0]
    models.candidates.transfer = ColdItemTransfer(
        cold_neighbours(codes, warm, options["neighbours"]), cold, options["content_weight"]
    )
    return {"codes": codes, "features": int(features.shape[1]), "cold_items": len(cold), "loss": losses}


def training_quality(
    synthesis: Synthesis, interactions: pd.DataFrame, users: pd.DataFrame | None, config: dict[str, Any]
) -> dict[str, Any]:
    """The synthetic-data figures of trainer.synthetic_quality against the training data, utility on the last
    item of up to ranking.validation_users users. The generators saw those items, so utility here is
    optimistic; `recsys evaluate` on a split gives the held-out figure."""
    ordered = interactions[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})
    ordered = ordered.sort_values(["user_id", "timestamp"], kind="stable")
    last = ordered.groupby("user_id", sort=False).tail(1)
    held = last.sample(min(len(last), int(config["ranking"]["validation_users"])), random_state=config["seed"])
    return synthetic_quality(
        synthesis, ordered.drop(held.index), held, users, int(config["seed"]), config["gan"]["quality_users"] or None
    )


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


class StageTimes:
    """Wall time and peak RSS of each named stage, announced to the progress display as it starts."""

    def __init__(self, progress: TrainingProgress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        # Measuring a stage resets the process's peak mark (which rusage's maximum RSS also reads), so the peak
        # before the first stage (reading the data) is kept here, as "start".
        start = resources.peak_rss_gib()
        self.peak_rss_gib: dict[str, float] = {} if start is None else {"start": round(start, 2)}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress.stage(name)
        measured = resources.reset_peak_rss()
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        peak = resources.peak_rss_gib() if measured else None
        if peak is not None:
            self.peak_rss_gib[name] = round(peak, 2)


def fit_workflow(dataset: Dataset, config: dict[str, Any], out_root: Path) -> tuple[Workflow, pd.DataFrame]:
    """The fitted workflow (keeping the indices of ids the current version knows) and the encoded
    interactions."""
    data_config = config["data"]
    workflow = Workflow.fit(
        dataset.interactions,
        config["workflow"]["max_history"],
        data_config["min_user_count"],
        data_config["min_item_count"],
        items=dataset.items,
        users=dataset.users,
        options=config["workflow"],
        previous=previous_workflow(out_root),
    )
    return workflow, workflow.encode_interactions(dataset.interactions)


def fit_generators(
    dataset: Dataset,
    encoded: pd.DataFrame,
    workflow: Workflow,
    models: FittedModels,
    config: dict[str, Any],
    progress: TrainingProgress,
) -> tuple[Synthesis, dict[str, Any]]:
    """The user and item generators, and what the report says of them."""
    item_targets = (
        item_vectors(models.candidates.scorer) if isinstance(models.candidates, AutoencoderCandidates) else None
    )
    synthesis = fit_synthesis(
        encoded, workflow, dataset.users, dataset.items, item_targets, config["gan"], config["seed"], progress
    )
    summary = {
        "user_generator": True,
        "item_generator": synthesis.items is not None,
        "final_critic_distance": {k: v["critic"][-1] for k, v in synthesis.curves.items()},
        "quality": training_quality(synthesis, dataset.interactions, dataset.users, config),
    }
    return synthesis, summary


def write_data(staging: Path, dataset: Dataset, workflow: Workflow) -> None:
    """The workflow, the entity catalogues and the users' histories, which the features service serves."""
    workflow.save(staging / WORKFLOW_DIR)
    catalog = staging / CATALOG_DIR
    catalog.mkdir()
    _entity_table(dataset.items, "item_id").to_parquet(catalog / "items.parquet", index=False)
    _entity_table(dataset.users, "user_id").to_parquet(catalog / "users.parquet", index=False)
    ordered = dataset.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    ordered[["user_id", "item_id", "timestamp"]].to_parquet(staging / HISTORIES_FILE, index=False)


def write_models(
    staging: Path,
    dataset: Dataset,
    workflow: Workflow,
    models: FittedModels,
    validation: ValidationResult,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Every model's files and the Triton repository; returns the item autoencoder's summary ({} when it was
    not trained). The item autoencoder trains here, on every worker alike (see train)."""
    models_dir = staging / MODELS_DIR
    models_dir.mkdir()
    save_popularity(models_dir, models.popularity)
    cold_items = fit_cold_items(dataset, workflow, config, models)
    models.candidates.save(models_dir)
    if cold_items:
        np.save(models_dir / CODES_FILE, cold_items.pop("codes"), allow_pickle=False)
    if (
        isinstance(models.candidates, AutoencoderCandidates)
        and workflow.items.size >= config["candidates"]["ann_min_items"]
    ):
        index = ItemIndex.build(item_vectors(models.candidates.scorer), config["candidates"]["ann_nprobe"])
        index.save(models_dir / "autoencoder")
    models.markov.save(models_dir)
    # The rankers trained during validation, with the Markov chain refitted on all data.
    ranker = validation.ranker or Ranker(models.markov)
    ranker.markov = models.markov
    write_ranker(staging / REPOSITORY_DIR, ranker, config["serving"]["triton_cpu_instances"])
    return cold_items


def training_report(
    version: str,
    dataset: Dataset,
    workflow: Workflow,
    models: FittedModels,
    validation: ValidationResult,
    cold_items: dict[str, Any],
    synthetic: dict[str, Any] | None,
    times: StageTimes,
    workers: int,
) -> dict[str, Any]:
    curves = {"validation": validation.curves}
    return {
        "version": version,
        "data": {
            "interactions": len(dataset.interactions),
            "users": len(workflow.users),
            "items": len(workflow.items),
            "items_with_attributes": 0 if dataset.items is None else len(dataset.items),
            "users_with_attributes": 0 if dataset.users is None else len(dataset.users),
            "item_attribute_kinds": workflow.item_attributes.describe(),
            "user_attribute_kinds": workflow.user_attributes.describe(),
        },
        "quality": [q.to_dict() for q in dataset.quality],
        "validation": validation.metrics,
        "autoencoder": {"best_epoch": models.autoencoder.best_epoch, "curves": curves} if models.autoencoder else None,
        "timings_s": times.seconds,
        "peak_rss_gib": times.peak_rss_gib,
        "workers": workers,
        "item_autoencoder": cold_items or None,
        "models": {"candidates": models.candidates.name, "ranking": "markov blend", "synthetic": synthetic},
    }


def train(dataset: Dataset, config: dict[str, Any], out_root: Path, progress: TrainingProgress = SILENT) -> TrainResult:
    """Fit every model and write one artefact version under out_root; returns its directory.

    Under TF_CONFIG (trainer.distributed) every worker runs all of this with the same data and seed; the Keras
    models and the GANs train in step across them, the numpy models are fitted by each alike, and only the
    chief writes into out_root."""
    cluster = distributed.setup()  # before any TensorFlow op
    if dataset.interactions.empty:
        raise ValueError("no usable interactions after cleaning; see the data-quality report")
    times = StageTimes(progress)
    with times.stage("workflow"):
        workflow, encoded = fit_workflow(dataset, config, out_root)
    with times.stage("validation"):
        validation = fit_with_validation(encoded, workflow, config, progress)
    with times.stage("models"):
        # Popularity and Markov transitions refitted on all data (seconds); the Keras models are validation's.
        models = fit_models(encoded, workflow, config, autoencoder=validation.autoencoder, progress=progress)
    synthesis: Synthesis | None = None
    synthetic: dict[str, Any] | None = None
    if config["gan"]["enabled"]:
        with times.stage("synthetic"):
            synthesis, synthetic = fit_generators(dataset, encoded, workflow, models, config, progress)

    if not cluster.is_chief:
        # TensorFlow's pattern for non-chief workers: write the same version into a temporary root, then drop
        # it. The write stage still trains the item autoencoder, whose steps every worker must take part in.
        out_root = Path(tempfile.mkdtemp(prefix=f"recsys-worker{cluster.rank}-"))
    version = artifacts.new_version_name()
    progress.stage("write")  # not timed: the report is written inside this step
    with artifacts.staging_directory(out_root, version) as staging:
        write_data(staging, dataset, workflow)
        cold_items = write_models(staging, dataset, workflow, models, validation, config)
        if synthesis is not None:
            synthesis.save(staging / GAN_DIR)
            plot_gan_curves(synthesis.curves, staging / GAN_CURVES_PNG)
        if validation.curves:
            plot_curves({"validation": validation.curves}, staging / CURVES_PNG)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))
        report = training_report(
            version, dataset, workflow, models, validation, cold_items, synthetic, times, cluster.workers
        )
        (staging / REPORT_JSON).write_text(json.dumps(report, indent=1, sort_keys=True))
        (staging / REPORT_MD).write_text(render_report(report))
        # Triton's name for this version exists before `current` points at it (dangling for a moment: harmless).
        link_served_version(out_root, version)
        version_dir = artifacts.publish(staging, out_root, version, {"config": config, "report": report})
    if not cluster.is_chief:
        shutil.rmtree(out_root, ignore_errors=True)
    return TrainResult(version_dir, report, cluster.is_chief)


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
    for name in ("popularity", "autoencoder", "item_knn", "blend"):
        if name in validation:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in validation[name].items())
            lines.append(f"- {name}: {metrics}")
    for name, metrics in validation.get("rankers_alone", {}).items():
        lines.append(f"- ranking by {name} alone: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if "blend_weights" in validation:
        lines.append(f"- fitted blend weights: {validation['blend_weights']}")
    if report["models"].get("synthetic"):
        synthetic = report["models"]["synthetic"]
        lines.append(
            f"- generators: users, items {synthetic['item_generator']}; final critic estimates of the Wasserstein "
            f"distance {synthetic['final_critic_distance']} (curves: {GAN_CURVES_PNG})"
        )
        quality = synthetic["quality"]
        fidelity, utility, privacy = quality["fidelity"], quality["utility"], quality["privacy"]
        lines.append(
            f"- synthetic data vs training data: item popularity JS {fidelity['item_popularity_jensen_shannon']}, "
            f"history length KS {fidelity['history_length_ks']}; train-on-synthetic HR@10 ratio "
            f"{utility['hr10_ratio']} (optimistic: the generators saw the test items); copies of training users "
            f"{privacy['synthetic_users_equal_to_a_training_user']}; closest-record distance median "
            f"{privacy['distance_to_closest_record_median']}"
        )
    if report.get("autoencoder"):
        lines.append(f"- autoencoder best epoch: {report['autoencoder']['best_epoch']} (curves: {CURVES_PNG})")
    lines += ["", f"## Timings (s) and peak memory (GiB), {report.get('workers', 1)} worker(s)", ""]
    peaks = report.get("peak_rss_gib", {})
    for name, seconds in report["timings_s"].items():
        lines.append(f"- {name}: {seconds}" + (f", peak RSS {peaks[name]}" if name in peaks else ""))
    if "start" in peaks:
        lines.append(f"- before the first stage (reading the data): peak RSS {peaks['start']}")
    return "\n".join(lines) + "\n"
