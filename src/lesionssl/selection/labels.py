"""``lesionssl split --labels FILE``: an expert's filled-in selection CSV back into a manifest.

The new manifest is the manifest the selection was made from (named in the CSV's sidecar, or
given with ``--manifest``) with every labelled image of the file moved to ``train`` under its new
label. Rows left without a label stay unlabelled. Validation, test and external images cannot
take a label this way (that would leak), and a label must be one of the manifest's classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lesionssl.data.split import Manifest, read_manifest, recorded_spec, write_manifest
from lesionssl.errors import LesionSSLError
from lesionssl.selection.select import POOL_SPLITS, sidecar


@dataclass(frozen=True)
class Relabelled:
    """The manifest written, how many labels it took, and how many rows were left unlabelled."""

    path: Path
    manifest: pd.DataFrame
    classes: list[str]
    pool: str
    added: int
    blank: int


def base_manifest(labels: Path, manifest: Path | None) -> Path:
    """The manifest a selection CSV was made from: ``manifest`` when given, else its sidecar's."""
    if manifest is not None:
        return Path(manifest)
    if sidecar(labels).is_file():
        return Path(json.loads(sidecar(labels).read_text())["manifest"])
    raise LesionSSLError(f"{labels} has no {sidecar(labels).name} naming its manifest; pass --manifest MANIFEST")


def with_labels(manifest: Manifest, labels: pd.DataFrame, source: Path) -> tuple[pd.DataFrame, int, int]:
    """``manifest``'s table with the labelled rows of ``labels`` in ``train``; the counts added and blank."""
    missing = {"image", "label"} - set(labels.columns)
    if missing:
        raise LesionSSLError(f"{source}: needs columns image and label (missing {sorted(missing)})")
    labels = labels.assign(label=labels["label"].str.strip())
    filled = labels[labels["label"] != ""]
    unknown = sorted(set(filled["label"]) - set(manifest.classes))
    if unknown:
        raise LesionSSLError(f"{source}: unknown label(s) {unknown}; the classes are {', '.join(manifest.classes)}")
    table = manifest.table.copy()
    index = pd.Index(table["image"])
    absent = sorted(set(filled["image"]) - set(index))
    if absent:
        raise LesionSSLError(f"{source}: {len(absent)} image(s) are not in {manifest.path}, e.g. {absent[:3]}")
    twice = filled["image"][filled["image"].duplicated()]
    if len(twice):
        raise LesionSSLError(f"{source}: image {twice.iloc[0]} is listed twice")
    rows = index.get_indexer(filled["image"])
    splits = table["split"].to_numpy()[rows]
    barred = [(image, split) for image, split in zip(filled["image"], splits) if split not in POOL_SPLITS]
    if barred:
        image, split = barred[0]
        raise LesionSSLError(
            f"{source}: {image} is a {split} image of {manifest.path}; only pool images can be labelled ({len(barred)} such rows)"
        )
    table.loc[table.index[rows], "label"] = filled["label"].to_numpy()
    table.loc[table.index[rows], "split"] = "train"
    return table, len(filled), int(len(labels) - len(filled))


def apply_labels(labels: Path, manifest: Path | None, out: Path, data_root: Path | None = None) -> Relabelled:
    """Write ``out``: the selection's manifest with the expert's labels as training labels."""
    if not Path(labels).is_file():
        raise LesionSSLError(f"--labels {labels}: no such file")
    base = read_manifest(base_manifest(labels, manifest), data_root=data_root)
    table, added, blank = with_labels(base, pd.read_csv(labels, dtype=str, keep_default_na=False), Path(labels))
    sources = base.record.sources if base.record else []
    write_manifest(table, Path(out), recorded_spec(base), base.classes, [*sources, str(labels)])
    return Relabelled(Path(out), table, base.classes, base.pool, added, blank)
