"""The transfer protocol of the seed study (Algorithm 1), written once for pretraining and fine-tuning.

1. Head epochs: the encoder frozen (fastai ``freeze``: BatchNorm stays trainable, unless the
   caller freezes it too), the new layers trained at a constant LR;
2. unfreeze, and choose the LR: a fixed value, or the LR finder's suggestion (fastai semantics);
3. 1cycle over the main epochs.

Fine-tuning trains a new linear head this way; pretraining from trained weights warms a fresh
projector up this way (the seed's pre-pretraining).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from lesionssl.engine.modules import PersistentAdamModule
from lesionssl.errors import LesionSSLError
from lesionssl.optim.lr_finder import LRFinderResult, run_lr_finder
from lesionssl.optim.one_cycle import OneCycle, OneCycleCallback, set_hyperparameters
from lesionssl.progress import console

#: ``fit(callbacks, epochs)`` over the stage's training loader, or ``fit(callbacks, epochs, loader)``.
Fit = Callable[..., None]


def head_epochs(
    fit: Fit,
    module: PersistentAdamModule,
    freeze: Callable[[], None],
    unfreeze: Callable[[], None],
    epochs: int,
    lr: float,
    callbacks: list[L.Callback],
) -> None:
    """Step 1: ``epochs`` with the encoder frozen at the constant ``lr``; the encoder is unfrozen after."""
    if epochs:
        freeze()
        set_hyperparameters(module.persistent_optimizer(), lr)
        fit(callbacks, epochs)
    unfreeze()


@dataclass(frozen=True)
class LRChoice:
    """The maximum LR of the 1cycle and how it was found."""

    lr: float
    how: str
    finder: LRFinderResult | None = None


def choose_lr(
    fit: Fit, module: PersistentAdamModule, lr: float | Literal["find"], data: DataLoader, suggestion: str = "valley"
) -> LRChoice:
    """Step 2: ``lr`` as given, or the LR finder's ``suggestion`` over batches of the training
    loader ``data`` (weights and optimiser restored)."""
    if lr != "find":
        return LRChoice(float(lr), "fixed")
    finder = run_lr_finder(fit, module, data)
    if suggestion not in finder.suggestions:
        raise LesionSSLError("the LR finder recorded too few points; use more training images or a fixed --lr")
    console.print(f"LR finder ({suggestion}): {finder.suggestions[suggestion]:.3g}")
    return LRChoice(float(finder.suggestions[suggestion]), f"LR finder ({suggestion})", finder)


def one_cycle_schedule(lr: float, total_steps: int) -> OneCycleCallback:
    """Step 3: the fastai 1cycle schedule over the main epochs, as a callback."""
    return OneCycleCallback(OneCycle(lr, total_steps))
