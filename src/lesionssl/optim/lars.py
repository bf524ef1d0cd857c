"""LARS with the semantics of the official Barlow Twins code (You et al. 2017; Zbontar et al. 2021).

For every parameter ``p`` with gradient ``g``: ``d = g + wd * p`` unless ``p`` is excluded from
weight decay; then, unless excluded from adaptation, ``d *= eta * ||p|| / ||d||`` (1 when
either norm is 0); the momentum buffer is ``mu = momentum * mu + d`` and ``p -= lr * mu``.
Biases and normalisation parameters (1-D tensors) are excluded from both and get their own
learning rate, as in the official code. Note the trust ratio divides by ``||g + wd p||``, not
by ``||g|| + wd ||p||`` as Lightning-Bolts-style LARS (lightly, solo-learn) does.
"""

from __future__ import annotations

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling; per-group ``exclude`` turns off decay and adaptation."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001) -> None:
        super().__init__(
            params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "eta": eta, "exclude": False}
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not group["exclude"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    ratio = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["eta"] * param_norm / update_norm,
                        torch.ones_like(param_norm),
                    )
                    update = update.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss


def lars_param_groups(model: nn.Module, lr_weights: float, lr_biases: float) -> list[dict]:
    """Two groups as the official code: weights (adapted, decayed) and 1-D parameters (neither)."""
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    for param in model.parameters():
        (biases if param.ndim == 1 else weights).append(param)
    return [
        {"params": weights, "lr": lr_weights, "base_lr": lr_weights},
        {"params": biases, "lr": lr_biases, "base_lr": lr_biases, "exclude": True},
    ]
