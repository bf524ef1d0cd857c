"""Limited-label splits: per-class cap (the seed), per-class count or fraction, group-aware.

A manifest is a CSV with columns ``image,label,split,path,group,pretrain``; ``split`` is one of
``train``, ``val``, ``test``, ``unlabelled`` and ``pretrain`` marks the unlabelled pool that
self-supervised pretraining may see. The pool is *inductive* by default (unlabelled + train +
val images, never test images); *transductive* adds the test images, without labels, as the seed
study did. The choice is stored in the manifest's sidecar ``<manifest>.json`` and travels into
every downstream result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lesionssl.data.classes import resolve_class_order
from lesionssl.errors import LesionSSLError

SPLITS = ("train", "val", "test", "unlabelled", "excluded")

#: The seed study's ISIC 2019 design (its notebooks): the 2,074 ``_downsampled`` images are
#: dropped; per class, these many training images (the first 5,000 files capped at 500 per class)
#: and these many validation images (built, never used, not in the pretraining pool); the rest,
#: 19,423 images, is the test set. File order is not recoverable, so images are drawn at random.
SEED_ISIC2019_TRAIN = {"NV": 500, "MEL": 500, "BCC": 500, "BKL": 467, "AK": 306, "SCC": 171, "VASC": 55, "DF": 55}
SEED_ISIC2019_UNUSED = {"NV": 458, "MEL": 309, "BCC": 274, "BKL": 110, "AK": 63, "SCC": 43, "VASC": 12, "DF": 11}
PoolMode = Literal["inductive", "transductive"]


@dataclass(frozen=True)
class SplitSpec:
    """How to carve a labelled set into train / val / test.

    Exactly one of ``per_class_cap`` (at most N per class, the seed used 500),
    ``per_class`` (exactly N per class) and ``fraction`` (share of each class) is set.
    """

    per_class_cap: int | None = None
    seed_isic2019: bool = False
    per_class: int | None = None
    fraction: float | None = None
    val: int = 0
    group_by: str | None = None
    seed: int = 0
    transductive: bool = False

    def __post_init__(self) -> None:
        modes = [m for m in (self.per_class_cap, self.per_class, self.fraction) if m is not None] + ([True] if self.seed_isic2019 else [])
        if len(modes) != 1:
            raise LesionSSLError("choose exactly one of --per-class-cap N, --per-class N, --fraction F, --seed-isic2019")
        if self.fraction is not None and not 0.0 < self.fraction < 1.0:
            raise LesionSSLError(f"--fraction must be between 0 and 1 (exclusive), got {self.fraction}")
        for name in ("per_class_cap", "per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LesionSSLError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.val < 0:
            raise LesionSSLError(f"--val must be >= 0, got {self.val}")

    @property
    def pool(self) -> PoolMode:
        return "transductive" if self.transductive else "inductive"


def _train_targets(counts: pd.Series, spec: SplitSpec) -> dict[str, int]:
    if spec.per_class_cap is not None:
        return {c: min(spec.per_class_cap, n) for c, n in counts.items()}
    if spec.per_class is not None:
        short = {c: int(n) for c, n in counts.items() if n <= spec.per_class}
        if short:
            raise LesionSSLError(
                f"--per-class {spec.per_class} leaves no test images for {short}; "
                "lower it or use --per-class-cap"
            )
        return {c: spec.per_class for c in counts.index}
    return {c: max(1, round(spec.fraction * n)) for c, n in counts.items()}


def seed_isic2019_split(table: pd.DataFrame, spec: SplitSpec) -> pd.DataFrame:
    """The seed study's split of the ISIC 2019 training set: 2,554 train / 19,423 test."""
    table = table.copy()
    downsampled = table["path"].map(lambda p: Path(p).stem.endswith("_downsampled"))
    table["split"] = "excluded"
    rng = np.random.default_rng(spec.seed)
    for label, n_train in SEED_ISIC2019_TRAIN.items():
        rows = table.index[(table["label"] == label) & ~downsampled].to_numpy()
        needed = n_train + SEED_ISIC2019_UNUSED[label]
        if len(rows) <= needed:
            raise LesionSSLError(f"the seed split needs the ISIC 2019 training set: class {label} has {len(rows)} usable images, more than {needed} needed")
        rows = rows[rng.permutation(len(rows))]
        table.loc[rows[:n_train], "split"] = "train"
        table.loc[rows[needed:], "split"] = "test"
    table.loc[table["label"] == "", "split"] = "unlabelled"
    table["group"] = "image:" + table["image"]
    pool = ["train", "unlabelled", "test"] if spec.transductive else ["train", "unlabelled"]
    table["pretrain"] = table["split"].isin(pool).astype(int)
    return table[["image", "label", "split", "path", "group", "pretrain"]]


def make_split(table: pd.DataFrame, spec: SplitSpec, classes: list[str] | None = None) -> pd.DataFrame:
    """Assign every image to a split, whole groups at a time when ``spec.group_by`` is set.

    Groups (lesions, patients) are visited in a seeded random order; a group joins ``train`` if
    all its images fit under their class targets, else ``val`` if they fit there, else ``test``.
    Images without a group id form a group of their own.

    Args:
        table: Output of :func:`lesionssl.data.sources.read_sources`.
        spec: The split settings.
        classes: Class order (default: ISIC 2019 order of the classes present).

    Returns:
        The manifest (see module docstring).
    """
    if spec.seed_isic2019:
        return seed_isic2019_split(table, spec)
    table = table.copy()
    labelled = table["label"] != ""
    if not labelled.any():
        raise LesionSSLError("the data has no labelled images; a split needs labels")
    classes = resolve_class_order(table["label"], classes)
    if spec.group_by:
        if spec.group_by not in table.columns:
            raise LesionSSLError(f"--group-by {spec.group_by}: no such column; available: {sorted(table.columns)}")
        group = table[spec.group_by].where(table[spec.group_by] != "", "image:" + table["image"])
    else:
        group = "image:" + table["image"]
    table["group"] = group

    counts = table.loc[labelled, "label"].value_counts().reindex(classes, fill_value=0)
    train_target = _train_targets(counts, spec)
    val_target = {c: spec.val for c in classes}
    taken = {"train": dict.fromkeys(classes, 0), "val": dict.fromkeys(classes, 0)}
    targets = {"train": train_target, "val": val_target}

    rng = np.random.default_rng(spec.seed)
    groups = table.loc[labelled].groupby("group", sort=True)["label"].value_counts().unstack(fill_value=0)
    order = groups.index.to_numpy()[rng.permutation(len(groups))]
    assignment: dict[str, str] = {}
    for name in order:
        need = groups.loc[name]
        need = need[need > 0]
        for split in ("train", "val"):
            if all(taken[split][c] + n <= targets[split][c] for c, n in need.items()):
                for c, n in need.items():
                    taken[split][c] += int(n)
                assignment[name] = split
                break
        else:
            assignment[name] = "test"

    table["split"] = "unlabelled"
    table.loc[labelled, "split"] = table.loc[labelled, "group"].map(assignment)
    pool = table["split"] != "test" if not spec.transductive else pd.Series(True, index=table.index)
    table["pretrain"] = pool.astype(int)
    return table[["image", "label", "split", "path", "group", "pretrain"]]


def split_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per-class image counts by split, with a total row (the seed's data table)."""
    labelled = manifest[manifest["label"] != ""]
    counts = pd.crosstab(labelled["label"], labelled["split"]).reindex(index=classes, fill_value=0)
    columns = ["train", "val", "test"] if "val" in counts.columns else ["train", "test"]
    counts = counts.reindex(columns=columns, fill_value=0)
    counts.loc["Total"] = counts.sum()
    return counts


def write_manifest(manifest: pd.DataFrame, path: Path, spec: SplitSpec, classes: list[str], sources: list[str]) -> None:
    """Write the manifest CSV and its sidecar JSON (split settings, pool mode, classes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    meta = {
        "classes": classes,
        "pool": spec.pool,
        "spec": asdict(spec),
        "sources": sources,
        "counts": {s: int((manifest["split"] == s).sum()) for s in SPLITS},
        "pretrain_images": int(manifest["pretrain"].sum()),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest with its class order and unlabelled-pool mode."""

    table: pd.DataFrame
    classes: list[str]
    pool: PoolMode
    path: Path

    def rows(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split].reset_index(drop=True)

    def pretrain_rows(self) -> pd.DataFrame:
        return self.table[self.table["pretrain"] == 1].reset_index(drop=True)


def read_manifest(path: Path) -> Manifest:
    """Load a manifest written by :func:`write_manifest`, validating its columns."""
    path = Path(path)
    if not path.is_file():
        raise LesionSSLError(f"split manifest not found: {path} (create one with `lesionssl split`)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"image", "label", "split", "path"} - set(table.columns)
    if missing:
        raise LesionSSLError(f"{path}: not a lesionssl manifest, missing columns {sorted(missing)}")
    bad = set(table["split"]) - set(SPLITS)
    if bad:
        raise LesionSSLError(f"{path}: unknown split values {sorted(bad)}; allowed {list(SPLITS)}")
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if "pretrain" not in table:
        table["pretrain"] = (table["split"] != "test").astype(int).astype(str)
    table["pretrain"] = table["pretrain"].astype(int)
    classes = resolve_class_order(table["label"], meta.get("classes"))
    pool = meta.get("pool") or ("transductive" if table.loc[table["split"] == "test", "pretrain"].eq(1).any() else "inductive")
    return Manifest(table=table, classes=classes, pool=pool, path=path)


def subsample_train(manifest: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Keep ``per_class`` training images per class (whole groups, seeded); the rest of the
    training images become ``unlabelled`` (their labels unused). Val, test and the pretraining
    pool are unchanged, so every budget of a sweep shares one test set and one pool.

    Raises:
        LesionSSLError: When a class has fewer training images than ``per_class``.
    """
    table = manifest.copy()
    train = table[table["split"] == "train"]
    counts = train["label"].value_counts()
    short = {c: int(n) for c, n in counts.items() if n < per_class}
    if short:
        raise LesionSSLError(f"budget {per_class} per class exceeds the training images of {short}")
    groups = train.groupby("group", sort=True)["label"].value_counts().unstack(fill_value=0)
    order = groups.index.to_numpy()[np.random.default_rng(seed).permutation(len(groups))]
    taken = dict.fromkeys(counts.index, 0)
    keep = set()
    for name in order:
        need = groups.loc[name][groups.loc[name] > 0]
        if all(taken[c] + n <= per_class for c, n in need.items()):
            keep.add(name)
            for c, n in need.items():
                taken[c] += int(n)
    dropped = (table["split"] == "train") & ~table["group"].isin(keep)
    table.loc[dropped, "split"] = "unlabelled"
    return table
