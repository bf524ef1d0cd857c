"""AdaBN (Li, Wang, Shi, Liu & Hou, 2016): a network's BatchNorm statistics re-estimated on the
target site's unlabelled images, its weights unchanged.

It assumes the site differs from training in appearance only: a site with another class mix
moves the statistics too (label shift), which AdaBN then mistakes for appearance, so
:func:`prior_shift` measures how far the site's estimated class prior is from training's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from lesionssl.data.loaders import eval_loader
from lesionssl.evaluate.prior import em_prior

#: What an external set's name gets when a run also evaluates it with AdaBN (``adapt_bn``).
ADABN_SUFFIX = "-adabn"

#: Total variation distance between the site's EM-estimated class prior and training's above
#: which a warning says AdaBN's assumption (no label shift) is in doubt.
PRIOR_SHIFT_WARNING = 0.1


@torch.no_grad()
def adapt_batchnorm(
    module: nn.Module, images: np.ndarray, table: pd.DataFrame, classes: list[str], batch_size: int
) -> int:
    """Replace the running mean and variance of every BatchNorm of ``module.backbone`` by those of
    the evaluation views of ``table``'s images: the equal-weight average over batches of each
    batch's statistics (fvcore's "precise BN"; layer by layer, each seeing the layers before it
    already adapted). Return how many layers were adapted; the module is left in eval mode."""
    norms = [m for m in module.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: the cumulative average over every batch, not an EMA
    module.eval()
    for norm in norms:
        norm.train()
    device = next(module.parameters()).device
    try:
        for batch, _, _ in eval_loader(images, table, classes, batch_size, 0):
            module(module._view(batch.to(device), augmented=False))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        module.eval()
    return len(norms)


def prior_shift(probs: np.ndarray, train_prior: np.ndarray) -> tuple[np.ndarray, float]:
    """The site's class prior estimated by EM (Saerens et al. 2002) and its total variation
    distance to the training prior."""
    estimated = em_prior(probs, train_prior)
    return estimated, float(0.5 * np.abs(estimated - train_prior).sum())


def prior_warning(probs: np.ndarray, train_prior: np.ndarray, classes: list[str]) -> str | None:
    """One line when the adapted model's predictions imply a class mix far from training's
    (:data:`PRIOR_SHIFT_WARNING`), else None."""
    estimated, distance = prior_shift(probs, np.asarray(train_prior))
    if distance <= PRIOR_SHIFT_WARNING:
        return None
    mix = ", ".join(f"{c} {p:.2f} (training {t:.2f})" for c, p, t in zip(classes, estimated, train_prior, strict=True))
    return f"warning: AdaBN assumes the site's class mix is training's, but these images' estimated mix differs (total variation {distance:.2f}): {mix}"
