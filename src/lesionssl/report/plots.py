"""Matplotlib figures written next to each run (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lr_finder(finder, chosen_lr: float, path: Path) -> None:
    """Smoothed loss against LR (log scale) with the chosen LR marked."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(finder.lrs, finder.losses)
    ax.axvline(chosen_lr, color="tab:red", linestyle="--", label=f"chosen {chosen_lr:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="LR finder")
    ax.legend()
    _save(fig, path)


def plot_schedule(schedule: pd.DataFrame, path: Path) -> None:
    """The LR and momentum (Adam beta1) actually applied per iteration."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(schedule["lr"], color="tab:blue")
    ax.set(xlabel="iteration", ylabel="learning rate", title="1cycle schedule")
    twin = ax.twinx()
    twin.plot(schedule["momentum"], color="tab:orange")
    twin.set_ylabel("momentum / beta1")
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str = "confusion (row-normalised)") -> None:
    """Row-normalised confusion matrix with the values written in the cells."""
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black")
    _save(fig, path)


def plot_pretrain_history(history: pd.DataFrame, path: Path) -> None:
    """Barlow Twins loss, its two terms and the monitors per epoch."""
    bt = history[history["stage"] == "bt"]
    columns = [c for c in ("loss", "invariance", "redundancy", "knn_accuracy", "embedding_std", "effective_rank") if c in bt]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.plot(bt["epoch"], bt[column], marker="o")
        ax.set(xlabel="epoch", title=column)
    _save(fig, path)
