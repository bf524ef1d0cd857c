"""Matplotlib figures of the runs (LR finder, schedule, confusion, pretraining history) and of the
report. Figures are built with matplotlib's object API and its Agg canvas: no display, and no
global backend switched when lesionssl is imported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lesionssl.io import atomic_write
from lesionssl.layout import PRETRAIN_STAGE


def _figure(figsize: tuple[float, float], rows: int = 1, columns: int = 1, squeeze: bool = True):
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=squeeze)


#: Print resolution of PNG figures; every PNG also gets a vector SVG beside it (for papers).
DPI = 300


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".") or "png"))
    if path.suffix == ".png":
        atomic_write(path.with_suffix(".svg"), lambda tmp: fig.savefig(tmp, format="svg"))


def plot_roc(labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """One-vs-rest ROC curve of every class present, with its AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _figure((4.8, 4.2))
    for i, name in enumerate(classes):
        positives = labels == i
        if 0 < positives.sum() < len(labels):
            fpr, tpr, _ = roc_curve(positives, probs[:, i])
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({roc_auc_score(positives, probs[:, i]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right", title="class (AUROC)", title_fontsize=7)
    _save(fig, path)


def plot_lr_finder(finder, chosen_lr: float, path: Path) -> None:
    """Smoothed loss against LR (log scale) with the chosen LR marked."""
    fig, ax = _figure((5, 3.5))
    ax.plot(finder.lrs, finder.losses)
    ax.axvline(chosen_lr, color="tab:red", linestyle="--", label=f"chosen {chosen_lr:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="LR finder")
    ax.legend()
    _save(fig, path)


def plot_schedule(schedule: pd.DataFrame, path: Path) -> None:
    """The LR and momentum (Adam beta1) actually applied per iteration."""
    fig, ax = _figure((5, 3.5))
    ax.plot(schedule["lr"], color="tab:blue")
    ax.set(xlabel="iteration", ylabel="learning rate", title="1cycle schedule")
    twin = ax.twinx()
    twin.plot(schedule["momentum"], color="tab:orange")
    twin.set_ylabel("momentum / beta1")
    _save(fig, path)


def plot_confusion(
    matrix: np.ndarray, classes: list[str], path: Path, title: str = "confusion (row-normalised)"
) -> None:
    """Row-normalised confusion matrix with the values written in the cells."""
    fig, ax = _figure((max(4.5, 1 + 0.6 * len(classes)), max(4.0, 0.8 + 0.6 * len(classes))))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black")
    _save(fig, path)


def plot_pretrain_history(history: pd.DataFrame, path: Path) -> None:
    """The self-supervised loss, the terms its method logs and the monitors, per epoch."""
    main = history[history["stage"] == PRETRAIN_STAGE]
    columns = [c for c in main.select_dtypes("number").columns if c != "epoch" and main[c].notna().any()]
    fig, axes = _figure((3.2 * len(columns), 3), 1, len(columns), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.plot(main["epoch"], main[column], marker="o")
        ax.set(xlabel="epoch", title=column)
    _save(fig, path)


def plot_per_class_f1(table: pd.DataFrame, path: Path) -> None:
    """Grouped bars: mean per-class F1 per initialisation with std error bars (columns: init, class, mean, std)."""
    inits, classes = list(dict.fromkeys(table["init"])), list(dict.fromkeys(table["class"]))
    width = 0.8 / len(inits)
    fig, ax = _figure((max(5, 1.1 * len(classes)), 3.5))
    for i, init in enumerate(inits):
        rows = table[table["init"] == init].set_index("class").reindex(classes)
        ax.bar(np.arange(len(classes)) + i * width, rows["mean"], width, yerr=rows["std"], capsize=2, label=init)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels(classes)
    ax.set(ylabel="F1 (mean over runs)", ylim=(0, 1), title="Per-class F1")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_lr_curves(curves: dict[str, list[pd.DataFrame]], chosen: dict[str, list[float]], path: Path) -> None:
    """LR-finder curves of every run, one panel per initialisation, chosen LRs as dashed lines."""
    fig, axes = _figure((4 * len(curves), 3), 1, len(curves), squeeze=False)
    for ax, (init, frames) in zip(axes[0], curves.items()):
        for frame in frames:
            ax.plot(frame["lr"], frame["smoothed_loss"], alpha=0.6)
        for lr in chosen.get(init, []):
            ax.axvline(lr, color="tab:red", linestyle="--", alpha=0.4)
        ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title=init)
    _save(fig, path)


def plot_label_efficiency(summary: pd.DataFrame, path: Path, title: str = "", unit: str = "per class") -> None:
    """Accuracy and balanced accuracy vs labels (per class, or in total), mean with 95% CI bands."""
    fig, axes = _figure((9, 3.5), 1, 2)
    if title:
        fig.suptitle(title, fontsize=10)
    budgets = sorted(summary["budget"].unique())
    for ax, metric in zip(axes, ("accuracy", "balanced_accuracy")):
        for init, rows in summary[summary["metric"] == metric].groupby("init", sort=False, observed=True):
            rows = rows.sort_values("budget")
            ax.plot(rows["budget"], rows["mean"], marker="o", label=init)
            ax.fill_between(rows["budget"], rows["ci_low"], rows["ci_high"], alpha=0.2)
        ax.set(
            xscale="log",
            xlabel=f"labelled images {unit}",
            ylabel=metric.replace("_", " "),
            title=metric.replace("_", " "),
        )
        ax.set_xticks(budgets, [str(int(b)) for b in budgets])
        if ax.lines:
            ax.legend(fontsize=8)
    _save(fig, path)


def plot_reliability(
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    path: Path,
    bins: int = 10,
    title: str = "Reliability on the test split",
) -> None:
    """Reliability diagram: accuracy against top-1 confidence per bin, before and after
    temperature scaling, with the diagonal of perfect calibration."""
    fig, ax = _figure((4.5, 4))
    edges = np.linspace(0, 1, bins + 1)
    for probs, name in ((before, "before"), (after, "after temperature scaling")):
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        ax.plot(
            [confidence[which == b].mean() for b in filled],
            [correct[which == b].mean() for b in filled],
            marker="o",
            label=name,
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_examples(examples: pd.DataFrame, images: np.ndarray, overlays: np.ndarray, path: Path) -> None:
    """Per class (a row), the most confident correct and wrong predictions of it: each image and
    its Grad-CAM overlay (``images`` and ``overlays`` are uint8, one per row of ``examples``)."""
    classes = list(dict.fromkeys(examples["class"]))
    fig, axes = _figure((8, 2.1 * len(classes)), len(classes), 4, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, row in enumerate(examples.itertuples(index=False)):
        r, c = classes.index(row[0]), 0 if row.kind == "correct" else 2
        axes[r, c].imshow(images[i])
        axes[r, c + 1].imshow(overlays[i])
        axes[r, c].set_title(f"{row.kind}: label {row.label}", fontsize=8)
        axes[r, c + 1].set_title(f"predicted {row[0]}, p {row.probability:.2f}", fontsize=8)
    for r, name in enumerate(classes):
        axes[r, 0].text(
            -0.08, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=10, fontweight="bold"
        )
    fig.suptitle(
        "Most confident correct (left) and wrong (right) test predictions per class, with Grad-CAM", fontsize=9
    )
    _save(fig, path)


def plot_embedding_map(points: np.ndarray, sets: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Two panels of the same 2-D embedding: coloured by set (pool and sites), and by label."""
    fig, axes = _figure((10, 4.6), 1, 2)
    for ax, colour_by, title in ((axes[0], sets, "by set"), (axes[1], labels, "by label")):
        for value in dict.fromkeys(colour_by):
            chosen = colour_by == value
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, label=f"{value} ({int(chosen.sum())})")
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=2, loc="best")
    _save(fig, path)
