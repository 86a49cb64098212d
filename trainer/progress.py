"""What training reports while it runs: the stage it is in, and for each model the units of work done out of
the total it will do (epochs, batches or generator updates), from which a display can show an ETA.

Training code calls these; `recsys train` renders them with rich. The default, `SILENT`, drops them."""

from __future__ import annotations

import time
from typing import Any, Protocol


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


class Throttled:
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


def keras_batches(progress: TrainingProgress, task: str, epochs: int, steps_per_epoch: int) -> Any:
    """A Keras callback reporting batches done out of epochs x steps_per_epoch, with the last epoch's loss."""
    import keras

    report = Throttled(progress, task, epochs * steps_per_epoch)

    class BatchProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self.detail = ""

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            report(self.epoch * steps_per_epoch + batch + 1, self.detail)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs and "loss" in logs:
                self.detail = f"epoch {epoch + 1}/{epochs}, loss {float(logs['loss']):.4f}"
            report((epoch + 1) * steps_per_epoch, self.detail)

    return BatchProgress()


def step_plan(epochs: int, steps_per_epoch: int, max_steps: int) -> tuple[int, int]:
    """(epochs, batches per epoch) to run: `epochs` full passes, or fewer so that at most `max_steps` batches
    run in all; when even one pass is longer than that, one partial pass of a shuffled epoch (max_steps 0: no
    cap). This keeps a model's training time bounded as the data grows."""
    if max_steps <= 0 or epochs * steps_per_epoch <= max_steps:
        return epochs, steps_per_epoch
    if max_steps < steps_per_epoch:
        return 1, max_steps
    return max_steps // steps_per_epoch, steps_per_epoch
