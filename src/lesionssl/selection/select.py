"""``lesionssl select``: the pool images an expert should label next.

The *pool* of a manifest is its ``train`` images (labelled already) and its ``unlabelled`` ones
(the candidates). Validation, test and external images are never in it, so they can never be
picked. Images listed in ``--exclude`` files (labelled in an earlier round, or sent out) count as
labelled and are never picked, nor is any other image of their groups. Features come from the
backbone once and are cached with the linear probe's (:func:`~lesionssl.evaluate.probe.cached_features`).

Writes ``to_label.csv`` (the picks in order, with an empty ``label`` column to fill in), its
sidecar ``to_label.json`` (what made the picks, so ``split --labels`` finds the manifest) and
``to_label.html`` (thumbnails with a class menu per image that downloads the filled-in CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd

from lesionssl import __version__
from lesionssl.config import SelectConfig
from lesionssl.data.split import Manifest, read_manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.probe import cached_features
from lesionssl.io import write_csv, write_json
from lesionssl.layout import FEATURES
from lesionssl.models.backbones import build_backbone, resolve_preprocessing
from lesionssl.selection.page import write_page
from lesionssl.selection.strategies import STRATEGIES, Pool, Selection

#: The columns of a selection CSV; ``label`` is left empty for the expert.
REQUEST_COLUMNS = ["order", "image", "label", "group", "path", "strategy", "score"]
#: Manifest splits that make up the pool a strategy sees.
POOL_SPLITS = ("train", "unlabelled")


@dataclass(frozen=True)
class LabelRequest:
    """What ``select`` wrote: the CSV to fill in, its picks, the HTML page, and the pool it chose from."""

    path: Path
    table: pd.DataFrame
    page: Path
    pool_images: int
    candidates: int
    settings: dict


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def excluded_images(files: list[Path], manifest: Manifest) -> set[str]:
    """Image names listed in ``--exclude`` files (an ``image`` column); unknown names are an error."""
    names: set[str] = set()
    for file in files:
        if not Path(file).is_file():
            raise LesionSSLError(f"--exclude {file}: no such file")
        table = pd.read_csv(file, dtype=str, keep_default_na=False)
        if "image" not in table:
            raise LesionSSLError(f"--exclude {file}: needs an 'image' column (as in a selection CSV or a manifest)")
        names |= set(table["image"])
    unknown = names - set(manifest.table["image"])
    if unknown:
        raise LesionSSLError(
            f"--exclude: {len(unknown)} image(s) are not in {manifest.path}, e.g. {sorted(unknown)[:3]}"
        )
    return names


def pool_features(config: SelectConfig, manifest: Manifest, rows: np.ndarray) -> np.ndarray:
    """Backbone features of manifest ``rows``, read from or added to the shared cache. A random
    initialisation is seeded with ``config.seed``, as the probe of that seed is."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    images = build_store(
        manifest.table["path"].tolist(),
        stored_size(config.image_size, config.store_margin),
        "decoding images",
        config.colour,
    )
    backbone, info = build_backbone(config.backbone, config.init, config.image_size)
    cache = config.cache or Path(config.manifest).parent / FEATURES
    features = cached_features(
        cache, backbone, images, rows, config.image_size, resolve_preprocessing(config.normalize, info)
    )
    return np.stack([features[r] for r in rows.tolist()])


def choose(config: SelectConfig, manifest: Manifest) -> tuple[pd.DataFrame, Selection, int, int]:
    """The picks (manifest rows in order), the strategy's record, the pool and candidate counts."""
    table = manifest.table.reset_index(drop=True)
    excluded = table["image"].isin(excluded_images(config.exclude, manifest))
    in_pool = table["split"].isin(POOL_SPLITS).to_numpy()
    rows = np.flatnonzero(in_pool)
    pool_table = table.iloc[rows]
    labelled = ((pool_table["split"] == "train") | excluded.iloc[rows]).to_numpy()
    groups = (pool_table["group"] if "group" in pool_table else pool_table["image"]).to_numpy()
    candidates = (pool_table["split"] == "unlabelled").to_numpy() & ~labelled
    if not candidates.any():
        raise LesionSSLError(
            f"{manifest.path}: no unlabelled pool image left to pick (validation, test and external images are never picked)"
        )
    pool = Pool(pool_features(config, manifest, rows), candidates, labelled, groups)
    options = {"clusters": len(manifest.classes)} if config.strategy == "probcover" else {}
    selection = STRATEGIES[config.strategy](pool, config.budget, config.seed, **options)
    picked = pool_table.iloc[selection.picked]
    return picked, selection, len(rows), int(pool.candidates.sum())


def select(config: SelectConfig) -> LabelRequest:
    """Pick ``config.budget`` images and write the CSV, its sidecar and the HTML page."""
    manifest = read_manifest(config.manifest, data_root=config.data_root)
    picked, selection, pool_images, candidates = choose(config, manifest)
    request = pd.DataFrame(
        {
            "order": np.arange(1, len(picked) + 1),
            "image": picked["image"].to_numpy(),
            "label": "",
            "group": (picked["group"] if "group" in picked else picked["image"]).to_numpy(),
            "path": picked["path"].to_numpy(),
            "strategy": config.strategy,
            "score": np.round(selection.scores, 6),
        }
    )[REQUEST_COLUMNS]
    settings = {
        "manifest": str(Path(config.manifest).resolve()),
        **config.model_dump(mode="json", exclude={"manifest", "out"}),
        "strategy_settings": selection.settings,
        "pool_images": pool_images,
        "candidates": candidates,
        "picked": len(request),
        "classes": manifest.classes,
        "lesionssl_version": __version__,
    }
    out = Path(config.out)
    write_json(sidecar(out), settings)
    page = write_page(
        out.with_suffix(".html"),
        request,
        manifest.classes,
        f"{len(request)} images to label ({config.strategy}, {Path(config.init).name if config.init != 'random' else 'random weights'})",
    )
    write_csv(out, request)  # last: the CSV marks a finished selection
    return LabelRequest(out, request, page, pool_images, candidates, settings)
