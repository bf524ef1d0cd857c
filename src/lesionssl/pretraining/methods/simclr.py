"""SimCLR (Chen et al., ICML 2020, Eq. 1): the NT-Xent contrastive loss.

For ``2N`` embeddings (both views of ``N`` images), ``L2``-normalised, with cosine similarity
``s_ij`` and temperature ``tau``: ``l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)``
for each positive pair, averaged over all ``2N`` anchors; every other embedding is a negative.
Defaults: temperature 0.1 and a 2048-128 projector (the paper's small-batch settings).

Under DDP the embeddings of every process are gathered (autograd-aware) first, so the negatives
are the global batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch.nn import functional as F

from lesionssl.pretraining.methods.base import JointEmbedding, LossTerms, MethodKwargs
from lesionssl.pretraining.methods.distributed import gather


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1) -> LossTerms:
    """NT-Xent over the global batch, with the mean positive similarity logged; float32 under autocast."""
    with torch.autocast(z_a.device.type, enabled=False):
        z = F.normalize(torch.cat([gather(z_a.float()), gather(z_b.float())]), dim=1)
        n = z.shape[0] // 2
        similarity = z @ z.T
        logits = (similarity / temperature).masked_fill(
            torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")
        )
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        loss = F.cross_entropy(logits, positives)
        aligned = similarity[torch.arange(2 * n, device=z.device), positives].mean()
    return LossTerms(loss, {"positive_similarity": aligned.detach()})


class SimCLRKwargs(MethodKwargs):
    projector: list[int] = Field(default_factory=lambda: [2048, 128], min_length=1)
    temperature: float = Field(0.1, gt=0)


class SimCLR(JointEmbedding):
    name = "simclr"
    summary = (
        "each view picks out its partner among all other images of the (global) batch: contrastive, with negatives"
    )
    source = "Chen et al. 2020 (NT-Xent, temperature 0.1, projector 2048-128)"
    Kwargs: ClassVar = SimCLRKwargs

    def loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> LossTerms:
        return nt_xent_loss(z_a, z_b, self.settings.temperature)
