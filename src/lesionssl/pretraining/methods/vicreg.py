"""VICReg (Bardes et al., ICLR 2022, Eq. 1-6): variance-invariance-covariance regularisation.

``L = mu * s(Z, Z') + lambda * [v(Z) + v(Z')] / 2 + nu * [c(Z) + c(Z')]`` with
invariance ``s`` the mean squared distance of the two views' embeddings, variance
``v(Z) = mean_j max(0, gamma - sqrt(Var(z_j) + eps))`` (unbiased variance over the batch) and
covariance ``c(Z) = sum_{i != j} Cov(Z)_ij^2 / d``. Defaults: the paper's ImageNet settings
(25 / 25 / 1, gamma 1, eps 1e-4, projector 8192-8192-8192).

Under DDP the embeddings of every process are gathered (autograd-aware) first, so variance and
covariance are computed over the global batch, as the paper's ``FullGatherLayer`` does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch.nn import functional as F

from lesionssl.pretraining.methods.base import JointEmbedding, LossTerms, MethodKwargs
from lesionssl.pretraining.methods.distributed import gather


def _variance(z: torch.Tensor, target: float, eps: float) -> torch.Tensor:
    return F.relu(target - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (z.shape[0] - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / z.shape[1]


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    invariance: float = 25.0,
    variance: float = 25.0,
    covariance: float = 1.0,
    std_target: float = 1.0,
    eps: float = 1e-4,
) -> LossTerms:
    """The VICReg loss over the global batch, with its three (unweighted) terms; float32 under autocast."""
    with torch.autocast(z_a.device.type, enabled=False):
        z_a, z_b = gather(z_a.float()), gather(z_b.float())
        terms = {
            "invariance": F.mse_loss(z_a, z_b),
            "variance": (_variance(z_a, std_target, eps) + _variance(z_b, std_target, eps)) / 2,
            "covariance": _covariance(z_a) + _covariance(z_b),
        }
    loss = invariance * terms["invariance"] + variance * terms["variance"] + covariance * terms["covariance"]
    return LossTerms(loss, terms)


class VICRegKwargs(MethodKwargs):
    projector: list[int] = Field(default_factory=lambda: [8192, 8192, 8192], min_length=1)
    invariance: float = Field(25.0, ge=0, description="weight of the invariance term (lambda in the paper)")
    variance: float = Field(25.0, ge=0, description="weight of the variance term (mu)")
    covariance: float = Field(1.0, ge=0, description="weight of the covariance term (nu)")
    std_target: float = Field(1.0, gt=0, description="gamma: the standard deviation each dimension is kept above")
    eps: float = Field(1e-4, gt=0)


class VICReg(JointEmbedding):
    name = "vicreg"
    summary = "views' embeddings close (invariance), each dimension's std above 1 (variance), dimensions decorrelated (covariance)"
    source = "Bardes et al. 2022 (25 / 25 / 1, gamma 1, eps 1e-4, projector 8192-8192-8192)"
    Kwargs: ClassVar = VICRegKwargs

    def loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> LossTerms:
        s = self.settings
        return vicreg_loss(z_a, z_b, s.invariance, s.variance, s.covariance, s.std_target, s.eps)
