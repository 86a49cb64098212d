"""trainer/progress.py: how training bounds its work as data grows, and reports it; gan.planned_steps."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from trainer.config import load_config
from trainer.models.autoencoder import train_autoencoder
from trainer.models.gan import planned_steps
from trainer.models.sequential import train_gru4rec
from trainer.progress import ThrottledProgress, step_plan


class Recorded:
    def __init__(self) -> None:
        self.reports: list[tuple[str, int, int, str]] = []

    def stage(self, name: str) -> None:
        pass

    def work(self, task: str, done: int, total: int, detail: str = "") -> None:
        self.reports.append((task, done, total, detail))


@pytest.mark.parametrize(
    ("epochs", "per_epoch", "max_steps", "plan"),
    [
        (10, 8, 0, (10, 8)),  # no cap
        (10, 8, 80, (10, 8)),  # exactly at the cap
        (10, 8, 50, (6, 8)),  # fewer whole epochs
        (10, 800, 300, (1, 300)),  # one pass is longer than the cap: one partial pass
        (3, 1000, 2500, (2, 1000)),
    ],
)
def test_step_plan_caps_batches_not_below_one(
    epochs: int, per_epoch: int, max_steps: int, plan: tuple[int, int]
) -> None:
    assert step_plan(epochs, per_epoch, max_steps) == plan
    planned_epochs, planned_steps_per_epoch = plan
    if max_steps:
        assert planned_epochs * planned_steps_per_epoch <= max_steps


def test_gan_updates_shrink_with_wide_rows() -> None:
    gan = load_config(None)["gan"]
    assert planned_steps(gan, 1_683) == gan["steps"]  # ml-100k's catalogue: uncapped
    assert planned_steps(gan, 20_000) == gan["update_budget"] // 20_000 < gan["steps"]
    assert planned_steps(gan, 100_000) == gan["update_budget"] // 100_000
    assert planned_steps({**gan, "update_budget": 0}, 100_000) == gan["steps"]
    assert planned_steps({**gan, "update_budget": 1}, 1_683) == 1, "never zero updates"


def test_throttled_progress_forwards_the_first_and_last_report() -> None:
    progress = Recorded()
    report = ThrottledProgress(progress, "batches", 1000, interval_s=3600)
    for done in range(1, 1001):
        report(done)
    assert [done for _, done, _, _ in progress.reports] == [1, 1000]


def test_gru4rec_runs_at_most_max_steps_batches_and_reports_them() -> None:
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 30, 8) for _ in range(64)]  # shorter than max_length: 64 chunks, 8 batches
    config = {
        "max_length": 10, "embedding": 4, "units": 4, "dropout": 0.0, "learning_rate": 0.01,
        "batch_size": 8, "epochs": 3, "max_steps": 12,
    }  # fmt: skip
    progress = Recorded()
    _, losses = train_gru4rec(sequences, 30, config, seed=0, progress=progress)
    assert len(losses) == 1, "12 batches: one whole epoch of 8, not a second"
    assert progress.reports[-1][:3] == ("GRU4Rec batches", 8, 8)


@pytest.mark.parametrize(
    ("epochs", "max_steps", "scores", "run", "total", "closing"),
    [
        (6, 0, [0.3, 0.1, 0.2], 2, 24, "stopped after epoch 2, best 1"),  # early stopping: patience 1
        (5, 10, [0.1, 0.2, 0.3], 2, 8, "stopped after epoch 2, best 2"),  # max_steps: 2 whole epochs of 4
    ],
)
def test_autoencoder_reports_its_batches_and_where_it_stopped(
    epochs: int, max_steps: int, scores: list[float], run: int, total: int, closing: str
) -> None:
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((60, 30)) < 0.2).astype(np.float32))  # 4 batches of 16 per epoch
    config = dict(load_config()["autoencoder"], hidden=[8], latent=4, batch_size=16, patience=1)
    config.update(epochs=epochs, max_steps=max_steps)
    progress = Recorded()
    values = iter(scores)
    trained = train_autoencoder(matrix, config, seed=0, validate=lambda scorer: next(values), progress=progress)
    assert trained.epochs_run == run and len(trained.curves["loss"]) == run
    done = [d for task, d, t, _ in progress.reports if task == "autoencoder batches" and t == total]
    assert len(done) == len(progress.reports), "every report is against the planned total"
    # Throttled: the first batch, maybe some after, none past the batches that ran, then the closing report.
    assert done[0] == 1 and done == sorted(done) and max(done[:-1]) <= run * 4
    assert progress.reports[-1] == ("autoencoder batches", total, total, closing)
