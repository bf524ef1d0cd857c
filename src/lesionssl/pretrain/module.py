"""Lightning module: backbone + projector trained with the Barlow Twins loss."""

from __future__ import annotations

import torch
from torch import nn

from lesionssl.engine import PersistentAdamModule
from lesionssl.pretrain.loss import barlow_twins_loss


class BarlowTwinsModule(PersistentAdamModule):
    """Joint-embedding network: ``projector(backbone(view))`` for both views, Barlow Twins loss.

    Args:
        backbone: Feature extractor (ResNet with ``fc = Identity``).
        projector: MLP mapping features to embeddings.
        lambd: Weight of the redundancy-reduction term.
        weight_decay: Decoupled weight decay of Adam.
        channels_last: Run convolutions in NHWC memory format (faster with mixed precision).
        optimizer_factory: Builds the optimiser from the module (default: fastai Adam).
        views: Makes the two views of a uint8 batch on the training device
            (``augment.batch.TwoViews``); batches that already are view pairs pass through.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, lambd: float, weight_decay: float = 0.0, channels_last: bool = False, optimizer_factory=None, views: nn.Module | None = None) -> None:
        super().__init__(weight_decay, optimizer_factory)
        self.backbone, self.projector, self.lambd, self.channels_last = backbone, projector, lambd, channels_last
        self.views = views

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.projector(self.backbone(images))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        view_a, view_b = self.views(batch) if isinstance(batch, torch.Tensor) else batch
        # Two forward passes, as the official code: BatchNorm normalises each view on its own.
        terms = barlow_twins_loss(self(view_a), self(view_b), self.lambd)
        size = view_a.shape[0]
        self.log("loss", terms.loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("invariance", terms.invariance, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("redundancy", terms.redundancy, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return terms.loss
