"""``lesionssl explain``: Grad-CAM maps of a fine-tuned model for any images, one PNG each
(the image as the model sees it beside its map) and a gallery page."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lesionssl.deploy.gradcam import grad_cam, panel
from lesionssl.deploy.model import load_model
from lesionssl.deploy.predict import SourceImages, read_images
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.calibration import malignant_probability
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.io import atomic_write, write_csv, write_text
from lesionssl.progress import progress_bar
from lesionssl.records import ModelRecord

GALLERY = "index.html"


@dataclass(frozen=True)
class ExplainResult:
    """What ``explain`` wrote."""

    folder: Path
    explained: int
    skipped: int


def _target_index(target: str | None, record: ModelRecord) -> int | None:
    if target is None or target == "predicted":
        return None
    if target not in record.classes:
        raise LesionSSLError(
            f"--target must be 'predicted' or one of the model's classes {record.classes}, not {target!r}"
        )
    return record.classes.index(target)


def explain_images(
    model_dir: Path, sources: list[str], out: Path, target: str | None = None, batch_size: int = 32
) -> ExplainResult:
    """Grad-CAM of every readable image of ``sources`` for its predicted class (or ``target``):
    one PNG each in ``out/maps``, ``explanations.csv`` and a gallery page ``out/index.html``."""
    module, record = load_model(model_dir)
    if torch.cuda.is_available():
        module = module.cuda()
    index = _target_index(target, record)
    out = Path(out)
    source = read_images(sources, record, model_dir, out / "skipped.csv")
    table = source.table
    frame = _explain_rows(module, record, source, index, out, batch_size)
    write_csv(out / "explanations.csv", frame)
    write_text(out / GALLERY, gallery_page(frame, record, table["path"].tolist()))
    return ExplainResult(out, len(table), source.skipped)


def _explain_rows(
    module: ClassifierModule, record: ModelRecord, source: SourceImages, index: int | None, out: Path, batch_size: int
) -> pd.DataFrame:
    """Explain the images batch by batch (with progress), writing each PNG as it is made."""
    table, classes = source.table, record.classes
    rows = []
    with progress_bar("explaining images", len(table)) as advance:
        for start in range(0, len(table), batch_size):
            part = table.iloc[start : start + batch_size]
            images = source.images[part["row"].to_numpy()]
            heat = grad_cam(
                module, images, record.temperature, None if index is None else np.full(len(part), index), batch_size
            )
            malignant = (
                malignant_probability(heat.probabilities, classes, record.malignant_classes)
                if record.malignant_classes
                else None
            )
            for i, (image, label, row) in enumerate(zip(part["image"], part["label"], part["row"])):
                name = f"{row:05d}_{re.sub(r'[^A-Za-z0-9._-]', '_', Path(str(image)).stem)}.png"
                picture = panel(images[i], heat.maps[i])
                atomic_write(out / "maps" / name, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
                probs = heat.probabilities[i]
                rows.append(
                    {
                        "image": image,
                        "label": label,
                        "prediction": classes[int(probs.argmax())],
                        "explained_class": classes[int(heat.targets[i])],
                        "p_explained": float(probs[heat.targets[i]]),
                        **({"p_malignant": float(malignant[i])} if malignant is not None else {}),
                        "map": f"maps/{name}",
                    }
                )
                advance()
    return pd.DataFrame(rows)


def gallery_page(frame: pd.DataFrame, record: ModelRecord, paths: list[str]) -> str:
    """A self-contained HTML page of the explanations, one card per image."""
    cards = []
    for row, path in zip(frame.to_dict("records"), paths):
        lines = [f"<b>{html.escape(str(row['image']))}</b>"]
        if row["label"]:
            verdict = "correct" if row["label"] == row["prediction"] else "wrong"
            lines.append(f"label {html.escape(row['label'])} · <span class='{verdict}'>{verdict}</span>")
        lines.append(
            f"predicted {html.escape(row['prediction'])} · map for {html.escape(row['explained_class'])} (p = {row['p_explained']:.3f})"
        )
        if "p_malignant" in row and record.threshold is not None:
            side = "at or above" if row["p_malignant"] >= record.threshold else "below"
            lines.append(f"p(malignant) {row['p_malignant']:.3f}, {side} the operating point {record.threshold:.3f}")
        cards.append(
            f"<figure><img src='{html.escape(row['map'])}' alt='{html.escape(str(row['image']))}' title='{html.escape(str(path))}'><figcaption>{'<br>'.join(lines)}</figcaption></figure>"
        )
    style = "body{font-family:system-ui,sans-serif;margin:1.5em}main{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1em}figure{margin:0}img{width:100%}.correct{color:#16794c}.wrong{color:#b3261e}"
    note = (
        f"Grad-CAM (Selvaraju et al., 2017) of {html.escape(record.architecture)} ({record.init or 'model'}, seed {record.seed}): left the image as the model sees it, right the map "
        "(red: regions that raise the explained class's score most). Maps show where the model looks, not why; they are no diagnosis."
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>lesionssl explanations</title><style>{style}</style></head><body><h1>Explanations</h1><p>{note}</p><main>{''.join(cards)}</main></body></html>\n"
