"""Lightning module: a backbone trained with a self-supervised method, which owns its heads and state."""

from __future__ import annotations

import torch
from torch import nn

from lesionssl.engine.modules import PersistentAdamModule, freeze_batchnorm_statistics
from lesionssl.models.backbones import feature_dim
from lesionssl.optim.l2sp import StartingPoint
from lesionssl.pretraining.methods import Method


class SelfSupervisedModule(PersistentAdamModule):
    """A backbone and a method: the method's loss of each batch's views, its momentum updates.

    Args:
        backbone: Feature extractor (ResNet with ``fc = Identity``, or a timm model without classifier).
        method: The self-supervised method; its ``setup`` builds its heads here.
        weight_decay: Decoupled weight decay of Adam.
        channels_last: Run convolutions in NHWC memory format (faster with mixed precision).
        optimizer_factory: Builds the optimiser from the module (default: fastai Adam).
        views: Makes the method's views of a uint8 batch on the training device
            (``augment.batch.Views``); a pair of uint8 batches (two images of one lesion) gets
            the first view of the first and the others of the second; batches that already are
            float views pass through.
        encoder_lr_scale: The encoder's LR as a share of the method's heads' (default optimiser only).
        frozen_bn_statistics: Keep the encoder's BatchNorm running statistics as they were (the
            encoder's BatchNorms, and those of a target following it, stay in eval mode while training).
        l2sp: The weight alpha of the L2-SP pull toward the encoder's starting weights (0: none).
        in_dim: The backbone's feature width (default: read from the backbone).
    """

    def __init__(
        self,
        backbone: nn.Module,
        method: Method,
        weight_decay: float = 0.0,
        channels_last: bool = False,
        optimizer_factory=None,
        views: nn.Module | None = None,
        encoder_lr_scale: float = 1.0,
        frozen_bn_statistics: bool = False,
        l2sp: float = 0.0,
        in_dim: int | None = None,
    ) -> None:
        super().__init__(weight_decay, optimizer_factory)
        method.setup(backbone, in_dim or feature_dim(backbone))
        self.backbone, self.method, self.channels_last = backbone, method, channels_last
        self.views = views
        self.encoder_lr_scale, self.frozen_bn_statistics = encoder_lr_scale, frozen_bn_statistics
        self.starting_point = StartingPoint(backbone, l2sp) if l2sp > 0 else None
        # Checkpoints written before methods owned their heads name the projector ``projector.*``.
        self._register_load_state_dict_pre_hook(_rename_legacy_projector)

    def param_groups(self) -> list[dict]:
        return [
            {"params": list(self.backbone.parameters()), "lr_scale": self.encoder_lr_scale},
            {"params": self.method.learnable_params()},
        ]

    def _encoders(self) -> list[nn.Module]:
        """The backbone and any target that follows it."""
        return [self.backbone] + [
            target for online, target in self.method.momentum_pairs(self.backbone) if online is self.backbone
        ]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.frozen_bn_statistics:  # here, not in train(): Lightning and the monitors set modes themselves
            for encoder in self._encoders():
                freeze_batchnorm_statistics(encoder)
        if isinstance(batch, torch.Tensor):
            views = self.views(batch)
        elif batch[0].dtype == torch.uint8:
            views = self.views(batch[0], batch[1])
        else:
            views = list(batch)
        if self.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        result = self.method.training_loss(self.backbone, views)
        loss, terms = result.loss, dict(result.terms)
        if self.starting_point is not None:
            terms["l2sp"] = self.starting_point(self.backbone)
            loss = loss + terms["l2sp"]
        size = views[0].shape[0]
        self.log("loss", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        for name, value in terms.items():
            self.log(name, value, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # After the optimiser step: step k of the fit's K moves the targets with tau(k / (K - 1)).
        total = self.trainer.estimated_stepping_batches
        self.method.update_momentum(self.backbone, (self.trainer.global_step - 1) / max(1, total - 1))


def _rename_legacy_projector(state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "projector.")]:
        state_dict[prefix + "method." + key.removeprefix(prefix)] = state_dict.pop(key)
