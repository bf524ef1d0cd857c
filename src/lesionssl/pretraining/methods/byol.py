"""BYOL (Grill et al., NeurIPS 2020, Sec. 3.1-3.2, Eq. 2-4): bootstrap your own latent.

An online network (encoder, projector ``g``, predictor ``q``) predicts a target network's
projection of the other view; the target (encoder and projector) is not trained but follows the
online weights by EMA, ``xi <- tau xi + (1 - tau) theta``, with ``tau`` raised from ``tau_base``
to 1 by ``1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` over the fit's ``K`` steps. The loss of
one direction is ``|| q(z) / ||q(z)|| - z' / ||z'|| ||^2 = 2 - 2 cos(q(z), z')``, averaged over
the (global) batch, and symmetrised: ``L(v, v') + L(v', v)`` (Eq. 4).
Defaults: the paper's MLPs (4096 hidden, 256 out; BN and ReLU between) and ``tau_base`` 0.99
(the paper's 0.996 is for 4096-image batches over 1000 epochs; solo-learn uses 0.99 for small
datasets). The target's weights are part of the method, so they are in every checkpoint.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from lesionssl.models.heads import ProjectionHead
from lesionssl.pretraining.methods.base import LossTerms, Method, MethodKwargs, cosine_momentum
from lesionssl.pretraining.methods.distributed import global_count, global_sum


def byol_loss(p_a: torch.Tensor, p_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor) -> LossTerms:
    """Eq. 2 and 4: each view's prediction against the other view's target projection, summed
    over both directions; each direction averaged over the global batch; float32 under autocast."""
    with torch.autocast(p_a.device.type, enabled=False):
        n = global_count(p_a.shape[0], p_a.device)
        cos_ab = F.cosine_similarity(p_a.float(), t_b.detach().float(), dim=1)
        cos_ba = F.cosine_similarity(p_b.float(), t_a.detach().float(), dim=1)
        loss = global_sum((2 - 2 * cos_ab).sum() + (2 - 2 * cos_ba).sum()) / n
    return LossTerms(loss, {"prediction_similarity": (global_sum(cos_ab.sum() + cos_ba.sum()) / (2 * n)).detach()})


class BYOLKwargs(MethodKwargs):
    projector: list[int] = Field(default_factory=lambda: [4096, 256], min_length=1)
    predictor: list[int] = Field(
        default_factory=lambda: [4096, 256],
        min_length=1,
        description="the predictor's widths; the last equals the projector's",
    )
    tau_base: float = Field(
        0.99, ge=0, lt=1, description="the target's EMA coefficient at the first step (1 at the last)"
    )

    @model_validator(mode="after")
    def _predictor_predicts_a_projection(self) -> BYOLKwargs:
        if self.predictor[-1] != self.projector[-1]:
            raise ValueError(
                f"the predictor's last width ({self.predictor[-1]}) must equal the projector's ({self.projector[-1]})"
            )
        return self


class BYOL(Method):
    name = "byol"
    summary = (
        "the online network predicts a slowly moving (EMA) target network's projection of the other view: no negatives"
    )
    source = "Grill et al. 2020 (MLPs 4096-256, EMA tau from 0.99 to 1 by a cosine)"
    Kwargs: ClassVar = BYOLKwargs

    def setup(self, backbone: nn.Module, in_dim: int) -> None:
        self.projector = ProjectionHead(in_dim, self.settings.projector, last_bias=True)
        self.predictor = ProjectionHead(self.settings.projector[-1], self.settings.predictor, last_bias=True)
        self.target_backbone, self.target_projector = copy.deepcopy(backbone), copy.deepcopy(self.projector)
        for target in (self.target_backbone, self.target_projector):
            target.requires_grad_(False)

    def momentum_pairs(self, backbone: nn.Module | None) -> list[tuple[nn.Module, nn.Module]]:
        return [(backbone, self.target_backbone), (self.projector, self.target_projector)]

    def momentum(self, progress: float) -> float:
        return cosine_momentum(self.settings.tau_base, progress)

    def training_loss(self, backbone: nn.Module, views: list[torch.Tensor]) -> LossTerms:
        view_a, view_b = views[:2]
        p_a, p_b = (self.predictor(self.projector(backbone(v))) for v in (view_a, view_b))
        with torch.no_grad():
            t_a, t_b = (self.target_projector(self.target_backbone(v)) for v in (view_a, view_b))
        return byol_loss(p_a, p_b, t_a, t_b)
