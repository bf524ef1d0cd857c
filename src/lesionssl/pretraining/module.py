"""Lightning module: backbone + projector trained with a self-supervised method's loss."""

from __future__ import annotations

import torch
from torch import nn

from lesionssl.engine.modules import PersistentAdamModule, freeze_batchnorm_statistics
from lesionssl.optim.l2sp import StartingPoint
from lesionssl.pretraining.methods import Method


class SelfSupervisedModule(PersistentAdamModule):
    """Joint-embedding network: ``projector(backbone(view))`` for both views, the method's loss.

    Args:
        backbone: Feature extractor (ResNet with ``fc = Identity``).
        projector: MLP mapping features to embeddings.
        method: The self-supervised method (its loss and logged terms).
        weight_decay: Decoupled weight decay of Adam.
        channels_last: Run convolutions in NHWC memory format (faster with mixed precision).
        optimizer_factory: Builds the optimiser from the module (default: fastai Adam).
        views: Makes the two views of a uint8 batch on the training device
            (``augment.batch.TwoViews``); a pair of uint8 batches (two images of one lesion)
            gets the first view of the first and the second view of the second; batches that
            already are float view pairs pass through.
        encoder_lr_scale: The encoder's LR as a share of the projector's (default optimiser only).
        frozen_bn_statistics: Keep the encoder's BatchNorm running statistics as they were (the
            encoder's BatchNorms stay in eval mode while training).
        l2sp: The weight alpha of the L2-SP pull toward the encoder's starting weights (0: none).
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, method: Method, weight_decay: float = 0.0, channels_last: bool = False, optimizer_factory=None, views: nn.Module | None = None,
                 encoder_lr_scale: float = 1.0, frozen_bn_statistics: bool = False, l2sp: float = 0.0) -> None:
        super().__init__(weight_decay, optimizer_factory)
        self.backbone, self.projector, self.method, self.channels_last = backbone, projector, method, channels_last
        self.views = views
        self.encoder_lr_scale, self.frozen_bn_statistics = encoder_lr_scale, frozen_bn_statistics
        self.starting_point = StartingPoint(backbone, l2sp) if l2sp > 0 else None

    def param_groups(self) -> list[dict]:
        encoder = list(self.backbone.parameters())
        ids = {id(p) for p in encoder}
        others = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": encoder, "lr_scale": self.encoder_lr_scale}, {"params": others}]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.projector(self.backbone(images))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.frozen_bn_statistics:  # here, not in train(): Lightning and the monitors set modes themselves
            freeze_batchnorm_statistics(self.backbone)
        if isinstance(batch, torch.Tensor):
            view_a, view_b = self.views(batch)
        elif batch[0].dtype == torch.uint8:
            view_a, view_b = self.views.first(batch[0]), self.views.second(batch[1])
        else:
            view_a, view_b = batch
        # Two forward passes, as the official code: BatchNorm normalises each view on its own.
        result = self.method.loss(self(view_a), self(view_b))
        loss, terms = result.loss, dict(result.terms)
        if self.starting_point is not None:
            terms["l2sp"] = self.starting_point(self.backbone)
            loss = loss + terms["l2sp"]
        size = view_a.shape[0]
        self.log("loss", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        for name, value in terms.items():
            self.log(name, value, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss
