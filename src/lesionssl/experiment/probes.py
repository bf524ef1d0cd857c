"""The frozen-backbone protocols of ``compare``: linear probe and kNN runs.

A run reads the same budget manifest as the fine-tuning run of its (initialisation, budget,
seed), so the three protocols see the same labels. Backbone features are extracted once per
backbone and image set and cached in ``<experiment>/features/`` (keyed by a hash of the weights,
so a random initialisation is extracted once per seed). Each run writes ``predictions.csv``,
``external/<name>/`` and ``metrics.json`` like a fine-tuning run, so the report treats all
protocols alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from lesionssl import __version__
from lesionssl.config import PROTOCOLS, FinetuneConfig, to_yaml
from lesionssl.data.loaders import label_indices
from lesionssl.data.split import read_manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.domain import domain_auroc
from lesionssl.evaluate.metrics import compute_metrics, predictions_frame
from lesionssl.evaluate.probe import cached_features, knn_probs, linear_probe
from lesionssl.evaluate.test_sets import external_sets, write_external
from lesionssl.io import write_csv, write_text
from lesionssl.layout import RunFolder
from lesionssl.models.backbones import build_backbone, resolve_preprocessing
from lesionssl.records import ExternalResult, Metrics, RunResult


def probe_run(config: FinetuneConfig, protocol: str, cache: Path, knn_k: int) -> dict[str, Any]:
    """One linear-probe or kNN run on ``config.manifest``; writes the run folder like ``finetune``."""
    if protocol not in ("linear", "knn"):
        raise LesionSSLError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")
    started = time.time()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)  # a random initialisation differs per seed
    manifest = read_manifest(config.manifest, data_root=config.data_root)
    classes = manifest.classes
    table = manifest.table.assign(row=np.arange(len(manifest.table)))
    images = build_store(
        table["path"].tolist(), stored_size(config.image_size, config.store_margin), "decoding images", config.colour
    )
    backbone, init_info = build_backbone(config.backbone, config.init, config.image_size)
    preprocessing = resolve_preprocessing(config.normalize, init_info)
    labelled = table[table["label"] != ""]
    features = cached_features(cache, backbone, images, labelled["row"].to_numpy(), config.image_size, preprocessing)

    def part(split: str) -> tuple[np.ndarray, np.ndarray, Any]:
        rows = labelled[labelled["split"] == split]
        x = np.stack([features[r] for r in rows["row"]]) if len(rows) else np.zeros((0, 1))
        return x, label_indices(rows, classes), rows

    (train_x, train_y, train), (val_x, val_y, _), (test_x, test_y, test) = part("train"), part("val"), part("test")
    if train.empty or test.empty:
        raise LesionSSLError(f"{config.manifest} needs train and test images for the {protocol} protocol")
    details: dict[str, Any] = {}
    if protocol == "linear":
        probe = linear_probe(train_x, train_y, val_x if len(val_x) else None, val_y, len(classes), seed=config.seed)
        predict = probe.predict_proba
        details = {
            "C": probe.C,
            "C_selected_on": probe.selected_on,
            "selection_balanced_accuracy": probe.selection_score,
        }
    else:

        def predict(x: np.ndarray) -> np.ndarray:
            return knn_probs(train_x, train_y, x, len(classes), knn_k)

        details = {"k": knn_k}
    probs = predict(test_x)
    metrics = compute_metrics(test_y, probs, classes)
    external = {}
    for evaluation in external_sets(
        manifest, images, config.external, config.image_size, config.store_margin, config.colour
    ):
        ext_rows = evaluation.table["row"].to_numpy()
        ext_features = (
            features
            if evaluation.images is images
            else cached_features(cache, backbone, evaluation.images, ext_rows, config.image_size, preprocessing)
        )
        ext_x = np.stack([ext_features[r] for r in ext_rows])
        external[evaluation.name] = ExternalResult(
            **write_external(out, evaluation, predict(ext_x), classes),
            domain_auroc=domain_auroc(test_x, ext_x, config.seed),
        )
    pool = init_info.get("pretraining", {}).get("pool")
    result = RunResult(
        metrics=Metrics.from_dict(metrics),
        protocol=protocol,
        init=config.init,
        seed=config.seed,
        pretraining_pool=pool,
        transductive=pool == "transductive",
        train_images=int(len(train)),
        test_images=int(len(test)),
        budget_per_class=int(train["label"].value_counts().max()),
        external=external,
        probe=details,
        lesionssl_version=__version__,
        seconds=round(time.time() - started, 1),
    )
    folder = RunFolder(out)
    write_text(folder.config, to_yaml(config, {"resolved": {"protocol": protocol, **details, "init": init_info}}))
    write_csv(folder.predictions, predictions_frame(test["image"].tolist(), test_y, probs, classes))
    result.write(out)  # last: its presence marks the run as finished
    return result.to_dict()
