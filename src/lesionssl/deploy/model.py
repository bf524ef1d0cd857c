"""A fine-tuned classifier on disk: ``model.safetensors`` (backbone + head, never pickled) and
``model.json`` (:class:`~lesionssl.records.ModelRecord`)."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from lesionssl.augment.batch import EvalView, finetune_view
from lesionssl.errors import LesionSSLError
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.layout import MODEL_RECORD, MODEL_WEIGHTS
from lesionssl.models.backbones import build_backbone, feature_dim
from lesionssl.records import ModelRecord


def load_model(folder: Path) -> tuple[ClassifierModule, ModelRecord]:
    """The classifier of a ``finetune`` run folder, in eval mode, with its record.

    Raises:
        LesionSSLError: The folder has no model, or its files are damaged or do not match.
    """
    folder = Path(folder)
    if not (folder / MODEL_RECORD).is_file() or not (folder / MODEL_WEIGHTS).is_file():
        raise LesionSSLError(
            f"{folder} holds no model ({MODEL_WEIGHTS} + {MODEL_RECORD}); give a finished `lesionssl finetune` run folder"
        )
    record = ModelRecord.read(folder / MODEL_RECORD)
    try:
        state = load_file(str(folder / MODEL_WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise LesionSSLError(f"cannot read {folder / MODEL_WEIGHTS}: {exc}") from None
    backbone, _ = build_backbone(record.architecture, "random", record.image_size)
    preprocessing = record.preprocessing
    module = ClassifierModule(
        backbone,
        feature_dim(backbone),
        len(record.classes),
        augment=finetune_view(record.image_size, preprocessing),
        eval_view=EvalView(record.image_size, preprocessing),
    )
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # missing or unexpected keys, or other shapes
        raise LesionSSLError(
            f"{folder / MODEL_WEIGHTS} does not match its {MODEL_RECORD} ({record.architecture}, {len(record.classes)} classes): {str(exc).splitlines()[1 if len(str(exc).splitlines()) > 1 else 0].strip()}"
        ) from None
    return module.eval(), record
