"""Classification metrics of one run, computed from labels and predicted probabilities only,
so every reported number can be recomputed from ``predictions.csv``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

ECE_BINS = 15


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-1 confidence over equal-width bins (Guo et al. 2017), by torchmetrics."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = np.asarray(probs, dtype=np.float64)
    return float(
        multiclass_calibration_error(
            torch.tensor(probs),
            torch.tensor(np.asarray(labels), dtype=torch.long),
            probs.shape[1],
            n_bins=bins,
            norm="l1",
        )
    )


def _one_vs_rest(labels: np.ndarray, probs: np.ndarray, classes: list[str], score) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for i, name in enumerate(classes):
        positives = labels == i
        out[name] = float(score(positives, probs[:, i])) if 0 < positives.sum() < len(labels) else None
    return out


def compute_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """All per-run metrics.

    Args:
        labels: True class indices, shape ``[n]``.
        probs: Predicted probabilities, shape ``[n, n_classes]``; the prediction is the argmax.
        classes: Class names in index order.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predictions = probs.argmax(axis=1)
    index = list(range(len(classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            labels, predictions, labels=index, zero_division=0
        )
        auroc = _one_vs_rest(labels, probs, classes, roc_auc_score)
        ap = _one_vs_rest(labels, probs, classes, average_precision_score)
        balanced = balanced_accuracy_score(labels, predictions)
    counts = confusion_matrix(labels, predictions, labels=index)
    row_sums = counts.sum(axis=1, keepdims=True)
    # one-vs-rest specificity: of the images not of a class, the share not predicted as it
    negatives = len(labels) - counts.sum(axis=1)
    false_positives = counts.sum(axis=0) - np.diag(counts)
    specificity = np.divide(
        negatives - false_positives, negatives, out=np.full(len(classes), np.nan), where=negatives > 0
    )
    present = [v for v in auroc.values() if v is not None]
    present_ap = [v for v in ap.values() if v is not None]
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "balanced_accuracy": float(balanced),
        # over the classes the test set holds, as balanced accuracy and macro AUROC: a held-out
        # archive with 3 of 8 classes would otherwise count 5 absent classes as F1 0
        "macro_f1": float(np.mean(f1[support > 0])),
        "weighted_f1": float(f1_score(labels, predictions, labels=index, average="weighted", zero_division=0)),
        "macro_auroc": float(np.mean(present)) if present else None,
        "macro_average_precision": float(np.mean(present_ap)) if present_ap else None,
        "ece": expected_calibration_error(labels, probs),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "specificity": None if np.isnan(specificity[i]) else float(specificity[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "auroc": auroc[name],
                "average_precision": ap[name],
            }
            for i, name in enumerate(classes)
        },
        "classes": classes,
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": np.divide(
            counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0
        ).tolist(),
    }


#: Shown for a per-class rate of a class with no test images (its recall and F1 are undefined).
NOT_APPLICABLE = "n/a"


def without_support(per_class: dict[str, dict[str, Any]]) -> list[str]:
    """The classes with no images in the evaluated set: their recall and F1 are undefined, and the
    macro averages (balanced accuracy, macro F1, macro AUROC) leave them out."""
    return [name for name, values in per_class.items() if not values.get("support")]


def support_note(per_class: dict[str, dict[str, Any]]) -> str:
    """One sentence naming the classes the macro averages leave out, or ``""``."""
    missing = without_support(per_class)
    return (
        f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no images here: {NOT_APPLICABLE} in the per-class rows, and left out of balanced accuracy, macro F1 and macro AUROC."
        if missing
        else ""
    )


def predictions_frame(images: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``image,label,prediction,p_<CLASS>...`` with class names, as written to ``predictions.csv``
    (label ``""`` where the index is -1: an unlabelled image)."""
    frame = pd.DataFrame(
        {
            "image": images,
            "label": [classes[i] if i >= 0 else "" for i in labels],
            "prediction": [classes[i] for i in probs.argmax(axis=1)],
        }
    )
    for i, name in enumerate(classes):
        frame[f"p_{name}"] = probs[:, i]
    return frame


def metrics_from_predictions(path: Path, classes: list[str] | None = None) -> dict[str, Any]:
    """Recompute a run's metrics from its ``predictions.csv``."""
    frame = pd.read_csv(path, keep_default_na=False)
    if classes is None:
        classes = [c.removeprefix("p_") for c in frame.columns if c.startswith("p_")]
    probs = frame[[f"p_{c}" for c in classes]].to_numpy()
    labels = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return compute_metrics(labels, probs, classes)
