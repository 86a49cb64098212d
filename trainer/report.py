"""Charts for the training report (PNG, written with matplotlib's non-interactive backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One panel per metric (loss, nll, kl, validation), one line per run."""
    metrics = [m for m in ("loss", "nll", "kl", "validation") if any(run.get(m) for run in curves.values())]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        for run, values in curves.items():
            if values.get(metric):
                axis.plot(range(1, len(values[metric]) + 1), values[metric], label=run)
        axis.set_title("validation NDCG@100" if metric == "validation" else metric)
        axis.set_xlabel("epoch")
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_gan_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One row per generator (users, items): the critic's Wasserstein estimate, the generator loss, the
    gradient penalty and, for items, the L2 to the real vectors, per epoch."""
    panels = ("critic", "generator", "gradient_penalty", "reconstruction")
    figure, axes = plt.subplots(len(curves), len(panels), figsize=(3.6 * len(panels), 3 * len(curves)), squeeze=False)
    for row, (name, values) in enumerate(curves.items()):
        for axis, panel in zip(axes[row], panels, strict=True):
            axis.plot(range(1, len(values[panel]) + 1), values[panel])
            axis.set_title(f"{name}: {panel.replace('_', ' ')}")
            axis.set_xlabel("epoch")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
