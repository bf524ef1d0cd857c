"""The 1cycle policy with fastai ``fit_one_cycle`` semantics (Smith 2018; fastai ``schedule.py``).

Per iteration ``i`` of ``T``, with ``pos = i / T``: for ``pos < pct_start`` the LR rises from
``lr_max / div`` to ``lr_max`` by a cosine and momentum (SGD) or Adam's beta1 falls from
``moms[0]`` to ``moms[1]``; afterwards the LR anneals by a cosine to ``lr_max / div_final``
while momentum returns to ``moms[2]``. PyTorch's ``OneCycleLR`` has other defaults
(pct_start 0.3, end LR relative to the start LR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch


def cos_anneal(start: float, end: float, pos: float) -> float:
    """fastai ``SchedCos``: ``start`` at pos 0, ``end`` at pos 1, cosine in between."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


@dataclass(frozen=True)
class OneCycle:
    """Closed-form 1cycle schedule over ``total_steps`` iterations."""

    lr_max: float
    total_steps: int
    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)

    def _phase(self, step: int) -> tuple[int, float]:
        pos = step / self.total_steps
        if pos < self.pct_start:
            return 0, pos / self.pct_start
        return 1, (pos - self.pct_start) / (1 - self.pct_start)

    def lr(self, step: int) -> float:
        phase, pos = self._phase(step)
        if phase == 0:
            return cos_anneal(self.lr_max / self.div, self.lr_max, pos)
        return cos_anneal(self.lr_max, self.lr_max / self.div_final, pos)

    def momentum(self, step: int) -> float:
        phase, pos = self._phase(step)
        return cos_anneal(self.moms[phase], self.moms[phase + 1], pos)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, momentum: float | None = None) -> None:
    """Set LR (and momentum / Adam beta1) on every parameter group; a group's ``lr_scale`` (a
    discriminative LR, e.g. a slower encoder under a fresh projector) multiplies its LR."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if momentum is None:
            continue
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = momentum


class OneCycleCallback(L.Callback):
    """Applies a :class:`OneCycle` before every training batch and records what was applied."""

    def __init__(self, schedule: OneCycle) -> None:
        self.schedule = schedule
        self.history: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # global_step is restored on resume, so the schedule continues where it stopped.
        step = min(trainer.global_step, self.schedule.total_steps - 1)
        lr, momentum = self.schedule.lr(step), self.schedule.momentum(step)
        for optimizer in trainer.optimizers:
            set_hyperparameters(optimizer, lr, momentum)
        self.history.append({"step": step, "epoch": trainer.current_epoch, "lr": lr, "momentum": momentum})

    def state_dict(self) -> dict:
        return {"history": self.history}  # in the epoch checkpoint: a resumed run's schedule.csv is whole

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])


@dataclass(frozen=True)
class WarmupCosine:
    """The official Barlow Twins schedule: linear warm-up, then cosine to ``final_ratio`` x base.

    Returns a factor applied to each parameter group's ``base_lr``.
    """

    total_steps: int
    warmup_steps: int
    final_ratio: float = 0.001

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        q = 0.5 * (1 + math.cos(math.pi * progress))
        return q + self.final_ratio * (1 - q)


class WarmupCosineCallback(L.Callback):
    """Applies :class:`WarmupCosine` per step, scaling every group's own ``base_lr``."""

    def __init__(self, schedule: WarmupCosine) -> None:
        self.schedule = schedule
        self.history: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        factor = self.schedule.factor(min(trainer.global_step, self.schedule.total_steps - 1))
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
        self.history.append(
            {
                "step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
                "momentum": float("nan"),
            }
        )
