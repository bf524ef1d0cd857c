"""Barlow Twins loss (Zbontar et al., ICML 2021, Eq. 1-2), correct under data parallelism.

``C_ij = sum_b zA_bi zB_bj / N`` where ``zA``, ``zB`` are each view's embeddings standardised
over the batch (separately per view), ``N`` is the global batch size, and
``L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.

Under ``torch.distributed`` the means, variances and ``C`` are summed over all processes with an
autograd-aware all-reduce, so loss and gradients equal those of one process on the whole batch
(the official code uses SyncBN but a non-differentiable reduction of ``C``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce


class BarlowTwinsTerms(NamedTuple):
    """Loss and its two terms (logged separately: their scales differ by orders of magnitude)."""

    loss: torch.Tensor
    invariance: torch.Tensor
    redundancy: torch.Tensor


def _global_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        with warnings.catch_warnings():
            # deprecated in favour of _functional_collectives, whose all_reduce has no backward;
            # this one's backward all-reduces the gradient, which the DDP test relies on.
            warnings.simplefilter("ignore", FutureWarning)
            return all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _global_count(local: int, device: torch.device) -> torch.Tensor:
    return _global_sum(torch.tensor(float(local), device=device))


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardise each feature over the (global) batch: biased variance plus ``eps``, like BN."""
    n = _global_count(z.shape[0], z.device)
    mean = _global_sum(z.sum(dim=0)) / n
    centred = z - mean
    var = _global_sum(centred.pow(2).sum(dim=0)) / n
    return centred / torch.sqrt(var + eps)


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float, eps: float = 1e-5) -> BarlowTwinsTerms:
    """Compute the Barlow Twins loss of two views' embeddings (each ``[batch, dim]``).

    Computed in float32 even under autocast (which would run the correlation matmul in bf16 /
    fp16, whose 8-11 bit mantissas cannot resolve the small off-diagonal correlations).
    """
    with torch.autocast(z_a.device.type, enabled=False):
        z_a, z_b = z_a.float(), z_b.float()
        n = _global_count(z_a.shape[0], z_a.device)
        c = _global_sum(standardize(z_a, eps).T @ standardize(z_b, eps)) / n
    diagonal = torch.diagonal(c)
    invariance = (1 - diagonal).pow(2).sum()
    redundancy = c.pow(2).sum() - diagonal.pow(2).sum()
    return BarlowTwinsTerms(invariance + lambd * redundancy, invariance, redundancy)
