"""`recsys train` on two workers under MultiWorkerMirroredStrategy (TF_CONFIG), as two local processes on
127.0.0.1 talking gRPC, against the same training in one process: the chief's artefact is complete and
verifies, says it was trained on 2 workers, and its validation quality matches the single process's within
noise; the other worker leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from recsys_runtime.artifacts import CURRENT, MANIFEST
from recsys_runtime.layout import REPORT_JSON
from services.common.artifacts import open_artifacts
from trainer.demo import generate
from trainer.distributed import SINGLE, ClusterError, cluster_from_env

# Small enough for CI on 2 cores (both trainings in about a minute and a half), large enough to learn:
# every Keras model (Mult-VAE with early stopping, GRU4Rec, Caser, the item autoencoder) and both GANs run.
CONFIG = """
[autoencoder]
hidden = [64]
latent = 16
epochs = 6
patience = 2
batch_size = 64
[item_autoencoder]
epochs = 10
[gru4rec]
epochs = 2
units = 16
embedding = 8
[caser]
epochs = 2
embedding = 8
[gan]
steps = 100
item_steps = 100
"""
# Each process may take this long before the test gives up on it (and kills every worker): a hang, e.g. a
# worker waiting for a collective the other never joins, fails the test instead of stalling CI.
PROCESS_TIMEOUT_S = 240
# Validation metrics of ~300 held-out users: a hit rate's standard error there is ~0.03, so runs that differ
# only by the order of floating-point sums and random draws land within 0.07 (about two standard errors).
TOLERANCE = 0.07
COMPARED = (("autoencoder", "HR@10"), ("autoencoder", "NDCG@10"), ("blend", "HR@10"), ("blend", "NDCG@10"))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def train_command(data: Path, config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from services.launcher.cli import main; main()",
        "train",
        "--interactions",
        str(data / "interactions.csv"),
        "--items",
        str(data / "items.csv"),
        "--users",
        str(data / "users.csv"),
        "--config",
        str(config),
        "--out",
        str(out),
    ]


def run_processes(commands: list[tuple[list[str], dict[str, str]]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once, wait for all; on a timeout or a failure kill the rest."""
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for command, env in commands
    ]
    results = []
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        for process in processes:
            output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(process.args, process.returncode, output, None))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("distributed")
    data = base / "data"
    generate(n_users=300, n_items=120, mean_history=15).write(data)
    config = base / "config.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    # The workers' temporary roots land here, so the test can see that they are removed.
    scratch = base / "scratch"
    scratch.mkdir()
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        (
            train_command(data, config, base / "distributed"),
            {
                **env,
                "TMPDIR": str(scratch),
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            },
        )
        for index in range(2)
    ]
    started = time.perf_counter()
    distributed = run_processes(workers)
    distributed_s = time.perf_counter() - started
    for index, result in enumerate(distributed):
        assert result.returncode == 0, f"worker {index} failed:\n{result.stdout[-4000:]}"
    started = time.perf_counter()
    (single,) = run_processes([(train_command(data, config, base / "single"), env)])
    single_s = time.perf_counter() - started
    assert single.returncode == 0, single.stdout[-4000:]
    return {
        "distributed": base / "distributed",
        "single": base / "single",
        "scratch": scratch,
        "worker_output": [r.stdout for r in distributed],
        "seconds": {"distributed": distributed_s, "single": single_s},
    }


def report(root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((open_artifacts(root).path / REPORT_JSON).read_text())
    return loaded


@pytest.mark.integration
@pytest.mark.timeout(2 * PROCESS_TIMEOUT_S)
def test_chief_writes_one_verified_version_trained_on_two_workers(runs: dict[str, Any]) -> None:
    root = runs["distributed"]
    artefact = open_artifacts(root)  # resolves `current` and verifies every checksum
    assert artefact.manifest["report"]["workers"] == 2
    assert report(root)["workers"] == 2
    assert report(runs["single"])["workers"] == 1
    # One version and its `current` link (plus the served-version links beside them): nothing from worker 1,
    # no staging directory left.
    versions = [p for p in root.iterdir() if (p / MANIFEST).is_file() and not p.is_symlink()]
    assert [v.name for v in versions] == [artefact.path.name]
    assert (root / CURRENT).resolve() == artefact.path.resolve()
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]
    # The non-chief's temporary copy is gone too.
    assert list(runs["scratch"].iterdir()) == []
    assert "the chief writes the artefact" in runs["worker_output"][1]
    assert "artefacts written" in runs["worker_output"][0]


@pytest.mark.integration
@pytest.mark.timeout(2 * PROCESS_TIMEOUT_S)
def test_two_workers_match_single_worker_quality(runs: dict[str, Any]) -> None:
    distributed = report(runs["distributed"])["validation"]
    single = report(runs["single"])["validation"]
    assert distributed["users"] == single["users"] > 0
    # Popularity involves no training: equal to the last digit, so both ran on the same data and split.
    assert distributed["popularity"] == single["popularity"]
    for model, metric in COMPARED:
        gap = abs(distributed[model][metric] - single[model][metric])
        assert gap <= TOLERANCE, (
            f"{model} {metric}: 2 workers {distributed[model][metric]:.4f}, 1: {single[model][metric]:.4f}"
        )
    # The GANs trained under the strategy too.
    assert report(runs["distributed"])["models"]["synthetic"]["user_generator"]
    shown = {f"{m} {k}": (round(distributed[m][k], 4), round(single[m][k], 4)) for m, k in COMPARED}
    print(f"\n2 workers vs 1: {shown}; wall time (s): {runs['seconds']}")


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        ("", SINGLE),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', SINGLE),
    ],
)
def test_one_task_is_single_process(tf_config: str, expected: object) -> None:
    assert cluster_from_env({"TF_CONFIG": tf_config}) == expected


def test_cluster_roles() -> None:
    workers = {"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", "index": 2}}
    cluster = cluster_from_env({"TF_CONFIG": json.dumps(workers)})
    assert (cluster.workers, cluster.rank, cluster.is_chief) == (3, 2, False)
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    cluster = cluster_from_env({"TF_CONFIG": json.dumps(with_chief)})
    assert (cluster.workers, cluster.rank, cluster.is_chief) == (2, 1, False)
    chief = {**with_chief, "task": {"type": "chief", "index": 0}}
    assert cluster_from_env({"TF_CONFIG": json.dumps(chief)}).is_chief


@pytest.mark.parametrize(
    "tf_config",
    [
        "not json",
        '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
        '{"cluster": {"worker": ["a:1", "b:1"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}',
    ],
)
def test_bad_tf_config_is_refused(tf_config: str) -> None:
    with pytest.raises(ClusterError):
        cluster_from_env({"TF_CONFIG": tf_config})
