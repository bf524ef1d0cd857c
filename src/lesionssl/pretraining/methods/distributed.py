"""Autograd-aware collectives for losses computed over the global batch under DDP.

Every process computes the same global loss; the backward of these collectives sums each
process's gradient contributions, and DDP's averaging then leaves exactly the gradient of one
process on the whole batch (tested with two gloo processes against one).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch.distributed.nn import functional as collectives


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (identity in one process); its backward sums the gradients too."""
    if _world() > 1:
        with warnings.catch_warnings():
            # deprecated in favour of _functional_collectives, whose all_reduce has no backward
            warnings.simplefilter("ignore", FutureWarning)
            return collectives.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def global_count(local: int, device: torch.device) -> torch.Tensor:
    """The global batch size."""
    return global_sum(torch.tensor(float(local), device=device))


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of every process, concatenated in rank order (identity in one process)."""
    if _world() > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(collectives.all_gather(tensor), dim=0)
    return tensor
