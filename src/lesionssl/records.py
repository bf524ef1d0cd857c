"""Typed records of what crosses stages: a backbone (``backbone.json``), a planned run of an
experiment (``run.json``) and what a finished run recorded (``metrics.json``).

The runners write them, ``compare`` plans with them and the report reads them; no stage reads
another's JSON by string keys, and no name is parsed from a folder name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lesionssl.data.colour import DEFAULT_P, ColourConstancy
from lesionssl.errors import LesionSSLError
from lesionssl.io import write_json
from lesionssl.layout import METRICS, RUN_PLAN, RunFolder

BACKBONE_FORMAT = "lesionssl-backbone/1"
MODEL_FORMAT = "lesionssl-model/1"


def _from_dict(cls, data: dict[str, Any], source: Path):
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise LesionSSLError(f"{source}: not a {cls.__name__} ({exc})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LesionSSLError(f"cannot read {path}: {exc}") from None


@dataclass(frozen=True)
class BackboneRecord:
    """An exported backbone: how it was made and what input it expects (``backbone.json``)."""

    architecture: str
    image_size: int
    normalize: str
    preprocessing: dict[str, Any]
    pool: str
    pool_images: int
    init: dict[str, Any]
    epochs: int
    recipe: str
    method: str
    method_kwargs: dict[str, Any]
    positives: str = "self"
    cross_image_pairs_per_epoch: int = 0
    lr: float | None = None
    final_loss: float | None = None
    seconds: float | None = None
    snapshot_epoch: int | None = None
    encoder_lr_scale: float = 1.0
    bn_statistics: str = "update"
    l2sp: float = 0.0
    colour_constancy: str = "none"
    colour_constancy_p: float = DEFAULT_P
    format: str = BACKBONE_FORMAT

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> BackboneRecord:
        return _from_dict(cls, _read_json(path), path)

    def settings(self) -> dict[str, Any]:
        """What must match for this backbone to stand for a pretraining configuration."""
        return {"architecture": self.architecture, "image_size": self.image_size, "epochs": self.epochs, "recipe": self.recipe, "method": self.method, "method_kwargs": self.method_kwargs, "positives": self.positives, "pool_images": self.pool_images,
                "encoder_lr_scale": self.encoder_lr_scale, "bn_statistics": self.bn_statistics, "l2sp": self.l2sp, "colour_constancy": self.colour_constancy}


@dataclass(frozen=True)
class ModelRecord:
    """A fine-tuned classifier and everything needed to apply it (``model.json`` beside
    ``model.safetensors``): input preprocessing, classes, calibration and operating point."""

    architecture: str
    classes: list[str]
    image_size: int
    store_margin: float
    preprocessing: dict[str, Any]
    train_prior: list[float]
    tta: int = 0
    temperature: float | None = None
    malignant_classes: list[str] = field(default_factory=list)
    threshold: float | None = None
    target_sensitivity: float | None = None
    init: str = ""
    seed: int = 0
    colour_constancy: str = "none"  # applied to every image before the network (predict, serve and explain do)
    colour_constancy_p: float = DEFAULT_P
    format: str = MODEL_FORMAT

    @property
    def colour(self) -> ColourConstancy:
        return ColourConstancy(self.colour_constancy, self.colour_constancy_p)

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> ModelRecord:
        return _from_dict(cls, _read_json(path), path)


@dataclass(frozen=True)
class RunRecord:
    """One run of an experiment: an initialisation under a protocol, at a label budget and seed
    (``run.json`` in its folder, written by ``compare`` when it plans the run). ``budget`` counts
    labels per class, or in total when a selection ``strategy`` picked them."""

    name: str
    protocol: str
    seed: int
    init: str
    budget: int | None = None
    strategy: str | None = None  # label selection: the strategy that picked the budget's images

    @property
    def label(self) -> str:
        """How reports name the run's arm: the initialisation, and the selection strategy if any."""
        return self.name if self.strategy is None else f"{self.name} · {self.strategy}"

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / RUN_PLAN, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        return _from_dict(cls, _read_json(Path(folder) / RUN_PLAN), Path(folder) / RUN_PLAN)


@dataclass(frozen=True)
class RunResult:
    """What a finished run recorded beside its predictions (``metrics.json``)."""

    seed: int
    classes: list[str]
    protocol: str = "finetune"
    budget_per_class: int | None = None
    lr: float | None = None
    pretraining_pool: str | None = None
    external: dict[str, Any] = field(default_factory=dict)
    imbalance: dict[str, str] = field(default_factory=dict)
    logit_adjustment: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    operating_point: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> RunResult:
        return _from_dict(cls, _read_json(RunFolder(folder).metrics), RunFolder(folder).metrics)

    @property
    def handling(self) -> str:
        """How the run dealt with class imbalance and prior shift, in words."""
        adjustment = self.logit_adjustment.get("target", "none (training prior)")
        return f"sampling {self.imbalance.get('sampling', 'shuffle')}, loss weights {self.imbalance.get('loss_weights', 'none')}, logit adjustment {adjustment}"


@dataclass(frozen=True)
class ClassMetrics:
    """One class against the rest: sensitivity (recall), specificity, precision, F1, AUROC."""

    precision: float
    recall: float
    f1: float
    support: int
    specificity: float | None = None
    auroc: float | None = None
    average_precision: float | None = None

    @property
    def sensitivity(self) -> float:
        return self.recall


@dataclass(frozen=True)
class Metrics:
    """A run's test metrics (``metrics.json``), typed: what :func:`lesionssl.finetune` returns.

    ``balanced_accuracy``, ``macro_f1`` and ``macro_auroc`` average over the classes the test set
    holds; ``per_class`` maps each class to its :class:`ClassMetrics`.
    """

    n: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    weighted_f1: float
    ece: float
    classes: list[str]
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    macro_auroc: float | None = None
    macro_average_precision: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        per_class = {name: ClassMetrics(**{k: v for k, v in values.items() if k in {f.name for f in fields(ClassMetrics)}}) for name, values in data["per_class"].items()}
        return _from_dict(cls, {**data, "per_class": per_class}, Path(METRICS))

    @classmethod
    def read(cls, folder: Path) -> Metrics:
        return cls.from_dict(_read_json(RunFolder(folder).metrics))
