"""The LightningModule base of every stage: one optimiser kept across fits, and freezing.

fastai keeps one optimiser across the head epoch, the LR finder and ``fit_one_cycle`` (Adam's
moments carry over); :class:`PersistentAdamModule` reproduces that on top of Lightning, where
every ``fit`` would otherwise build a fresh optimiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from torch import nn

#: fastai ``Adam`` defaults used by the seed (wd is decoupled, as fastai's ``true_wd``).
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-5


def fastai_adam(params, weight_decay: float) -> torch.optim.Optimizer:
    """fastai's default optimiser: Adam(0.9, 0.99, eps 1e-5) with decoupled weight decay, over
    parameters or parameter groups."""
    return torch.optim.AdamW(params, lr=1e-3, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay)


class PersistentAdamModule(L.LightningModule):
    """A LightningModule whose optimiser (fastai Adam unless a factory is given) survives across
    successive ``Trainer.fit`` calls."""

    def __init__(
        self, weight_decay: float = 0.0, optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None
    ) -> None:
        super().__init__()
        self.weight_decay = weight_decay
        self.optimizer_factory = optimizer_factory
        self._optimizer: torch.optim.Optimizer | None = None

    def persistent_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            factory = self.optimizer_factory or (lambda module: fastai_adam(module.param_groups(), self.weight_decay))
            self._optimizer = factory(self)
        return self._optimizer

    def param_groups(self) -> list[dict]:
        """The parameter groups of the default optimiser (one group; subclasses may give groups an
        ``lr_scale``, which :func:`~lesionssl.optim.one_cycle.set_hyperparameters` applies)."""
        return [{"params": list(self.parameters())}]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.persistent_optimizer()


def freeze_batchnorm_statistics(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode: it normalises with, and no longer updates,
    its running statistics (its affine parameters still train)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.eval()


def set_frozen(module: nn.Module, frozen: bool, mode: Literal["fastai", "linear-probe"] = "fastai") -> None:
    """Freeze or unfreeze a backbone.

    ``fastai`` mode (the seed's ``learn.freeze()``) keeps BatchNorm affine parameters trainable;
    ``linear-probe`` freezes everything (the caller keeps the module in eval mode as well).
    """
    for sub in module.modules():
        keep_trainable = mode == "fastai" and isinstance(sub, nn.modules.batchnorm._BatchNorm)
        for param in sub.parameters(recurse=False):
            param.requires_grad_(not frozen or keep_trainable)
