"""What training reports while it runs: the stage it is in, and for each model the units of work done out of
the total it will do (epochs, batches or generator updates), from which a display can show an ETA.

Training code calls these; `recsys train` renders them with rich. The default, `SILENT`, drops them."""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise in a CLI; set before keras loads it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the log level, which TensorFlow reads when it loads


class TrainingProgress(Protocol):
    def stage(self, name: str) -> None:
        """A new stage of the pipeline begins (workflow, validation, models, synthetic, write)."""

    def work(self, task: str, done: int, total: int, detail: str = "") -> None:
        """`task` (e.g. "validation: GRU4Rec batches") has done `done` of `total` units; detail: e.g. losses."""


class Silent:
    def stage(self, name: str) -> None:
        pass

    def work(self, task: str, done: int, total: int, detail: str = "") -> None:
        pass


SILENT: TrainingProgress = Silent()


class ThrottledProgress:
    """Forwards work reports at most every `interval_s` (and always the last one): trainers may report every
    batch, which is cheap to count but not to redraw."""

    def __init__(self, progress: TrainingProgress, task: str, total: int, interval_s: float = 0.25) -> None:
        self.progress, self.task, self.total, self.interval_s = progress, task, total, interval_s
        self.last = 0.0

    def __call__(self, done: int, detail: str = "") -> None:
        now = time.monotonic()
        if done >= self.total or now - self.last >= self.interval_s:
            self.last = now
            self.progress.work(self.task, done, self.total, detail)


class BatchProgress(keras.callbacks.Callback):
    """A Keras callback reporting batches done out of epochs x steps_per_epoch, with the last epoch's loss."""

    def __init__(self, progress: TrainingProgress, task: str, epochs: int, steps_per_epoch: int) -> None:
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.report = ThrottledProgress(progress, task, epochs * steps_per_epoch)
        self.epoch = 0
        self.detail = ""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.report(self.epoch * self.steps_per_epoch + batch + 1, self.detail)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs and "loss" in logs:
            self.detail = f"epoch {epoch + 1}/{self.epochs}, loss {float(logs['loss']):.4f}"
        self.report((epoch + 1) * self.steps_per_epoch, self.detail)


def keras_batches(progress: TrainingProgress, task: str, epochs: int, steps_per_epoch: int) -> BatchProgress:
    """A Keras callback reporting batches done out of epochs x steps_per_epoch, with the last epoch's loss."""
    return BatchProgress(progress, task, epochs, steps_per_epoch)


def step_plan(epochs: int, steps_per_epoch: int, max_steps: int) -> tuple[int, int]:
    """(epochs, batches per epoch) to run: `epochs` full passes, or fewer so that at most `max_steps` batches
    run in all; when even one pass is longer than that, one partial pass of a shuffled epoch (max_steps 0: no
    cap). This keeps a model's training time bounded as the data grows."""
    if max_steps <= 0 or epochs * steps_per_epoch <= max_steps:
        return epochs, steps_per_epoch
    if max_steps < steps_per_epoch:
        return 1, max_steps
    return max_steps // steps_per_epoch, steps_per_epoch
