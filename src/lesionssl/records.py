"""Typed records of what crosses stages: a manifest's sidecar (``<manifest>.json``), a backbone
(``backbone.json``), a fine-tuned model (``model.json``), a planned run of an experiment
(``run.json``) and what a finished run recorded (``metrics.json``).

The runners write them, ``compare`` plans with them and the report reads them; no stage reads
another's JSON by string keys, and no name is parsed from a folder name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lesionssl.augment.views import Preprocessing
from lesionssl.config import SplitConfig
from lesionssl.data.colour import DEFAULT_P, ColourConstancy
from lesionssl.errors import LesionSSLError
from lesionssl.io import write_json
from lesionssl.layout import METRICS, RUN_PLAN, RunFolder

#: The current formats; a record of the current format must have exactly its fields. Older
#: formats (``/1``, and files without a format) are read leniently, missing keys taking defaults.
BACKBONE_FORMAT = "lesionssl-backbone/2"
MODEL_FORMAT = "lesionssl-model/2"
RUN_PLAN_FORMAT = "lesionssl-run-plan/1"
MANIFEST_FORMAT = "lesionssl-manifest/1"
RUN_RESULT_FORMAT = "lesionssl-run/2"


def _typed_preprocessing(record: Any) -> None:
    """A record's ``preprocessing`` as :class:`Preprocessing`, whether it came typed or from JSON."""
    if record.preprocessing is not None:
        object.__setattr__(record, "preprocessing", Preprocessing.from_config(record.preprocessing))


def _check_keys(
    cls, data: dict[str, Any], source: Path, extra: set[str] = frozenset(), optional: set[str] = frozenset()
) -> None:
    """A record of the current format has exactly its fields: a renamed or missing key is an
    error, never a silent default (older formats are read leniently, by their own rules)."""
    names = {f.name for f in fields(cls)} | extra
    unknown, missing = sorted(set(data) - names), sorted(names - optional - set(data))
    if unknown or missing:
        problems = "; ".join(
            part
            for part in (
                f"unknown key(s) {', '.join(unknown)}" if unknown else "",
                f"missing key(s) {', '.join(missing)}" if missing else "",
            )
            if part
        )
        raise LesionSSLError(f"{source}: not a valid {data.get('format', cls.__name__)} record ({problems})")


def _from_dict(cls, data: dict[str, Any], source: Path, current: str | None = None, added: set[str] = frozenset()):
    """``cls`` from a JSON object: strict for the ``current`` format, lenient for older ones.
    ``added``: keys that joined the current format later, so its earlier files lack them."""
    if not isinstance(data, dict):
        raise LesionSSLError(f"{source}: not a {cls.__name__} (a JSON object was expected)")
    if current is not None and data.get("format") == current:
        _check_keys(cls, data, source, optional=added)
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
class ManifestRecord:
    """A split manifest's sidecar (``<manifest>.json`` beside the CSV): the split settings that made
    it (the one split type, :class:`~lesionssl.config.SplitConfig`), its class order, pool mode,
    sources, the folder its relative image paths start from, and what the split found."""

    classes: list[str]
    pool: str
    spec: SplitConfig | None = None  # None: a manifest written before the settings were recorded
    sources: list[str] = field(default_factory=list)
    data_root: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    pretrain_images: int | None = None
    site_pool: dict[str, Any] | None = None  # split --hold-out-pool: images, groups and fraction sent to the pool
    near_duplicates: dict[str, Any] | None = None  # split --dedup: how many pairs were merged, and their file
    format: str = MANIFEST_FORMAT

    @staticmethod
    def beside(manifest: Path) -> Path:
        return Path(manifest).with_suffix(".json")

    def write(self, manifest: Path) -> None:
        write_json(self.beside(manifest), {**asdict(self), "spec": self.spec.model_dump() if self.spec else None})

    @classmethod
    def read(cls, manifest: Path) -> ManifestRecord | None:
        """The sidecar of ``manifest``; None when it has none (a hand-made manifest)."""
        path = cls.beside(manifest)
        if not path.is_file():
            return None
        data = _read_json(path)
        spec = data.get("spec") if isinstance(data, dict) else None
        try:
            parsed = SplitConfig(**spec) if spec else None
        except ValueError as exc:  # pydantic's ValidationError
            raise LesionSSLError(f"{path}: its split settings are not valid ({str(exc).splitlines()[0]})") from None
        return _from_dict(cls, {**data, "spec": parsed} if isinstance(data, dict) else data, path, MANIFEST_FORMAT)


@dataclass(frozen=True)
class BackboneRecord:
    """An exported backbone: how it was made and what input it expects (``backbone.json``)."""

    architecture: str
    image_size: int
    normalize: str
    preprocessing: Preprocessing
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
    seconds: float | None = None  # wall time, summed over the processes of a resumed run
    snapshot_epoch: int | None = None
    encoder_lr_scale: float = 1.0
    bn_statistics: str = "update"
    l2sp: float = 0.0
    colour_constancy: str = "none"
    colour_constancy_p: float = DEFAULT_P
    site_images: int | None = None  # of pool_images, from the held-out site (split --hold-out-pool); None: not recorded
    format: str = BACKBONE_FORMAT

    def __post_init__(self) -> None:
        _typed_preprocessing(self)

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> BackboneRecord:
        return _from_dict(cls, _read_json(path), path, BACKBONE_FORMAT, added={"site_images"})

    def settings(self) -> dict[str, Any]:
        """What must match for this backbone to stand for a pretraining configuration."""
        return {
            "architecture": self.architecture,
            "image_size": self.image_size,
            "epochs": self.epochs,
            "recipe": self.recipe,
            "method": self.method,
            "method_kwargs": self.method_kwargs,
            "positives": self.positives,
            "pool_images": self.pool_images,
            "site_images": self.site_images,
            "encoder_lr_scale": self.encoder_lr_scale,
            "bn_statistics": self.bn_statistics,
            "l2sp": self.l2sp,
            "colour_constancy": self.colour_constancy,
        }


@dataclass(frozen=True)
class ModelRecord:
    """A fine-tuned classifier and everything needed to apply it (``model.json`` beside
    ``model.safetensors``): input preprocessing, classes, calibration and operating point."""

    architecture: str
    classes: list[str]
    image_size: int
    store_margin: float
    preprocessing: Preprocessing
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

    def __post_init__(self) -> None:
        _typed_preprocessing(self)

    @property
    def colour(self) -> ColourConstancy:
        return ColourConstancy(self.colour_constancy, self.colour_constancy_p)

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> ModelRecord:
        return _from_dict(cls, _read_json(path), path, MODEL_FORMAT)


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
    format: str = RUN_PLAN_FORMAT

    @property
    def label(self) -> str:
        """How reports name the run's arm: the initialisation, and the selection strategy if any."""
        return self.name if self.strategy is None else f"{self.name} · {self.strategy}"

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / RUN_PLAN, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        return _from_dict(cls, _read_json(RunFolder(folder).plan), RunFolder(folder).plan, RUN_PLAN_FORMAT)


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
    confusion_matrix_normalized: list[list[float]] | None = None
    macro_auroc: float | None = None
    macro_average_precision: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path = Path(METRICS)) -> Metrics:
        """From :func:`~lesionssl.evaluate.metrics.compute_metrics`' dict (or a metrics.json's part)."""
        per_class = {name: _from_dict(ClassMetrics, values, source) for name, values in data["per_class"].items()}
        return _from_dict(
            cls,
            {**{k: data.get(k) for k in (f.name for f in fields(cls)) if k in data}, "per_class": per_class},
            source,
        )

    @classmethod
    def read(cls, folder: Path) -> Metrics:
        return RunResult.read(folder).metrics


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling, fitted on the validation split, and the test ECE and NLL before and
    after it (``ece_before``, ``ece_after``, ``nll_before``, ``nll_after``); or why none was fitted."""

    temperature: float | None = None
    fitted_on: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """The P(malignant) threshold chosen on validation for a target sensitivity, with the
    sensitivity and specificity it reaches on validation and test (each ``{value, low, high}``);
    or why none was chosen."""

    target_sensitivity: float | None = None
    threshold: float | None = None
    malignant_classes: list[str] = field(default_factory=list)
    val: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True)
class ExternalResult:
    """A run's headline numbers on one held-out set (its full metrics and predictions are in
    ``external/<name>/``), and the validation-chosen threshold's sensitivity and specificity there."""

    n: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    weighted_f1: float
    macro_auroc: float | None = None
    operating_point: dict[str, Any] | None = None
    domain_auroc: float | None = (
        None  # frozen-feature runs: a classifier telling this set from the internal test (0.5: alike)
    )


@dataclass(frozen=True)
class LogitAdjustment:
    """The prior the test predictions were adjusted to (Menon et al. 2021), and the unadjusted headline numbers."""

    target: str = "none (training prior)"
    train_prior: dict[str, float] = field(default_factory=dict)
    test_prior: dict[str, float] | None = None
    unadjusted: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """What a finished run recorded beside its predictions (``metrics.json``): its test metrics
    (stored flat, at the top level) and its provenance. Built by the fine-tuning and probe
    runners alike; every reader of ``metrics.json`` goes through :meth:`read`."""

    metrics: Metrics
    seed: int
    protocol: str = "finetune"
    init: str = ""
    budget_per_class: int | None = None
    train_images: int | None = None
    test_images: int | None = None
    pretraining_pool: str | None = None
    transductive: bool = False
    lr: float | None = None
    lr_setting: float | str | None = None
    preprocessing: Preprocessing | None = None
    selected_epoch: int | None = None
    external: dict[str, ExternalResult] = field(default_factory=dict)
    imbalance: dict[str, str] = field(default_factory=dict)
    logit_adjustment: LogitAdjustment = field(default_factory=LogitAdjustment)
    calibration: Calibration = field(default_factory=Calibration)
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    probe: dict[str, Any] | None = None
    lesionssl_version: str | None = None
    seconds: float | None = None  # wall time, summed over the processes of a resumed run
    format: str = RUN_RESULT_FORMAT

    def __post_init__(self) -> None:
        _typed_preprocessing(self)

    @property
    def classes(self) -> list[str]:
        return self.metrics.classes

    @property
    def handling(self) -> str:
        """How the run dealt with class imbalance and prior shift, in words."""
        return f"sampling {self.imbalance.get('sampling', 'shuffle')}, loss weights {self.imbalance.get('loss_weights', 'none')}, logit adjustment {self.logit_adjustment.target}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``metrics.json``: the metrics' keys first, then the provenance."""
        provenance = asdict(self)
        return {**provenance.pop("metrics"), **provenance}

    def write(self, folder: Path) -> None:
        write_json(RunFolder(folder).metrics, self.to_dict())

    @classmethod
    def read(cls, folder: Path) -> RunResult:
        source = RunFolder(folder).metrics
        return cls.from_dict(_read_json(source), source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path = Path(METRICS)) -> RunResult:
        if not isinstance(data, dict):
            raise LesionSSLError(f"{source}: not a RunResult (a JSON object was expected)")
        metric_keys = {f.name for f in fields(Metrics)}
        if data.get("format") == RUN_RESULT_FORMAT:
            _check_keys(cls, data, source, extra=metric_keys - {"metrics"}, optional={"metrics"})
        provenance = {k: v for k, v in data.items() if k not in metric_keys and k in {f.name for f in fields(cls)}}
        nested = {
            "external": {
                name: _from_dict(ExternalResult, values, source)
                for name, values in (provenance.get("external") or {}).items()
            },
            "logit_adjustment": _from_dict(LogitAdjustment, provenance.get("logit_adjustment") or {}, source),
            "calibration": _from_dict(Calibration, provenance.get("calibration") or {}, source),
            "operating_point": _from_dict(OperatingPoint, provenance.get("operating_point") or {}, source),
        }
        return _from_dict(cls, {**provenance, **nested, "metrics": Metrics.from_dict(data, source)}, source)
