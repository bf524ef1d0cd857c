"""L2-SP: a pull toward the starting weights (Li, Grandvalet & Davoine, ICML 2018, eq. 2).

``Omega(w) = alpha / 2 * ||w_S - w_S^0||^2`` over the parameters ``w_S`` that came from the
source model, here every parameter of the encoder, so continuing from trained weights (the seed's
pre-pretraining) can add the target's features without forgetting what the start gave.
"""

from __future__ import annotations

import torch
from torch import nn


class StartingPoint(nn.Module):
    """Holds a copy of ``module``'s parameters at construction as buffers, so the anchor travels
    with the training checkpoint (exact resume), and returns the L2-SP penalty of ``module``.

    Args:
        module: The encoder whose current parameters define the starting point ``w^0``.
        alpha: The penalty's weight (the paper's alpha).
    """

    def __init__(self, module: nn.Module, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.names = [name for name, _ in module.named_parameters()]
        for i, (_, param) in enumerate(module.named_parameters()):
            self.register_buffer(f"w{i}", param.detach().clone())

    def forward(self, module: nn.Module) -> torch.Tensor:
        """``alpha / 2 * sum ||w - w^0||^2`` over ``module``'s parameters (same order as at construction)."""
        params = list(module.parameters())
        if len(params) != len(self.names):
            raise ValueError(f"L2-SP was anchored on {len(self.names)} parameters; this module has {len(params)}")
        total = sum(((param - getattr(self, f"w{i}")) ** 2).sum() for i, param in enumerate(params))
        return 0.5 * self.alpha * total
