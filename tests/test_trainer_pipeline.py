"""recsys_runtime/artifacts.py, trainer/demo.py and trainer/pipeline.train end to end on generated demo data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys_runtime import artifacts
from recsys_runtime.artifacts import (
    CURRENT,
    MANIFEST,
    ArtifactError,
    current_version,
    list_versions,
    load_manifest,
    publish,
    resolve_version,
    rollback_target,
    staging_directory,
    switch_current,
)
from recsys_runtime.layout import (
    CATALOG_DIR,
    CONFIG_FILE,
    HISTORIES_FILE,
    MODELS_DIR,
    REPORT_JSON,
    REPORT_MD,
    WORKFLOW_DIR,
)
from recsys_runtime.models.candidates import AutoencoderCandidates, load_candidate_model
from recsys_runtime.triton_contract import RANKER_MODEL, REPOSITORY_DIR, SERVING_REPOSITORY_DIR, served_model_name
from recsys_runtime.triton_links import link_served_version, link_served_versions
from recsys_runtime.workflow import Workflow
from trainer.config import load_config
from trainer.data import load_csvs
from trainer.demo import generate
from trainer.pipeline import TrainResult, train

# ---------------------------------------------------------------- artifacts


def make_version(root: Path, version: str, files: dict[str, bytes]) -> Path:
    with staging_directory(root, version) as staging:
        for name, content in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return publish(staging, root, version, {"note": version})


FILES = {"a.txt": b"alpha", "nested/deeper/b.bin": b"\x00\x01\x02", "empty": b""}


def test_publish_writes_manifest_with_every_checksum(tmp_path: Path) -> None:
    version_dir = make_version(tmp_path, "v1", FILES)
    assert version_dir == tmp_path / "v1"
    manifest = json.loads((version_dir / MANIFEST).read_text())
    assert manifest["version"] == "v1"
    assert manifest["format"] == artifacts.FORMAT_VERSION
    assert manifest["note"] == "v1"
    assert manifest["files"] == {name: hashlib.sha256(content).hexdigest() for name, content in FILES.items()}
    on_disk = {str(p.relative_to(version_dir)) for p in version_dir.rglob("*") if p.is_file()}
    assert on_disk == set(FILES) | {MANIFEST}
    # The staging directory was renamed away.
    assert not any(p.name.startswith(".staging") for p in tmp_path.iterdir())
    assert load_manifest(version_dir) == manifest


def test_current_points_to_newest_version(tmp_path: Path) -> None:
    make_version(tmp_path, "v1", {"a.txt": b"one"})
    assert os.readlink(tmp_path / CURRENT) == "v1"
    make_version(tmp_path, "v2", {"a.txt": b"two"})
    assert os.readlink(tmp_path / CURRENT) == "v2"
    assert (tmp_path / CURRENT / "a.txt").read_bytes() == b"two"
    assert resolve_version(tmp_path) == (tmp_path / "v2").resolve()
    # Only the versions and `current` are left in the root (no temporary links).
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURRENT, "v1", "v2"]


def test_resolve_version(tmp_path: Path) -> None:
    v1 = make_version(tmp_path, "20240101-000000-aaaaaa", {"a.txt": b"one"})
    v2 = make_version(tmp_path, "20240102-000000-aaaaaa", {"a.txt": b"two"})
    # A version directory resolves to itself, even if it is not current.
    assert resolve_version(v1) == v1
    assert resolve_version(v2) == v2
    # Without `current`, the root resolves to its newest version.
    (tmp_path / CURRENT).unlink()
    assert resolve_version(tmp_path) == v2
    # `current` wins over name order.
    os.symlink(v1.name, tmp_path / CURRENT)
    assert resolve_version(tmp_path) == v1.resolve()


def test_switch_current_and_rollback(tmp_path: Path) -> None:
    for name in ("20240101-000000-aaaaaa", "20240102-000000-aaaaaa", "20240103-000000-aaaaaa"):
        make_version(tmp_path, name, {"a.txt": name.encode()})
    (tmp_path / ".staging-20240104-000000-aaaaaa").mkdir()  # an unfinished training is not a version
    v1, v2, v3 = list_versions(tmp_path)
    assert (v1, v2, v3) == ("20240101-000000-aaaaaa", "20240102-000000-aaaaaa", "20240103-000000-aaaaaa")
    assert current_version(tmp_path) == v3
    assert rollback_target(tmp_path) == v2
    switch_current(tmp_path, v2)
    assert current_version(tmp_path) == v2 and resolve_version(tmp_path) == (tmp_path / v2).resolve()
    assert rollback_target(tmp_path) == v1
    assert rollback_target(tmp_path, to=v3) == v3  # forward again, by name
    switch_current(tmp_path, v1)
    with pytest.raises(ArtifactError, match="oldest version"):
        rollback_target(tmp_path)
    with pytest.raises(ArtifactError, match="no complete version 'nope'"):
        rollback_target(tmp_path, to="nope")
    with pytest.raises(ArtifactError, match="not a complete artefact version"):
        switch_current(tmp_path, ".staging-20240104-000000-aaaaaa")
    assert current_version(tmp_path) == v1
    assert not any(p.name.startswith(f".{CURRENT}") for p in tmp_path.iterdir())  # no temporary links left


def test_serving_repository_links_each_version_by_name(tmp_path: Path) -> None:
    ranker = f"{REPOSITORY_DIR}/{RANKER_MODEL}/config.pbtxt"
    make_version(tmp_path, "20240101-000000-aaaaaa", {ranker: b"backend: 'python'"})
    make_version(tmp_path, "20240102-000000-aaaaaa", {"a.txt": b"no ranker"})
    assert link_served_versions(tmp_path) == ["20240101-000000-aaaaaa"]
    link = tmp_path / SERVING_REPOSITORY_DIR / served_model_name("20240101-000000-aaaaaa")
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()  # the root can move
    assert (link / "config.pbtxt").read_bytes() == b"backend: 'python'"
    assert link_served_version(tmp_path, "20240101-000000-aaaaaa") == link  # idempotent
    assert [p.name for p in (tmp_path / SERVING_REPOSITORY_DIR).iterdir()] == [link.name]


def test_resolve_version_ignores_incomplete_directories(tmp_path: Path) -> None:
    v1 = make_version(tmp_path, "v1", {"a.txt": b"one"})
    (tmp_path / CURRENT).unlink()
    (tmp_path / "v9").mkdir()  # no manifest: not a version
    (tmp_path / ".staging-v9").mkdir()
    assert resolve_version(tmp_path) == v1


@pytest.mark.parametrize("setup", ["empty", "missing", "only_junk"])
def test_resolve_version_without_versions(tmp_path: Path, setup: str) -> None:
    root = tmp_path / "root"
    if setup != "missing":
        root.mkdir()
    if setup == "only_junk":
        (root / "v1").mkdir()
        (root / "v1" / "a.txt").write_text("x")
    with pytest.raises(ArtifactError, match="no artefact version found"):
        resolve_version(root)


def test_load_manifest_detects_tampered_file(tmp_path: Path) -> None:
    version_dir = make_version(tmp_path, "v1", FILES)
    (version_dir / "nested" / "deeper" / "b.bin").write_bytes(b"\x00\x01\x03")
    with pytest.raises(ArtifactError, match=r"b\.bin does not match its checksum"):
        load_manifest(version_dir)
    # Without verification the manifest still loads.
    assert load_manifest(version_dir, verify=False)["version"] == "v1"


def test_load_manifest_detects_missing_file(tmp_path: Path) -> None:
    version_dir = make_version(tmp_path, "v1", FILES)
    (version_dir / "a.txt").unlink()
    with pytest.raises(ArtifactError, match=r"a\.txt is missing"):
        load_manifest(version_dir)


def test_load_manifest_without_manifest_or_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=MANIFEST):
        load_manifest(tmp_path)
    version_dir = make_version(tmp_path, "v1", FILES)
    manifest = json.loads((version_dir / MANIFEST).read_text())
    (version_dir / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ArtifactError, match="format 99"):
        load_manifest(version_dir)


def test_failing_body_leaves_no_staging_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match="boom"), staging_directory(root, "v1") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "partial.bin").write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(root.iterdir()) == []
    with pytest.raises(ArtifactError):
        resolve_version(root)


def test_new_version_names_are_unique_and_time_ordered() -> None:
    names = {artifacts.new_version_name() for _ in range(20)}
    assert len(names) == 20
    for name in names:
        date, clock, suffix = name.split("-")
        assert len(date) == 8 and date.isdigit()
        assert len(clock) == 6 and clock.isdigit()
        assert len(suffix) == 6


# ---------------------------------------------------------------- demo data


def test_demo_generate_is_deterministic() -> None:
    first = generate(n_users=50, n_items=40, mean_history=5, seed=3)
    second = generate(n_users=50, n_items=40, mean_history=5, seed=3)
    other = generate(n_users=50, n_items=40, mean_history=5, seed=4)
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    pd.testing.assert_frame_equal(first.items, second.items)
    pd.testing.assert_frame_equal(first.users, second.users)
    assert not first.interactions.equals(other.interactions)


def test_demo_generate_shape() -> None:
    demo = generate(n_users=50, n_items=40, mean_history=5)
    assert len(demo.users) == 50
    assert len(demo.items) == 40
    assert set(demo.interactions["user_id"]) <= set(demo.users["user_id"])
    assert set(demo.interactions["item_id"]) <= set(demo.items["item_id"])
    assert demo.interactions.groupby("user_id").size().min() >= 3
    # Histories are in time order, strictly (at least a minute between two events of a user).
    assert demo.interactions.groupby("user_id")["timestamp"].apply(lambda t: t.diff().dropna().min() >= 60).all()


def test_demo_generate_rejects_tiny_parameters() -> None:
    with pytest.raises(ValueError):
        generate(n_users=10, n_items=4)
    with pytest.raises(ValueError):
        generate(n_users=10, n_items=40, mean_history=2)


# ---------------------------------------------------------------- pipeline.train


class RecordedProgress:
    """trainer.progress.TrainingProgress that keeps what training reported."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.work_done: list[tuple[str, int, int]] = []

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def work(self, task: str, done: int, total: int, detail: str = "") -> None:
        assert 0 < done <= total, (task, done, total)
        self.work_done.append((task, done, total))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, dict[str, Any], Path, RecordedProgress]:
    base = tmp_path_factory.mktemp("pipeline")
    paths = generate(n_users=300, n_items=120, mean_history=15).write(base / "data")
    dataset = load_csvs(paths["interactions"], paths["items"], paths["users"])
    override = base / "config.toml"
    override.write_text(
        '[candidates]\nmodel = "item_knn"\n[item_knn]\nneighbours = 60\n[markov]\norder = 2\n[ranking]\nmodels = []\n'
        "[gan]\nsteps = 300\n"
    )
    config = load_config(override)
    progress = RecordedProgress()
    result = train(dataset, config, base / "artifacts", progress)
    return result, config, base / "artifacts", progress


def test_train_writes_one_complete_version(trained: tuple[TrainResult, dict[str, Any], Path, RecordedProgress]) -> None:
    result, _, root, progress = trained
    assert progress.stages == ["workflow", "validation", "models", "synthetic", "write"]
    version_dir = result.version_dir
    assert version_dir.parent == root
    assert resolve_version(root) == version_dir.resolve()
    assert os.readlink(root / CURRENT) == version_dir.name
    manifest = load_manifest(version_dir)  # every checksum verifies
    assert manifest["version"] == version_dir.name == result.report["version"]
    files = set(manifest["files"])
    assert {
        f"{WORKFLOW_DIR}/workflow.json",
        f"{WORKFLOW_DIR}/users.parquet",
        f"{WORKFLOW_DIR}/items.parquet",
        f"{MODELS_DIR}/popularity.npy",
        f"{MODELS_DIR}/item_knn.indices.npy",
        f"{MODELS_DIR}/item_knn.values.npy",
        f"{MODELS_DIR}/markov.indices.npy",
        f"{MODELS_DIR}/markov.values.npy",
        f"{CATALOG_DIR}/items.parquet",
        f"{CATALOG_DIR}/users.parquet",
        HISTORIES_FILE,
        CONFIG_FILE,
        REPORT_JSON,
        REPORT_MD,
        "triton/ranker/config.pbtxt",
        "triton/ranker/1/model.py",
        "triton/ranker/1/ranker.json",
        "triton/ranker/1/markov.indices.npy",
        "triton/ranker/1/markov.values.npy",
        "triton/ranker/1/model.onnx",
        "triton/ranker/configs/gpu.pbtxt",
        "triton/ranker/configs/gpu-cuda.pbtxt",
        "gan/synthesis.json",
        "gan/training_sets.npy",
        "gan/user_generator.json",
        *(f"gan/user_generator.{part}{i}.npy" for part in ("kernel", "bias") for i in range(2)),
        "gan_curves.png",
    } == files
    assert not any(p.name.startswith(".") for p in root.iterdir())


def test_train_config_json_is_effective_config(
    trained: tuple[TrainResult, dict[str, Any], Path, RecordedProgress],
) -> None:
    result, config, _, _ = trained
    written = json.loads((result.version_dir / CONFIG_FILE).read_text())
    assert written == config
    assert written["item_knn"]["neighbours"] == 60
    assert written["markov"]["order"] == 2
    assert written["item_knn"]["shrinkage"] == 10.0
    assert load_manifest(result.version_dir)["config"] == config


def test_train_models_and_catalog(trained: tuple[TrainResult, dict[str, Any], Path, RecordedProgress]) -> None:
    result, _, _, _ = trained
    version_dir = result.version_dir
    workflow = Workflow.load(version_dir / WORKFLOW_DIR)
    assert len(workflow.users) == result.report["data"]["users"] == 300
    assert len(workflow.items) == result.report["data"]["items"]
    assert workflow.max_history == 50
    models = version_dir / MODELS_DIR
    popularity = np.load(models / "popularity.npy")
    assert popularity.shape == (workflow.items.size,)
    assert popularity[0] == 0.0
    assert popularity.sum() == result.report["data"]["interactions"]
    knn_indices = np.load(models / "item_knn.indices.npy")
    assert knn_indices.shape[0] == workflow.items.size
    assert 1 <= knn_indices.shape[1] <= 60
    assert np.load(models / "item_knn.values.npy").shape == knn_indices.shape
    markov_values = np.load(models / "markov.values.npy")
    assert markov_values.shape[0] == workflow.items.size
    # Each row of transition probabilities sums to at most 1.
    assert np.all(markov_values.sum(axis=1) <= 1.0 + 1e-5)
    ranking = json.loads((version_dir / "triton/ranker/1/ranker.json").read_text())
    assert ranking["weights"] == result.report["validation"]["blend_weights"]
    assert ranking["gru4rec"] is False and ranking["caser"] is False

    items = pd.read_parquet(version_dir / CATALOG_DIR / "items.parquet")
    assert len(items) == 120
    assert list(items.columns) == ["item_id", "title", "genres", "year"]
    users = pd.read_parquet(version_dir / CATALOG_DIR / "users.parquet")
    assert len(users) == 300
    histories = pd.read_parquet(version_dir / HISTORIES_FILE)
    assert list(histories.columns) == ["user_id", "item_id", "timestamp"]
    assert len(histories) == result.report["data"]["interactions"]
    assert histories.groupby("user_id", sort=False)["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert histories["user_id"].is_monotonic_increasing


def test_train_report(trained: tuple[TrainResult, dict[str, Any], Path, RecordedProgress]) -> None:
    result, _, _, _ = trained
    report = json.loads((result.version_dir / REPORT_JSON).read_text())
    returned = json.loads(json.dumps(result.report))
    # Everything but the timings matches the returned report (its timings also gain the "write" stage later).
    assert {k: v for k, v in report.items() if k != "timings_s"} == {
        k: v for k, v in returned.items() if k != "timings_s"
    }
    assert report["data"]["items_with_attributes"] == 120
    assert report["data"]["users_with_attributes"] == 300
    assert [q["rows_kept"] for q in report["quality"]] == [report["data"]["interactions"], 120, 300]
    # The report is written inside the "write" stage, so it times the stages before it.
    assert set(report["timings_s"]) == {"workflow", "validation", "models", "synthetic"}
    # Linux gives each stage its own peak: at least the process's own footprint (TensorFlow alone is larger).
    assert set(report["peak_rss_gib"]) == {"start", *report["timings_s"]}
    assert all(0.1 < peak < 24 for peak in report["peak_rss_gib"].values())
    # item_knn has no item vectors: a user generator only.
    assert report["models"]["synthetic"]["item_generator"] is False
    markdown = (result.version_dir / REPORT_MD).read_text()
    assert markdown.startswith(f"# Training report {report['version']}")
    assert "## Data quality" in markdown
    assert f"fitted blend weights: {report['validation']['blend_weights']}" in markdown


def test_train_validation_blend_beats_popularity(
    trained: tuple[TrainResult, dict[str, Any], Path, RecordedProgress],
) -> None:
    result, config, _, _ = trained
    validation = result.report["validation"]
    assert validation["users"] == 300
    assert validation["blend"]["NDCG@10"] > validation["popularity"]["NDCG@10"]
    assert validation["blend"]["NDCG@10"] > validation["item_knn"]["NDCG@10"]
    assert set(validation["blend_weights"].values()) <= set(config["ranking"]["blend_grid"])
    # The fitted blend is at least as good as any single component on the validation users.
    assert validation["blend"]["NDCG@10"] >= max(m["NDCG@10"] for m in validation["rankers_alone"].values())


def test_train_rejects_empty_interactions(tmp_path: Path) -> None:
    interactions = tmp_path / "i.csv"
    interactions.write_text("user_id,item_id,timestamp\n,i1,1\n")
    dataset = load_csvs(interactions, None, None)
    with pytest.raises(ValueError, match="no usable interactions"):
        train(dataset, load_config(), tmp_path / "artifacts")
    assert not (tmp_path / "artifacts").exists()


@pytest.fixture(scope="module")
def trained_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, RecordedProgress]:
    base = tmp_path_factory.mktemp("autoencoder")
    paths = generate(n_users=300, n_items=120, mean_history=15).write(base / "data")
    # Five catalogue items nobody has interacted with yet: cold items.
    items = pd.read_csv(paths["items"], dtype=str)
    cold = items.head(5).assign(item_id=[f"new-{n}" for n in range(5)])
    pd.concat([items, cold]).to_csv(paths["items"], index=False)
    override = base / "config.toml"
    override.write_text(
        "[autoencoder]\nhidden = [64]\nlatent = 16\nepochs = 12\npatience = 3\nbatch_size = 64\n"
        "[gru4rec]\nepochs = 2\nunits = 16\nembedding = 8\n[caser]\nepochs = 2\nembedding = 8\n"
        "[candidates]\nann_min_items = 1\n[gan]\nsteps = 300\nitem_steps = 300\n"
    )
    progress = RecordedProgress()
    result = train(
        load_csvs(paths["interactions"], paths["items"], paths["users"]),
        load_config(override),
        base / "artifacts",
        progress,
    )
    return result, progress


def test_autoencoder_version_has_weights_curves_and_early_stopping(
    trained_autoencoder: tuple[TrainResult, RecordedProgress],
) -> None:
    result, progress = trained_autoencoder
    files = set(load_manifest(result.version_dir)["files"])
    assert {
        f"{MODELS_DIR}/autoencoder/autoencoder.json",
        f"{MODELS_DIR}/autoencoder/decoder0.kernel.npy",
        "training_curves.png",
        f"{MODELS_DIR}/autoencoder/items.faiss",
        f"{MODELS_DIR}/item_codes.npy",
        "triton/ranker/1/gru4rec.recurrent.npy",
        "triton/ranker/1/caser.hidden_kernel.npy",
    } <= files
    assert result.report["item_autoencoder"]["features"] > 0
    assert result.report["item_autoencoder"]["cold_items"] == 5
    model = load_candidate_model(result.version_dir / MODELS_DIR, load_manifest(result.version_dir)["config"])
    assert isinstance(model, AutoencoderCandidates) and model.transfer is not None
    workflow = Workflow.load(result.version_dir / "workflow")
    cold = workflow.items.encode([f"new-{n}" for n in range(5)])
    assert sorted(model.transfer.cold.tolist()) == sorted(cold.tolist())
    history = workflow.items.encode(["i00001", "i00002", "i00003"])
    probabilities = model.probabilities(history, history)
    assert np.all(probabilities[cold] > 0), "cold items are recommendable without retraining"
    assert not any("item_knn" in name for name in files)
    report = result.report
    assert report["models"]["candidates"] == "autoencoder"
    curves = report["autoencoder"]["curves"]["validation"]
    best = report["autoencoder"]["best_epoch"]
    assert 1 <= best <= len(curves["validation"]) <= 12
    assert curves["validation"][best - 1] == max(curves["validation"])
    assert set(report["autoencoder"]["curves"]) == {"validation"}, "the validation run is the one served"
    assert report["validation"]["autoencoder_training"] == {"epochs": len(curves["validation"]), "best_epoch": best}
    # Each model's work is reported against the total it plans, ending at that total.
    reported = {task: (done, total) for task, done, total in progress.work_done}
    batches_per_epoch = 5  # 300 users (the OOV user left out) in batches of 64
    assert reported["autoencoder batches"] == (12 * batches_per_epoch, 12 * batches_per_epoch)
    assert {"GRU4Rec batches", "Caser batches", "user generator updates", "item generator updates"} <= set(reported)
    assert all(done == total for done, total in reported.values())
    assert max(curves["validation"]) > curves["validation"][0], "validation NDCG@100 improves with training"
    assert (result.version_dir / "training_curves.png").read_bytes().startswith(b"\x89PNG")
