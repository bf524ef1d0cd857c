"""``lesionssl predict``: apply a fine-tuned model to new images.

The model's own preprocessing (size, normalisation, test-time augmentation) and its temperature
are applied; the malignant probability is compared with the operating point chosen on the
validation split. Unreadable images are skipped and listed, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lesionssl.config import FinetuneConfig, RuntimeConfig
from lesionssl.data.images import ImageLoadError
from lesionssl.data.loaders import label_indices
from lesionssl.data.sources import read_sources
from lesionssl.data.store import build_store, decode_into, stored_size
from lesionssl.deploy.model import load_model
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.adabn import adapt_batchnorm, prior_warning
from lesionssl.evaluate.calibration import apply_temperature, malignant_point, malignant_probability
from lesionssl.evaluate.metrics import compute_metrics, predictions_frame
from lesionssl.evaluate.prior import adjust, em_prior
from lesionssl.finetuning.run import predict as predict_probabilities
from lesionssl.io import write_csv, write_json
from lesionssl.layout import MODEL_IMAGES
from lesionssl.progress import console
from lesionssl.records import ModelRecord

#: Exit code of ``lesionssl predict`` when some images were skipped (the rest are predicted).
SOME_SKIPPED = 3


@dataclass(frozen=True)
class PredictionResult:
    """What ``predict`` wrote: the predictions, the skipped images, and metrics when labelled."""

    predictions: Path
    predicted: int
    skipped: int
    metrics: dict[str, Any] | None
    seen: dict[str, int] | None = None  # labelled images that were in the model's own train / val splits


@dataclass(frozen=True)
class SourceImages:
    """The readable images of some sources, decoded as the model's store keeps them."""

    images: np.ndarray  # (N, S, S, 3) uint8, one row per source row (the rows of skipped images stay zero)
    table: pd.DataFrame  # the readable rows, with ``row`` (their row in ``images``)
    skipped: int


def read_images(sources: list[str], record: ModelRecord, model_dir: Path, skipped_file: Path) -> SourceImages:
    """Decode every image of ``sources`` at the model's stored size; list the unreadable ones in
    ``skipped_file`` (deleted when none is), refuse labels the model does not know."""
    table = read_sources(sources)
    unknown = sorted(set(table["label"]) - set(record.classes) - {""})
    if unknown:
        raise LesionSSLError(
            f"the model in {model_dir} was trained on the classes {record.classes}; the data has labels {unknown} that it does not know"
        )
    size, paths = stored_size(record.image_size, record.store_margin), table["path"].tolist()
    try:  # the decode-once store: predicting or explaining these images again decodes nothing
        images, skipped = build_store(paths, size, "decoding images", record.colour), []
    except ImageLoadError:  # some files are unreadable: decode the others, and list these
        images = np.zeros((len(table), size, size, 3), dtype=np.uint8)
        skipped = decode_into(images, paths, "decoding images", skip_unreadable=True, colour=record.colour)
    bad = [row for row, _ in skipped]
    if skipped:
        write_csv(
            skipped_file,
            pd.DataFrame(
                {
                    "image": table["image"].iloc[bad].tolist(),
                    "path": table["path"].iloc[bad].tolist(),
                    "reason": [reason for _, reason in skipped],
                }
            ),
        )
    else:
        skipped_file.unlink(missing_ok=True)
    kept = table.assign(row=np.arange(len(table))).drop(index=bad).reset_index(drop=True)
    if kept.empty:
        raise LesionSSLError(f"none of the {len(table)} images could be read (listed in {skipped_file})")
    return SourceImages(images, kept, len(skipped))


def _target_prior(prior: str, record: ModelRecord, probs: np.ndarray) -> np.ndarray | None:
    """The deployment prior: none, uniform, an EM estimate on these images, or a file {class: p}."""
    classes, train = record.classes, np.asarray(record.train_prior)
    if prior == "none":
        return None
    if prior == "uniform":
        return np.full(len(classes), 1 / len(classes))
    if prior == "estimate":
        return em_prior(probs, train)
    try:
        given = yaml.safe_load(Path(prior).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LesionSSLError(
            f"--prior must be none, uniform, estimate or a YAML/JSON file of class: probability ({exc})"
        ) from None
    if (
        not isinstance(given, dict)
        or set(given) - set(classes)
        or any(not isinstance(v, (int, float)) or v < 0 for v in given.values())
    ):
        raise LesionSSLError(f"{prior}: give a mapping of the model's classes {classes} to non-negative probabilities")
    missing = [c for c in classes if c not in given]
    if missing:  # a class left out would silently get probability 0 for every image
        raise LesionSSLError(
            f"{prior} gives no probability for {', '.join(missing)}: give every class of the model ({', '.join(classes)}); 0 is allowed when meant"
        )
    values = np.array([float(given[c]) for c in classes])
    if values.sum() <= 0:
        raise LesionSSLError(f"{prior}: the probabilities sum to 0")
    return values / values.sum()


def predict_images(
    model_dir: Path,
    sources: list[str],
    out: Path,
    tta: int | None = None,
    prior: str = "none",
    batch_size: int = 64,
    runtime: RuntimeConfig | None = None,
    adapt_bn: bool = False,
) -> PredictionResult:
    """Predict every readable image of ``sources``; write ``out`` (CSV), ``skipped.csv`` beside it
    when images were skipped, and ``<out>.metrics.json`` when the sources carry labels. With
    ``adapt_bn``, the BatchNorm statistics are first re-estimated on these images (AdaBN: they
    should be one site's), with a warning when their class mix looks unlike training's."""
    module, record = load_model(model_dir)
    classes = record.classes
    out = Path(out)
    source = read_images(sources, record, model_dir, out.with_name("skipped.csv"))
    kept = source.table
    config = FinetuneConfig(
        backbone=record.architecture,
        image_size=record.image_size,
        batch_size=batch_size,
        tta=record.tta if tta is None else tta,
        runtime=runtime or RuntimeConfig(),
    )
    if adapt_bn:
        layers = adapt_batchnorm(module, source.images, kept, classes, batch_size)
        console.print(
            f"AdaBN: the statistics of {layers} BatchNorm layers re-estimated on these {len(kept)} images", markup=False
        )
    probs = predict_probabilities(module, config, source.images, kept, classes)
    if adapt_bn and (warning := prior_warning(probs, record.train_prior, classes)):
        console.print(warning, markup=False)
    if record.temperature is not None:
        probs = apply_temperature(probs, record.temperature)
    target = _target_prior(prior, record, probs)
    if target is not None:
        probs = adjust(probs, np.asarray(record.train_prior), target)
    labels = label_indices(kept, classes)
    frame = predictions_frame(kept["image"].tolist(), labels, probs, classes)
    frame.insert(1, "path", kept["path"])
    own = model_split(model_dir, kept["path"])
    if own is not None:
        frame["model_split"] = own
    if record.malignant_classes:
        frame["p_malignant"] = malignant_probability(probs, classes, record.malignant_classes)
        if record.threshold is not None:
            frame["malignant"] = frame["p_malignant"] >= record.threshold
    write_csv(out, frame)
    seen = np.zeros(len(kept), dtype=bool) if own is None else (own != "").to_numpy()
    metrics = _metrics(labels, probs, record, out, seen, own) if ((labels >= 0) & ~seen).any() else None
    return PredictionResult(out, len(kept), source.skipped, metrics, _seen_counts(labels, own))


def model_split(model_dir: Path, paths: pd.Series) -> pd.Series | None:
    """For each image, the model's own split it was in (``train`` / ``val``) or ``""``; None when
    the model does not list its images (made before lesionssl recorded them)."""
    listing = Path(model_dir) / MODEL_IMAGES
    if not listing.is_file():
        return None
    own = pd.read_csv(listing, keep_default_na=False)
    where = dict(zip(own["path"], own["split"]))
    return paths.map(lambda p: where.get(os.path.realpath(p), "")).reset_index(drop=True)


def _seen_counts(labels: np.ndarray, own: pd.Series | None) -> dict[str, int] | None:
    """How many labelled images were in the model's own train and val splits (None: unknown)."""
    if own is None:
        return None
    labelled = own[labels >= 0]
    return {split: int((labelled == split).sum()) for split in ("train", "val")}


def _metrics(
    labels: np.ndarray, probs: np.ndarray, record: ModelRecord, out: Path, seen: np.ndarray, own: pd.Series | None
) -> dict[str, Any]:
    """Metrics over the labelled images the model never trained or validated on, as ``finetune``
    computes them, plus the operating point; how many of its own images were left out."""
    labelled = (labels >= 0) & ~seen
    metrics = compute_metrics(labels[labelled], probs[labelled], record.classes)
    metrics["left_out_model_images"] = (
        _seen_counts(labels, own) or "unknown: the model does not list its training images"
    )
    if record.threshold is not None and record.malignant_classes:
        metrics["operating_point"] = {
            "threshold": record.threshold,
            "target_sensitivity": record.target_sensitivity,
            **malignant_point(
                probs[labelled], labels[labelled], record.classes, record.malignant_classes, record.threshold
            ),
        }
    metrics["labelled_images"] = int(labelled.sum())
    write_json(out.with_suffix(".metrics.json"), metrics)
    return metrics
