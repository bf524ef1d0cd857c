"""Lightning module: backbone + one linear head, with fastai-style or linear-probe freezing."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.nn import functional as F

from lesionssl.engine.modules import PersistentAdamModule, set_frozen
from lesionssl.io import atomic_write
from lesionssl.layout import MODEL_RECORD, MODEL_WEIGHTS
from lesionssl.records import ModelRecord


class ClassifierModule(PersistentAdamModule):
    """``L o f_theta`` of the seed: a backbone and a freshly initialised linear layer.

    Args:
        backbone: Feature extractor (``fc = Identity``).
        features: Feature width.
        num_classes: Output classes.
        weight_decay: Decoupled weight decay of Adam (the seed: 0).
        channels_last: NHWC memory format for convolutions.
        class_weights: Per-class weights of the training cross-entropy (None: unweighted).
        augment: Augments uint8 batches on the training device (``augment.batch.BatchView``);
            used in training, and in prediction while ``tta`` is set (test-time augmentation).
        eval_view: Makes the evaluation view of uint8 batches (``augment.batch.EvalView``).
            Float batches pass through both.
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        num_classes: int,
        weight_decay: float = 0.0,
        channels_last: bool = False,
        class_weights: torch.Tensor | None = None,
        augment: nn.Module | None = None,
        eval_view: nn.Module | None = None,
    ) -> None:
        super().__init__(weight_decay)
        self.augment, self.eval_view, self.tta = augment, eval_view, False
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.backbone = backbone
        self.head = nn.Linear(features, num_classes)
        self.channels_last = channels_last
        self.probe_frozen = False
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def freeze(self, mode: Literal["fastai", "linear-probe"]) -> None:
        """Freeze the encoder; in linear-probe mode BatchNorm statistics are frozen too."""
        set_frozen(self.backbone, True, mode)
        self.probe_frozen = mode == "linear-probe"
        self.train(self.training)

    def unfreeze(self) -> None:
        set_frozen(self.backbone, False)
        self.probe_frozen = False
        self.train(self.training)

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if self.probe_frozen:
            self.backbone.eval()
        return self

    def _view(self, images: torch.Tensor, augmented: bool) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        return self.augment(images) if augmented else self.eval_view(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        loss = F.cross_entropy(self(self._view(images, augmented=True)), labels, weight=self.class_weights)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        logits = self(self._view(images, augmented=False))
        self.log("val_loss", F.cross_entropy(logits, labels), on_step=False, on_epoch=True, batch_size=len(labels))
        self._val_outputs.append((logits.argmax(dim=1).cpu(), labels.cpu()))

    def on_validation_epoch_end(self) -> None:
        predictions, labels = (torch.cat(t).numpy() for t in zip(*self._val_outputs))
        self._val_outputs.clear()
        self.log("val_accuracy", float(np.mean(predictions == labels)))
        self.log("val_balanced_accuracy", float(balanced_accuracy_score(labels, predictions)))

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _, _ = batch
        return F.softmax(self(self._view(images, augmented=self.tta)).float(), dim=1)


def save_model(folder: Path, module: ClassifierModule, record: ModelRecord) -> None:
    """Write the weights, then the record (whose presence marks a whole model; ``deploy.model.load_model`` reads both)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write(Path(folder) / MODEL_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    record.write(Path(folder) / MODEL_RECORD)
