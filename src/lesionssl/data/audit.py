"""``lesionssl audit``: near-duplicate pairs across the splits of a manifest, with thumbnails.

A pair leaks when one image is evaluated on (``test`` or ``external``) and the other was seen
in training: in ``train`` or ``val``, or in the pretraining pool. Every pair the detectors link
(:mod:`lesionssl.data.duplicates`) is listed in ``pairs.csv``; ``summary.json`` counts them by
split pair; ``index.html`` shows the cross-split pairs side by side for a person to judge.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lesionssl.config import COSINE_THRESHOLD, HASH_THRESHOLD
from lesionssl.data.colour import NO_COLOUR_CONSTANCY
from lesionssl.data.duplicates import AUDIT_STORE_SIZE, dihedral_hashes, image_features, near_duplicates
from lesionssl.data.split import read_manifest
from lesionssl.data.store import build_store
from lesionssl.io import write_json, write_text

EVALUATED = ("test", "external")
SEEN = ("train", "val")


@dataclass(frozen=True)
class AuditResult:
    """What the audit found: every linked pair, and those that cross from training to evaluation."""

    pairs: pd.DataFrame
    leaking: pd.DataFrame
    folder: Path


def _seen_in_training(split: str, pretrain: int) -> bool:
    return split in SEEN or pretrain == 1


def audit(
    manifest_path: Path,
    out: Path,
    features: str = "thumbnail",
    architecture: str = "resnet18",
    hash_threshold: int = HASH_THRESHOLD,
    cosine_threshold: float = COSINE_THRESHOLD,
    data_root: Path | None = None,
    shown: int = 200,
) -> AuditResult:
    """Find near-duplicates in a manifest and write ``pairs.csv``, ``summary.json``, ``index.html``,
    after the colour constancy the split's own near-duplicate search used (its sidecar's)."""
    read = read_manifest(manifest_path, check_leaks=False, data_root=data_root)
    manifest = read.table
    colour = read.record.spec.colour if read.record and read.record.spec else NO_COLOUR_CONSTANCY
    images = build_store(manifest["path"].tolist(), AUDIT_STORE_SIZE, "decoding images", colour)
    found = near_duplicates(
        dihedral_hashes(images), image_features(images, features, architecture), hash_threshold, cosine_threshold
    )
    rows = []
    for pair in found:
        a, b = manifest.iloc[pair.a], manifest.iloc[pair.b]
        leaks = (a["split"] in EVALUATED and _seen_in_training(b["split"], b["pretrain"])) or (
            b["split"] in EVALUATED and _seen_in_training(a["split"], a["pretrain"])
        )
        rows.append(
            {
                "image_a": a["image"],
                "image_b": b["image"],
                "split_a": a["split"],
                "split_b": b["split"],
                "label_a": a["label"],
                "label_b": b["label"],
                "group_a": a.get("group", ""),
                "group_b": b.get("group", ""),
                "hamming": pair.hamming,
                "cosine": round(pair.cosine, 4),
                "cross_split": a["split"] != b["split"],
                "leaks": bool(leaks),
                "row_a": pair.a,
                "row_b": pair.b,
            }
        )
    pairs = pd.DataFrame(
        rows,
        columns=[
            "image_a",
            "image_b",
            "split_a",
            "split_b",
            "label_a",
            "label_b",
            "group_a",
            "group_b",
            "hamming",
            "cosine",
            "cross_split",
            "leaks",
            "row_a",
            "row_b",
        ],
    )
    # Boolean even with no pairs (the usual case): an empty object column would select columns, not rows.
    pairs = pairs.astype({"cross_split": bool, "leaks": bool})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs.drop(columns=["row_a", "row_b"]).to_csv(out / "pairs.csv", index=False)
    by_splits = (
        pairs.assign(splits=[" / ".join(sorted((a, b))) for a, b in zip(pairs["split_a"], pairs["split_b"])])
        .groupby("splits")
        .size()
        .to_dict()
        if len(pairs)
        else {}
    )
    leaking = pairs[pairs["leaks"]]
    write_json(
        out / "summary.json",
        {
            "manifest": str(manifest_path),
            "images": len(manifest),
            "pairs": len(pairs),
            "cross_split_pairs": int(pairs["cross_split"].sum()) if len(pairs) else 0,
            "leaking_pairs": len(leaking),
            "pairs_by_splits": by_splits,
            "label_disagreements": int((pairs["label_a"] != pairs["label_b"]).sum()) if len(pairs) else 0,
            "detector": {
                "hash": "dihedral pHash, 63 bits",
                "hash_threshold": hash_threshold,
                "features": features,
                "cosine_threshold": cosine_threshold,
                "colour_constancy": colour.key() or "none",
            },
        },
    )
    write_text(
        out / "index.html",
        _page(
            pairs[pairs["cross_split"]].sort_values(["leaks", "cosine"], ascending=False).head(shown),
            images,
            manifest_path,
            len(pairs),
            len(leaking),
        ),
    )
    return AuditResult(pairs, leaking, out)


def _thumbnail(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).resize((96, 96), Image.Resampling.BICUBIC).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _page(shown: pd.DataFrame, images: np.ndarray, manifest: Path, total: int, leaking: int) -> str:
    rows = "".join(
        f"<tr{' class=leak' if r.leaks else ''}><td><img src='{_thumbnail(images[r.row_a])}'><br>{html.escape(r.image_a)}<br>{r.split_a} {html.escape(r.label_a)}</td>"
        f"<td><img src='{_thumbnail(images[r.row_b])}'><br>{html.escape(r.image_b)}<br>{r.split_b} {html.escape(r.label_b)}</td>"
        f"<td>{r.hamming}</td><td>{r.cosine:.3f}</td><td>{'yes' if r.leaks else ''}</td></tr>"
        for r in shown.itertuples()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>lesionssl audit</title>"
        "<style>body{font-family:sans-serif}td{padding:4px;vertical-align:top;font-size:12px}tr.leak{background:#fde}</style>"
        f"<h1>Near-duplicates across splits</h1><p>{html.escape(str(manifest))}: {total} linked pairs, {leaking} leaking "
        f"(an evaluated image with a near-duplicate seen in training). Showing {len(shown)} cross-split pairs.</p>"
        f"<table><tr><th>image a</th><th>image b</th><th>pHash distance</th><th>cosine</th><th>leaks</th></tr>{rows}</table>"
    )
