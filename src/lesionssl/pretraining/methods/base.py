"""What a self-supervised method is to lesionssl: an ``nn.Module`` that owns its heads and state,
its hyperparameters (validated), the terms it logs, and the hooks a training step calls. One file
per method implements it.

The hooks follow solo-learn's ``BaseMethod`` / ``BaseMomentumMethod``: ``setup`` builds the heads
(and a target network) for a backbone, ``learnable_params`` are what the optimiser trains besides
the backbone, ``momentum_pairs`` are the (online, target) modules updated by EMA after every
optimiser step, ``view_specs`` sets the number and sizes of views, and ``training_loss`` is the
step itself. Because the method is a submodule of the training module, everything it owns (a
target network, a centre) is in the checkpoint, so exact resume holds for every method.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lesionssl.augment.batch import ViewSpec
from lesionssl.models.heads import ProjectionHead


class LossTerms(NamedTuple):
    """The loss to minimise and its named parts (logged per epoch; their scales differ)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class MethodKwargs(BaseModel):
    """Hyperparameters every method has; each method adds its own. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    projector: list[int] = Field(min_length=1, description="output widths of the projector's linear layers")


class Method(nn.Module, ABC):
    """A self-supervised method: the heads and state it owns and the loss of a batch's views.

    Constructing one only validates its hyperparameters (cheap: configs do it to check and record
    them); :meth:`setup` builds the modules once the backbone is known.
    """

    #: Registry name (``method:`` in a config).
    name: ClassVar[str]
    #: One line for the README's table: what it optimises.
    summary: ClassVar[str]
    #: Where its defaults come from.
    source: ClassVar[str]
    Kwargs: ClassVar[type[MethodKwargs]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.settings = self.Kwargs(**kwargs)

    # -- hooks -------------------------------------------------------------------------------
    def setup(self, backbone: nn.Module, in_dim: int) -> None:
        """Build the heads (and any state) for ``backbone``, whose pooled features are ``in_dim`` wide.

        Every method has a ``projector`` (the pretraining monitor measures its embeddings, and
        ``projector_init: checkpoint`` loads it).
        """
        self.projector = ProjectionHead(in_dim, self.settings.projector)

    def learnable_params(self) -> list[nn.Parameter]:
        """The method's parameters the optimiser trains, besides the backbone's (targets excluded)."""
        targets = {id(p) for _, target in self.momentum_pairs(None) for p in target.parameters()}
        return [p for p in self.parameters() if id(p) not in targets]

    def momentum_pairs(self, backbone: nn.Module | None) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, target)`` pairs whose targets follow their online modules by EMA (none by
        default). ``backbone`` is the online encoder (``None`` asks only for the targets)."""
        return []

    def momentum(self, progress: float) -> float:
        """The EMA coefficient tau at ``progress`` (0 to 1) through the fit (used only with momentum pairs)."""
        return 1.0

    def view_specs(self, specs: tuple[ViewSpec, ViewSpec]) -> list[ViewSpec]:
        """The views of each image, from the augmentation's two (default: exactly those two).
        A multi-crop method returns more, e.g. ``replace(specs[1], size=..., crop_scale=...)``."""
        return list(specs)

    @abstractmethod
    def training_loss(self, backbone: nn.Module, views: list[torch.Tensor]) -> LossTerms:
        """The step's loss from the batch's views (``view_specs`` order, normalised floats; this
        process's share of the batch: the loss must equal one process's on the whole batch)."""

    # -- shared machinery --------------------------------------------------------------------
    @torch.no_grad()
    def update_momentum(self, backbone: nn.Module, progress: float, tau: float | None = None) -> None:
        """Move every target toward its online module: ``target = tau * target + (1 - tau) * online``
        (``tau``: the schedule's at ``progress`` unless given; 0 copies the online weights)."""
        pairs = self.momentum_pairs(backbone)
        if not pairs:
            return
        tau = self.momentum(progress) if tau is None else tau
        for online, target in pairs:
            for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
                p_target.mul_(tau).add_(p_online.detach(), alpha=1 - tau)

    def resolved(self) -> dict[str, Any]:
        """Every hyperparameter, defaults filled (written into config.yaml and backbone.json)."""
        return self.settings.model_dump()


class JointEmbedding(Method):
    """The symmetric two-view family: ``loss(projector(backbone(view_a)), projector(backbone(view_b)))``."""

    def training_loss(self, backbone: nn.Module, views: list[torch.Tensor]) -> LossTerms:
        # Two forward passes, as the official code: BatchNorm normalises each view on its own.
        z_a, z_b = (self.projector(backbone(view)) for view in views[:2])
        return self.loss(z_a, z_b)

    @abstractmethod
    def loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> LossTerms:
        """The loss of two views' embeddings (``[batch, dim]`` each, this process's share)."""


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule (Grill et al. 2020, Sec. 3.2): ``1 - (1 - base) (cos(pi k / K) + 1) / 2``,
    from ``base`` at the first step to 1 at the last."""
    return 1 - (1 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2
