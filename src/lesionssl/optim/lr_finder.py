"""LR range test with fastai ``lr_find`` semantics (Smith 2017; fastai ``LRFinder``).

The LR grows exponentially from ``start_lr`` to ``end_lr`` over ``num_it`` iterations. On small
data these span several epochs of the training loader; they run as one pass over those epochs'
batches (in the order the loader gives each epoch), not as one Lightning epoch per pass over the
data, which would add per-epoch work and progress lines to what is a single sweep. The loss is smoothed by a debiased exponential moving average
(beta 0.98); the sweep stops once the smoothed loss exceeds 4x its best. Suggestions are
computed on the curve without its first ``num_it // 10`` and last 5 points, truncated at the
first NaN. Weights, optimiser state and BatchNorm running statistics are restored afterwards.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Sampler

from lesionssl.errors import LesionSSLError
from lesionssl.optim.one_cycle import set_hyperparameters
from lesionssl.progress import console


def exp_lr(start: float, end: float, pos: float) -> float:
    """fastai ``SchedExp``."""
    return start * (end / start) ** pos


def valley(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, int]:
    """fastai ``valley``: the middle of the longest strictly decreasing run of the loss.

    The longest decreasing subsequence ending at each point is found by the O(n^2) dynamic
    programme; with ``sections = (end - start) / 3`` the suggestion is the LR at index
    ``start + int(sections) + int(sections / 2)``.
    """
    n = len(losses)
    length = [1] * n
    best_start, best_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
            if length[best_end] < length[i]:
                best_end = i
                best_start = best_end - length[best_end]
    sections = (best_end - best_start) / 3
    index = best_start + int(sections) + int(sections / 2)
    return float(lrs[index]), index


def minimum(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, int]:
    """fastai ``minimum``: one tenth of the LR at the lowest loss."""
    index = int(np.argmin(losses))
    return float(lrs[index]) / 10, index


def steep(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, int]:
    """fastai ``steep``: the LR where the loss falls fastest against log LR."""
    slopes = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    index = int(np.argmin(slopes))
    return float(lrs[index]), index


SLIDE_DIFF = 15


def slide(lrs: np.ndarray, losses: np.ndarray, lr_diff: int = SLIDE_DIFF, thresh: float = 0.005) -> tuple[float, int]:
    """fastai ``slide`` (interval slide rule): walk left until the loss gradient flattens."""
    gradient = np.gradient(losses)
    right, left = -1, -1 - lr_diff
    found = left
    while left >= -len(losses) and abs(gradient[right] - gradient[left]) > thresh:
        found = left
        right -= 1
        left -= 1
    return float(lrs[found]), len(lrs) + found


SUGGESTIONS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[float, int]]] = {
    "valley": valley,
    "minimum": minimum,
    "steep": steep,
    "slide": slide,
}


@dataclass
class LRFinderResult:
    """The recorded curve and the suggestions computed on its trimmed part."""

    lrs: list[float]
    losses: list[float]
    suggestions: dict[str, float] = field(default_factory=dict)
    num_it: int = 100

    @classmethod
    def from_curve(cls, lrs: list[float], losses: list[float], num_it: int) -> LRFinderResult:
        result = cls(lrs=list(lrs), losses=list(losses), num_it=num_it)
        trimmed_lrs, trimmed_losses = result.trimmed()
        if len(trimmed_losses) >= 2:
            result.suggestions = {
                name: fn(trimmed_lrs, trimmed_losses)[0] for name, fn in SUGGESTIONS.items() if name != "slide"
            }
        if len(trimmed_losses) > SLIDE_DIFF:  # slide compares points SLIDE_DIFF apart
            result.suggestions["slide"] = slide(trimmed_lrs, trimmed_losses)[0]
        return result

    def trimmed(self) -> tuple[np.ndarray, np.ndarray]:
        """Curve without its first ``num_it // 10`` and last 5 points, cut at the first NaN."""
        lrs = np.asarray(self.lrs[self.num_it // 10 : -5], dtype=float)
        losses = np.asarray(self.losses[self.num_it // 10 : -5], dtype=float)
        nan = np.flatnonzero(np.isnan(losses))
        if len(nan):
            lrs, losses = lrs[: nan[0]], losses[: nan[0]]
        return lrs, losses


class SweepSampler(Sampler[list[int]]):
    """``num_it`` batches of a training loader's batch sampler as one pass: the batches of its
    epoch 0, then of its epoch 1, and so on (what a sweep spanning several epochs would see)."""

    def __init__(self, sampler: Sampler, num_it: int) -> None:
        if len(sampler) == 0:
            raise LesionSSLError("the LR finder needs at least one training batch")
        self.sampler, self.num_it = copy.copy(sampler), num_it  # a copy: the loader's own epoch stays as it is

    def __len__(self) -> int:
        return self.num_it

    def __iter__(self) -> Iterator[list[int]]:
        batches = (batch for epoch in itertools.count() for batch in self._epoch(epoch))
        return itertools.islice(batches, self.num_it)

    def _epoch(self, epoch: int) -> Iterator[list[int]]:
        self.sampler.set_epoch(epoch)
        return iter(self.sampler)


def sweep_loader(loader: DataLoader, num_it: int) -> DataLoader:
    """The loader of an LR sweep: ``num_it`` batches of ``loader`` (whose sampler yields whole
    batches and has ``set_epoch``) in one pass."""
    return DataLoader(
        loader.dataset,
        batch_size=None,
        sampler=SweepSampler(loader.sampler, num_it),
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        generator=loader.generator,
    )


class LRFinderCallback(L.Callback):
    """Drives an LR sweep inside a Lightning ``fit`` and stops it on divergence or after ``num_it``.

    The training step must return the batch loss (a tensor or ``{"loss": tensor}``). The sweep
    shows as one progress line of its own, not as an epoch (``own_progress``).
    """

    own_progress = True

    def __init__(
        self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True, beta: float = 0.98
    ) -> None:
        self.start_lr, self.end_lr, self.num_it, self.stop_div, self.beta = start_lr, end_lr, num_it, stop_div, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._iteration, self._average, self._best = 0, 0.0, math.inf
        self._started = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            stopped = " (stopped: the loss diverged)" if self._iteration < self.num_it else ""
            console.print(
                f"LR finder: {self._iteration} iterations{stopped} ({time.monotonic() - self._started:.0f} s)",
                markup=False,
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        lr = exp_lr(self.start_lr, self.end_lr, self._iteration / self.num_it)
        for optimizer in trainer.optimizers:
            set_hyperparameters(optimizer, lr)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._iteration += 1
        self._average = self.beta * self._average + (1 - self.beta) * float(loss.detach().float().mean())
        smoothed = self._average / (1 - self.beta**self._iteration)
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        diverged = self.stop_div and (smoothed > 4 * self._best or math.isnan(smoothed))
        if diverged or self._iteration >= self.num_it:
            trainer.should_stop = True

    def result(self) -> LRFinderResult:
        return LRFinderResult.from_curve(self.lrs, self.losses, self.num_it)


def run_lr_finder(
    fit: Callable[[list[L.Callback], int, DataLoader], None], module: L.LightningModule, data: DataLoader, **kwargs
) -> LRFinderResult:
    """Run an LR sweep through ``fit(callbacks, max_epochs, loader)`` and restore the module afterwards.

    Args:
        fit: Runs a Lightning fit of ``module`` with the given callbacks, epoch count and training
            loader; the module must keep one optimiser object across fits (``persistent_optimizer``).
        module: Its state dict (weights and BN buffers) and optimiser state are restored.
        data: The training loader; the sweep reads ``num_it`` of its batches in one pass.
    """
    finder = LRFinderCallback(**kwargs)
    model_state = copy.deepcopy(module.state_dict())
    optimizer = module.persistent_optimizer()
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    try:
        fit([finder], 1, sweep_loader(data, finder.num_it))
    finally:
        module.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        optimizer.zero_grad(set_to_none=True)
    return finder.result()
