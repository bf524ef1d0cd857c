"""Barlow Twins (Zbontar et al., ICML 2021, Eq. 1-2), correct under data parallelism.

``C_ij = sum_b zA_bi zB_bj / N`` where ``zA``, ``zB`` are each view's embeddings standardised
over the batch (separately per view), ``N`` is the global batch size, and
``L = sum_i (1 - C_ij)^2 + lambda * sum_{i != j} C_ij^2``.

Under ``torch.distributed`` the means, variances and ``C`` are summed over all processes with an
autograd-aware all-reduce, so loss and gradients equal those of one process on the whole batch
(the official code uses SyncBN but a non-differentiable reduction of ``C``).
Defaults: the official code (projector 8192-8192-8192, lambda 0.0051); ``lambd: null`` is the
seed's 1/d heuristic.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from lesionssl.pretraining.methods.base import JointEmbedding, LossTerms, MethodKwargs
from lesionssl.pretraining.methods.distributed import global_count, global_sum


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardise each feature over the (global) batch: biased variance plus ``eps``, like BN."""
    n = global_count(z.shape[0], z.device)
    mean = global_sum(z.sum(dim=0)) / n
    centred = z - mean
    var = global_sum(centred.pow(2).sum(dim=0)) / n
    return centred / torch.sqrt(var + eps)


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float, eps: float = 1e-5) -> LossTerms:
    """The Barlow Twins loss of two views' embeddings, with its invariance and redundancy terms.

    Computed in float32 even under autocast (which would run the correlation matmul in bf16 /
    fp16, whose 8-11 bit mantissas cannot resolve the small off-diagonal correlations).
    """
    with torch.autocast(z_a.device.type, enabled=False):
        z_a, z_b = z_a.float(), z_b.float()
        n = global_count(z_a.shape[0], z_a.device)
        c = global_sum(standardize(z_a, eps).T @ standardize(z_b, eps)) / n
    diagonal = torch.diagonal(c)
    invariance = (1 - diagonal).pow(2).sum()
    redundancy = c.pow(2).sum() - diagonal.pow(2).sum()
    return LossTerms(invariance + lambd * redundancy, {"invariance": invariance, "redundancy": redundancy})


class BarlowTwinsKwargs(MethodKwargs):
    projector: list[int] = Field(default_factory=lambda: [8192, 8192, 8192], min_length=1)
    lambd: float | None = Field(0.0051, gt=0, description="off-diagonal weight; null = 1/d, the seed's heuristic")


class BarlowTwins(JointEmbedding):
    name = "barlow_twins"
    summary = "cross-correlation of the two views' standardised embeddings towards the identity: invariance on the diagonal, redundancy reduction off it"
    source = "Zbontar et al. 2021 and facebookresearch/barlowtwins (lambda 0.0051, projector 8192-8192-8192)"
    Kwargs: ClassVar = BarlowTwinsKwargs

    @property
    def lambd(self) -> float:
        """lambda, with ``null`` resolved to 1 / (projector output width)."""
        return self.settings.lambd if self.settings.lambd is not None else 1.0 / self.settings.projector[-1]

    def loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> LossTerms:
        return barlow_twins_loss(z_a, z_b, self.lambd)

    def resolved(self) -> dict:
        return {**super().resolved(), "lambd": self.lambd}
