"""The labelled sets a finished run is evaluated on once: the held-out archive of the manifest
(its ``external`` split) and any extra datasets named in the configuration (domain shift).

Every protocol (fine-tuning, linear probe, kNN) writes them the same way, so the report reads
``external/<name>/predictions.csv`` of any run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionssl.config import ExternalSet
from lesionssl.data.colour import ColourConstancy
from lesionssl.data.loaders import label_indices
from lesionssl.data.sources import read_sources
from lesionssl.data.split import Manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.metrics import compute_metrics, predictions_frame
from lesionssl.io import write_csv, write_json
from lesionssl.layout import RunFolder

#: The name under which a manifest's held-out split (``split --hold-out``) is reported.
HELD_OUT = "external"
SUMMARY_KEYS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auroc")


@dataclass(frozen=True)
class EvaluationSet:
    """Labelled images to evaluate on: manifest-style rows (``image, label, row``) of ``images``."""

    name: str
    table: pd.DataFrame
    images: np.ndarray


def external_sets(
    manifest: Manifest,
    manifest_images: np.ndarray,
    extra: Sequence[ExternalSet],
    image_size: int,
    store_margin: float,
    colour: ColourConstancy,
) -> list[EvaluationSet]:
    """The manifest's held-out split (if any), then each extra dataset, checked against the classes."""
    classes = manifest.classes
    table = manifest.table.assign(row=np.arange(len(manifest.table)))
    held_out = table[(table["split"] == HELD_OUT) & (table["label"] != "")].reset_index(drop=True)
    sets = [EvaluationSet(HELD_OUT, held_out, manifest_images)] if len(held_out) else []
    for ext in extra:
        if ext.name == HELD_OUT and sets:
            raise LesionSSLError(f"external set name {HELD_OUT!r} is taken by the manifest's held-out split; rename it")
        rows = read_sources(ext.data, Path(ext.images) if ext.images else None, ext.skip_missing)
        rows = rows[rows["label"] != ""].reset_index(drop=True)
        unknown = sorted(set(rows["label"]) - set(classes))
        if unknown or rows.empty:
            raise LesionSSLError(
                f"external set {ext.name}: {'labels ' + str(unknown) + ' are not among the classes ' + str(classes) if unknown else 'no labelled images'}"
            )
        rows["row"] = np.arange(len(rows))
        images = build_store(
            rows["path"].tolist(), stored_size(image_size, store_margin), f"decoding {ext.name}", colour
        )
        sets.append(EvaluationSet(ext.name, rows, images))
    return sets


def write_external(out: Path, evaluation: EvaluationSet, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Write ``external/<name>/predictions.csv`` and ``metrics.json``; return the headline numbers."""
    labels = label_indices(evaluation.table, classes)
    metrics = compute_metrics(labels, probs, classes)
    folder = RunFolder(out).external(evaluation.name)
    folder.path.mkdir(parents=True, exist_ok=True)
    write_csv(folder.predictions, predictions_frame(evaluation.table["image"].tolist(), labels, probs, classes))
    write_json(folder.metrics, metrics)
    return {k: metrics[k] for k in SUMMARY_KEYS}
