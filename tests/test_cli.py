"""services/launcher/cli.py through typer's CliRunner; no server is started here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from recsys_runtime.artifacts import CURRENT, load_manifest, resolve_version
from recsys_runtime.layout import CONFIG_FILE
from services.launcher.cli import app

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def invoke(*args: str | Path) -> Result:
    # A wide console keeps rich from wrapping messages; NO_COLOR keeps escape codes out.
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400", "NO_COLOR": "1"})


def text(result: Result) -> str:
    """The combined output with colour codes stripped and whitespace collapsed."""
    return " ".join(ANSI.sub("", result.output).split())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = invoke("demo-data", "--out", out, "--users", "200", "--items", "80", "--mean-history", "10")
    assert result.exit_code == 0, result.output
    return out


def test_demo_data_writes_csvs(demo_dir: Path) -> None:
    assert sorted(p.name for p in demo_dir.iterdir()) == ["interactions.csv", "items.csv", "users.csv"]
    assert (demo_dir / "users.csv").read_text().count("\n") == 201
    assert (demo_dir / "items.csv").read_text().count("\n") == 81
    assert (demo_dir / "interactions.csv").read_text().startswith("user_id,item_id,timestamp,rating\n")


def test_train_writes_a_version(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    result = invoke(
        "train",
        "--out",
        out,
        "--interactions",
        demo_dir / "interactions.csv",
        "--items",
        demo_dir / "items.csv",
        "--users",
        demo_dir / "users.csv",
    )
    assert result.exit_code == 0, result.output
    version_dir = resolve_version(out)
    assert (out / CURRENT).is_symlink()
    manifest = load_manifest(version_dir)
    assert manifest["report"]["data"]["users"] == 200
    assert manifest["report"]["data"]["items_with_attributes"] == 80
    output = text(result)
    assert "artefacts written:" in output
    assert version_dir.name in output
    assert "data: " in output and " interactions, 200 users," in output
    # The ranker ships for GPUs too; a deployment configuration it lacks is refused before anything starts.
    assert (version_dir / "triton" / "ranker" / "1" / "model.onnx").is_file()
    refused = invoke("serve", "--artifacts", out, "--port", "0", "--triton-config", "tpu")
    assert refused.exit_code == 2, refused.output
    assert "'tpu'" in text(refused) and "['gpu', 'gpu-cuda']" in text(refused)


def test_train_with_config_override(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[ranking]\nmodels = ["gru4rec"]\nblend_grid = [0.0, 1.0]\n[gru4rec]\nepochs = 2\n')
    out = tmp_path / "artifacts"
    result = invoke("train", "--out", out, "--interactions", demo_dir / "interactions.csv", "--config", config)
    assert result.exit_code == 0, result.output
    version_dir = resolve_version(out)
    written = json.loads((version_dir / CONFIG_FILE).read_text())
    assert written["ranking"]["models"] == ["gru4rec"]
    assert written["gru4rec"]["epochs"] == 2
    validation = load_manifest(version_dir)["report"]["validation"]
    assert set(validation["rankers_alone"]) == {"candidates", "markov", "gru4rec"}
    assert set(validation["blend_weights"].values()) <= {0.0, 1.0}


def test_train_config_with_unknown_key(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[item_knn]\nneighbours = 10\nsurprise = 3\n")
    out = tmp_path / "artifacts"
    result = invoke("train", "--out", out, "--interactions", demo_dir / "interactions.csv", "--config", config)
    assert result.exit_code == 2, result.output
    assert "item_knn.surprise" in text(result)
    assert not out.exists()


def test_train_without_input(tmp_path: Path) -> None:
    result = invoke("train", "--out", tmp_path / "artifacts")
    assert result.exit_code == 2, result.output
    assert "give --interactions" in text(result)
    assert not (tmp_path / "artifacts").exists()


def test_train_with_both_inputs(demo_dir: Path, tmp_path: Path) -> None:
    result = invoke(
        "train",
        "--out",
        tmp_path / "artifacts",
        "--movielens",
        tmp_path / "ml",
        "--interactions",
        demo_dir / "interactions.csv",
    )
    assert result.exit_code == 2, result.output
    assert "not both" in text(result)
    assert not (tmp_path / "artifacts").exists()


def test_train_missing_interactions_file(tmp_path: Path) -> None:
    result = invoke("train", "--out", tmp_path / "artifacts", "--interactions", tmp_path / "absent.csv")
    assert result.exit_code == 2, result.output
    assert "no such file" in text(result)


def test_train_with_no_usable_rows(tmp_path: Path) -> None:
    interactions = tmp_path / "interactions.csv"
    interactions.write_text("user_id,item_id,timestamp\n,i1,1\nu1,,2\n")
    result = invoke("train", "--out", tmp_path / "artifacts", "--interactions", interactions)
    assert result.exit_code == 2, result.output
    assert "no usable interactions" in text(result)


def test_train_reads_parquet_interactions(tmp_path: Path) -> None:
    # Every row is rejected, so training stops right after reading: the Parquet file was read, quickly.
    interactions = tmp_path / "interactions.parquet"
    pd.DataFrame({"user_id": ["", "u1"], "item_id": ["i1", ""], "timestamp": [1, 2]}).to_parquet(interactions)
    result = invoke("train", "--out", tmp_path / "artifacts", "--interactions", interactions)
    assert result.exit_code == 2, result.output
    assert "no usable interactions" in text(result)
    (tmp_path / "interactions.json").write_text("[]")
    wrong = invoke("train", "--out", tmp_path / "artifacts", "--interactions", tmp_path / "interactions.json")
    assert wrong.exit_code == 2, wrong.output
    assert "unsupported file type '.json'" in text(wrong)


def test_serve_without_artefacts(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("serve", "--artifacts", empty, "--port", "0")
    assert result.exit_code == 2, result.output
    assert "no artefact version found" in text(result)
    # Nothing was created in the directory.
    assert list(empty.iterdir()) == []


def test_malformed_csv_trains_and_reports_what_was_rejected(demo_dir: Path, tmp_path: Path) -> None:
    interactions = tmp_path / "interactions.csv"
    good = (demo_dir / "interactions.csv").read_text()
    interactions.write_text(good + "u00001,,1600000000,3\nu00001,i00001,yesterday,3\nu00001,i00001\n" * 2)
    result = invoke("train", "--out", tmp_path / "artifacts", "--interactions", interactions)
    assert result.exit_code == 0, result.output
    output = text(result)
    assert "bad_timestamp=2" in output and "missing_item_id=2" in output and "unparsable_row=2" in output
    report = json.loads((resolve_version(tmp_path / "artifacts") / "report.json").read_text())
    assert report["quality"][0]["rejected"] == {"bad_timestamp": 2, "missing_item_id": 2, "unparsable_row": 2}


def test_evaluate_reports_stages_beside_baselines(demo_dir: Path, tmp_path: Path) -> None:
    # A leave-last-out split in recbench's format: the latest interaction of each user is the test row.
    interactions = pd.read_csv(demo_dir / "interactions.csv").sort_values(["user_id", "timestamp"], kind="stable")
    last = interactions.groupby("user_id").tail(1)
    split = tmp_path / "split"
    split.mkdir()
    interactions.drop(index=last.index).to_csv(split / "train.csv", index=False)
    last[["user_id", "item_id", "timestamp"]].to_csv(split / "test.csv", index=False)
    config = tmp_path / "small.toml"
    config.write_text("[autoencoder]\nhidden = [32]\nlatent = 8\nepochs = 4\npatience = 2\n")
    trained = invoke("train", "--interactions", split / "train.csv", "--out", tmp_path / "art", "--config", config)
    assert trained.exit_code == 0, trained.output
    result = invoke("evaluate", "--split", split, "--artifacts", tmp_path / "art", "--out", tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["users"] == len(last)
    for stage in ("candidates", "ranked", "popularity", "ease"):
        assert {"HR@10", "NDCG@10", "HR@100", "HR@200"} <= set(report[stage]), stage
        assert 0.0 <= report[stage]["NDCG@10"] <= report[stage]["HR@10"] <= report[stage]["HR@100"] <= 1.0
    # Candidate and ranked lists hold the same 200 items, so their HR at the full depth agrees.
    assert report["candidates"]["HR@200"] == report["ranked"]["HR@200"]
    # Popularity here is recomputed by hand: the most popular unseen items of each user.
    counts = interactions.drop(index=last.index)["item_id"].value_counts()
    counts = counts.reset_index().sort_values(["count", "item_id"], ascending=[False, True]).set_index("item_id")
    # (ties go to the smaller id, as the vocabulary is sorted by id)
    seen = interactions.drop(index=last.index).groupby("user_id")["item_id"].apply(set)
    hits = sum(
        target in [i for i in counts.index if i not in seen[user]][:10]
        for user, target in zip(last["user_id"], last["item_id"], strict=True)
    )
    assert report["popularity"]["HR@10"] == pytest.approx(hits / len(last))

    # A seeded sample of the test users: the same users for every model, and the same at every run.
    sampled = [
        json.loads(
            text(invoke("evaluate", "--split", split, "--artifacts", tmp_path / "art", "--users", "40", "--no-ease"))
        )
        for _ in range(2)
    ]
    assert sampled[0]["users"] == 40 and sampled[0]["test_users"] == len(last)
    assert sampled[0]["ranked"] == sampled[1]["ranked"] and "ease" not in sampled[0]


def test_evaluate_needs_a_split(tmp_path: Path) -> None:
    result = invoke("evaluate", "--split", tmp_path, "--artifacts", tmp_path)
    assert result.exit_code == 2
    assert "recbench.py split" in text(result)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_training_commands_in_a_serve_only_install_say_what_to_install(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    # A serve-only install: the import system finds no TensorFlow (nor would `import tensorflow`).
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else find_spec(name, *a)
    )
    arguments = (
        ["--movielens", tmp_path, "--out", tmp_path / "art"]
        if command == "train"
        else ["--split", tmp_path, "--artifacts", tmp_path]
    )
    result = invoke(command, *arguments)
    assert result.exit_code == 2
    assert "pip install 'recsys[train]'" in text(result) and "tensorflow" in text(result)
