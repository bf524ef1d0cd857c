"""``MODEL_CARD.md``: what a collaborator or a clinician's reviewer needs to know about a model
(Mitchell et al., 2019, "Model Cards for Model Reporting"), built from a run folder's records."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lesionssl.config import describe_lr
from lesionssl.data.classes import ISIC2019_CLASSES
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.metrics import NOT_APPLICABLE, compute_metrics, support_note, without_support
from lesionssl.io import write_text
from lesionssl.layout import CARD, EXAMPLES_FIGURE, METRICS, MODEL_RECORD, RELIABILITY_FIGURE, RunFolder
from lesionssl.records import ClassMetrics, ManifestRecord, ModelRecord, RunResult
from lesionssl.report.statistics import image_interval

LICENCE_FILES = ("ATTRIBUTION.md", "LICENSE", "LICENSE.txt", "LICENCE", "README.md")
#: The first limitation: the modality is only claimed when the classes say it (ISIC 2019's are dermoscopic).
DERMOSCOPY_SCOPE = "Dermoscopic images only: clinical photographs, histology and other modalities are out of scope."
OTHER_SCOPE = "Images like its training data only (the sources under Data): other modalities, devices and body sites are out of scope."
LIMITATIONS = (
    "Skin-tone and Fitzpatrick-type coverage of the training data is unknown; performance on darker skin is unmeasured.",
    "Not a medical device: research use only, never a diagnosis; every output needs a clinician's judgement.",
    "The test split comes from the same sources as the training data; performance on other clinics and devices is shown only by the external sets below, if any.",
)


def bootstrap_interval(
    labels: np.ndarray, probs: np.ndarray, classes: list[str], seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of accuracy, balanced accuracy and macro F1 over test images
    resampled with replacement (one trained model: the interval is the test set's sampling error)."""
    low, high = image_interval(labels, probs.argmax(axis=1), len(classes), seed)
    return {
        name: (float(low[i]), float(high[i])) for i, name in enumerate(("accuracy", "balanced_accuracy", "macro_f1"))
    }


def _with_interval(predictions: Path, classes: list[str]) -> list[str]:
    frame = pd.read_csv(predictions, keep_default_na=False)
    labels = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs = frame[[f"p_{c}" for c in classes]].to_numpy()
    point, interval = compute_metrics(labels, probs, classes), bootstrap_interval(labels, probs, classes)
    return [f"| {name} | {point[name]:.3f} | [{interval[name][0]:.3f}, {interval[name][1]:.3f}] |" for name in interval]


def _rate(rate: dict[str, Any]) -> str:
    return (
        "n/a"
        if rate["value"] is None
        else f"{rate['value']:.3f} [{rate['ci_low']:.3f}, {rate['ci_high']:.3f}] (n = {rate['n']})"
    )


def _class_row(name: str, values: ClassMetrics) -> str:
    """A per-class row; a class without test images has no recall or F1 (n/a), not 0."""
    if not values.support:
        return f"| {name} | {NOT_APPLICABLE} | {NOT_APPLICABLE} | {NOT_APPLICABLE} | {NOT_APPLICABLE} | 0 |"
    return f"| {name} | {values.precision:.3f} | {values.recall:.3f} | {values.f1:.3f} | {'' if values.auroc is None else format(values.auroc, '.3f')} | {values.support} |"


def _sources(sources: list[str]) -> list[str]:
    lines = []
    for source in sources:
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        terms = [folder / name for name in LICENCE_FILES if (folder / name).is_file()]
        lines.append(
            f"- `{source}`: licence and provenance "
            + (f"in `{terms[0]}`" if terms else "not stated there; check the source's terms before sharing this model")
        )
    return lines


def write_card(run: Path, result: RunResult | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into a finished ``finetune`` run folder (or, given the run's
    ``result``, into one about to be marked finished)."""
    run = Path(run)
    folder = RunFolder(run)
    if (result is None and not folder.finished) or not folder.model_record.is_file():
        raise LesionSSLError(f"{run} is not a finished fine-tuning run with a model ({METRICS} + {MODEL_RECORD})")
    result = result if result is not None else RunResult.read(run)
    metrics = result.metrics
    record = ModelRecord.read(folder.model_record)
    environment = json.loads(folder.environment.read_text()) if folder.environment.is_file() else {}
    split, settings = None, {}
    config_file = folder.config
    if config_file.is_file():
        settings = yaml.safe_load(config_file.read_text())
        split = ManifestRecord.read(Path(str(settings["manifest"]))) if settings.get("manifest") else None
    classes = record.classes
    per_class = {name: asdict(values) for name, values in metrics.per_class.items()}
    dermoscopic = set(classes) <= set(ISIC2019_CLASSES)
    malignant = (
        f"P(malignant) = the sum over {', '.join(record.malignant_classes)}"
        if record.malignant_classes
        else "no malignant classes were set (finetune --malignant-classes), so no P(malignant) or operating point"
    )
    lines = [
        f"# Model card: {run.name}",
        "",
        "## Model",
        f"- Architecture: {record.architecture}, initialised from `{record.init}`, fine-tuned with the transfer protocol (head epoch, unfreeze, {describe_lr(result.lr_setting if result.lr_setting is not None else settings.get('lr', 'find'), result.lr, settings.get('lr_suggestion', 'valley'))}, 1cycle), seed {record.seed}.",
        f"- Input: {'dermoscopic ' if dermoscopic else ''}RGB image, shorter side resized to {record.image_size} px and centre-cropped; mean {list(record.preprocessing.mean)}, std {list(record.preprocessing.std)}; test-time augmentation views: {record.tta}.",
        f"- Output: probabilities of {len(classes)} classes ({', '.join(classes)}); {malignant}.",
        f"- Temperature: {record.temperature:.4g}"
        if record.temperature is not None
        else "- Temperature: none (no validation split)",
        f"- Malignant threshold: {record.threshold:.4g}, chosen on validation for sensitivity {record.target_sensitivity}"
        if record.threshold is not None
        else "- Malignant threshold: none",
        "- Files: `model.safetensors` (weights), `model.json` (the settings above). Apply with `lesionssl predict --model "
        + str(run)
        + " --data IMAGES --out predictions.csv`.",
        "",
        "## Data",
        *_sources(split.sources if split else []),
        f"- Split: {split.counts if split else {}}; pretraining pool: {split.pool if split else result.pretraining_pool} (transductive: the pool saw test images, unlabelled; inductive: it did not).",
        f"- Training images: {result.train_images}, at most {result.budget_per_class} per class; test images: {result.test_images}.",
        "",
        "## Test metrics (internal test split)",
        "| metric | value | 95% bootstrap interval |",
        "|---|---|---|",
        *_with_interval(folder.predictions, classes),
        f"| macro AUROC | {metrics.macro_auroc:.3f} | |" if metrics.macro_auroc is not None else "",
        "",
        "| class | precision | recall | F1 | AUROC | support |",
        "|---|---|---|---|---|---|",
        *[_class_row(c, v) for c, v in metrics.per_class.items()],
        *([f"\n{support_note(per_class)}"] if without_support(per_class) else []),
    ]
    for name, external in result.external.items():
        lines += [
            "",
            f"## External test set: {name}",
            "| metric | value | 95% bootstrap interval |",
            "|---|---|---|",
            *_with_interval(folder.external(name).predictions, classes),
        ]
        point = external.operating_point
        if point:
            lines.append(
                f"\nAt the threshold: sensitivity {_rate(point['sensitivity'])}, specificity {_rate(point['specificity'])}."
            )
    calibration = result.calibration
    lines += ["", "## Calibration"]
    if calibration.temperature is not None:
        test = calibration.test
        lines.append(
            f"Temperature {calibration.temperature:.4g}, fitted on {calibration.fitted_on}. Test ECE {test['ece_before']:.4f} before, {test['ece_after']:.4f} after; NLL {test['nll_before']:.4f} before, {test['nll_after']:.4f} after."
            + (
                f"\n\n![Reliability on the test split before and after temperature scaling]({RELIABILITY_FIGURE})"
                if folder.reliability_figure.is_file()
                else ""
            )
        )
    else:
        lines.append(calibration.note or "not fitted")
    point = result.operating_point
    lines += ["", "## Operating point (malignant vs benign)"]
    if point.threshold is not None:
        lines += [
            f"Threshold {point.threshold:.4g} on P(malignant), chosen on the validation split for sensitivity {point.target_sensitivity}.",
            "",
            "| split | sensitivity [95% CI] | specificity [95% CI] |",
            "|---|---|---|",
            *[
                f"| {split} | {_rate(rates['sensitivity'])} | {_rate(rates['specificity'])} |"
                for split, rates in (("val", point.val), ("test", point.test))
            ],
        ]
    else:
        lines.append(point.note or "not chosen")
    lines += [
        "",
        "## Where it looks",
        (
            f"![Grad-CAM of the most confident correct and wrong test predictions per class]({EXAMPLES_FIGURE})\n\n"
            if folder.examples_figure.is_file()
            else ""
        )
        + f"Grad-CAM maps of any images: `lesionssl explain --model {run} --data IMAGES --out DIR` (a gallery page); they show where the model looks, not why.",
    ]
    scope = DERMOSCOPY_SCOPE if dermoscopic else OTHER_SCOPE
    lines += [
        "",
        "## Limitations",
        *[f"- {item}" for item in (scope, *LIMITATIONS)],
        "",
        "## How it was made",
        f"- Command: `{environment.get('command', 'not recorded')}`",
        f"- lesionssl {result.lesionssl_version}, code commit {environment.get('git_commit')}; the resolved configuration is in `config.yaml`.",
        f"- Rebuild this card: `lesionssl card {run}`.",
        "",
    ]
    target = run / CARD
    write_text(target, "\n".join(line for line in lines if line is not None) + "\n")
    return target
