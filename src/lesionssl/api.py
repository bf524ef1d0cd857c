"""The Python API: the stages as functions that return typed results, for notebooks.

Each takes the options of its command as keyword arguments (the YAML keys, e.g.
``per_class=50``), optionally on top of ``config`` (a YAML file, a mapping, or a validated
config object); keywords override the file, as flags do on the command line::

    from lesionssl import split, pretrain, select, finetune, compare

    s = split(data=["../shared/data/skin-lesions"], out="split.csv", test_fraction=0.25, per_class=50, group_by="lesion_id")
    bt = pretrain(manifest=s.path, out="runs/bt", image_size=64, epochs=50)
    ask = select(manifest=s.path, init=bt.path, budget=80, out="to_label.csv")  # the expert fills it in
    nxt = split(labels="to_label.csv", out="next.csv")
    run = finetune(manifest=nxt.path, init=bt.path, out="runs/ft")
    run.metrics.balanced_accuracy, run.metrics.per_class["MEL"].sensitivity, run.model  # a torch.nn.Module

Heavy libraries (torch, Lightning) are imported when a stage runs, not by ``import lesionssl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lesionssl.config import (
    CompareConfig,
    FinetuneConfig,
    PretrainConfig,
    SelectConfig,
    SplitCommand,
    SplitConfig,
    resolve,
)
from lesionssl.errors import LesionSSLError
from lesionssl.layout import ExperimentFolder, RunFolder

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from lesionssl.records import BackboneRecord, Metrics, ModelRecord
    from lesionssl.selection.select import LabelRequest

Config = str | Path | dict[str, Any] | None


@dataclass(frozen=True)
class SplitResult:
    """A written manifest: its path, the table (one row per image) and the per-class counts."""

    path: Path
    manifest: pd.DataFrame
    classes: list[str]
    counts: pd.DataFrame
    pool: str
    pool_images: int
    duplicates: pd.DataFrame | None = None
    labels_added: int = 0
    labels_blank: int = 0


@dataclass(frozen=True)
class Pretrained:
    """A pretrained backbone: the module (weights loaded), its file and record."""

    backbone: torch.nn.Module
    path: Path
    record: BackboneRecord
    config: PretrainConfig


@dataclass(frozen=True)
class FineTuned:
    """A fine-tuned classifier: the module (eval mode), its typed test metrics and record."""

    model: torch.nn.Module
    metrics: Metrics
    record: ModelRecord
    folder: Path
    config: FinetuneConfig
    lr: float


@dataclass(frozen=True)
class Comparison:
    """A finished experiment: one row per run (``results.csv``) and the report."""

    results: pd.DataFrame
    report: Path
    folder: Path
    config: CompareConfig


def split(config: Config = None, **options: Any) -> SplitResult:
    """Write a split manifest (``lesionssl split``); options as its YAML keys (``data``, ``out``,
    ``per_class``, ``test_fraction``, ``group_by``, ...)."""
    from lesionssl.data.classes import resolve_class_order
    from lesionssl.data.sources import read_sources
    from lesionssl.data.split import build_split, split_table, write_manifest

    settings = resolve(SplitCommand, config, options, "split")
    if settings.labels is not None:
        from lesionssl.selection.labels import apply_labels

        done = apply_labels(settings.labels, settings.manifest, settings.out, settings.data_root)
        return SplitResult(
            done.path,
            done.manifest,
            done.classes,
            split_table(done.manifest, done.classes),
            done.pool,
            int(done.manifest["pretrain"].sum()),
            labels_added=done.added,
            labels_blank=done.blank,
        )
    table = read_sources(
        settings.data, settings.images, settings.skip_missing, (settings.image_column, settings.label_column)
    )
    spec = SplitConfig(**settings.model_dump(include=set(SplitConfig.model_fields)))
    manifest, duplicates = build_split(table, spec)
    classes = resolve_class_order(manifest["label"])
    write_manifest(manifest, settings.out, spec, classes, settings.data, duplicates)
    return SplitResult(
        Path(settings.out),
        manifest,
        classes,
        split_table(manifest, classes),
        spec.pool,
        int(manifest["pretrain"].sum()),
        duplicates,
    )


def select(config: Config = None, **options: Any) -> LabelRequest:
    """The pool images to label next (``lesionssl select``); options as its YAML keys
    (``manifest``, ``init``, ``budget``, ``strategy``, ``exclude``, ``out``)."""
    from lesionssl.selection.select import select as run

    return run(resolve(SelectConfig, config, options, "select"))


def pretrain(config: Config = None, **options: Any) -> Pretrained:
    """Self-supervised pretraining (``lesionssl pretrain``); options as its YAML keys."""
    from lesionssl.models.backbones import build_backbone
    from lesionssl.pretraining.run import pretrain as run
    from lesionssl.records import BackboneRecord

    settings = resolve(PretrainConfig, config, options, "pretrain")
    path = run(settings)
    backbone, _ = build_backbone(settings.backbone, str(path), settings.image_size)
    return Pretrained(backbone.eval(), path, BackboneRecord.read(path.with_suffix(".json")), settings)


def finetune(config: Config = None, **options: Any) -> FineTuned:
    """The transfer protocol (``lesionssl finetune``); options as its YAML keys. A finished run
    in ``out`` is loaded, not repeated."""
    from lesionssl.deploy.model import load_model
    from lesionssl.experiment.finetune import finetune as run
    from lesionssl.records import RunResult

    settings = resolve(FinetuneConfig, config, options, "finetune")
    folder = Path(settings.out)
    if RunFolder(folder).finished:
        _refuse_other_settings(settings, folder)
    else:
        run(settings)
    module, record = load_model(folder)
    result = RunResult.read(folder)
    return FineTuned(module, result.metrics, record, folder, settings, result.lr)


def _refuse_other_settings(settings: FinetuneConfig, folder: Path) -> None:
    """A finished run is returned only for the settings it was trained with."""
    import yaml

    from lesionssl.config import differing_keys

    recorded = yaml.safe_load(RunFolder(folder).config.read_text())
    recorded.pop("resolved", None)
    keys = differing_keys(settings, recorded)
    if keys:
        raise LesionSSLError(
            f"{folder} holds a finished run with other settings ({', '.join(keys)}); choose another out, or ask for the settings it was trained with"
        )


def compare(config: Config = None, **options: Any) -> Comparison:
    """Initialisations x seeds under one protocol (``lesionssl compare``); resumable; options as
    its YAML keys (``jobs`` and ``shard`` among them)."""
    import pandas as pd

    from lesionssl.experiment.compare import compare as run

    settings = resolve(CompareConfig, config, options, "compare")
    report = run(settings)
    return Comparison(pd.read_csv(ExperimentFolder(report.parent).results), report, report.parent, settings)
