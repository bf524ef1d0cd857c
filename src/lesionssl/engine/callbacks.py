"""Lightning callbacks shared by the stages: per-epoch history and log line, per-epoch seeding,
the epoch checkpoint and the run's stopwatch, NaN guard."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from lesionssl.errors import LesionSSLError
from lesionssl.io import write_csv
from lesionssl.progress import console, log_line


class EpochLine(L.Callback):
    """One line per finished epoch with its logged metrics and duration: what logs that are not
    terminals (SLURM, nohup) get instead of a progress bar."""

    def __init__(self, on_screen: bool = True) -> None:
        self.started, self.on_screen = time.monotonic(), on_screen

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A fit that is not training epochs (the LR finder's sweep) prints its own line.
        if trainer.is_global_zero and not any(getattr(c, "own_progress", False) for c in trainer.callbacks):
            metrics = "  ".join(f"{k} {float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items()))
            line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {metrics}  ({time.monotonic() - self.started:.0f} s)"
            if self.on_screen:
                console.print(line, markup=False)
            else:  # a terminal shows the progress bar; the run's log.txt still gets the line
                log_line(line)


class EpochProgressBar(TQDMProgressBar):
    """Lightning's terminal progress bar, showing what lesionssl logs (loss and its terms, kNN
    accuracy, effective rank, validation metrics: the last finished epoch's values) and counting
    epochs from 1; the LR finder's sweep is named as such."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        finder = any(getattr(c, "own_progress", False) for c in trainer.callbacks)
        self.train_progress_bar.set_description(
            "LR finder" if finder else f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {**items, **{k: f"{float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())}}


class EpochHistory(L.Callback):
    """Appends the epoch's logged metrics to a CSV (rows of later epochs dropped on resume)."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path, self.stage = Path(path), stage

    def _rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return pd.read_csv(self.path).to_dict("records")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            kept = [r for r in self._rows() if not (r["stage"] == self.stage and r["epoch"] >= trainer.current_epoch)]
            self._write(kept)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates before this hook, so validation metrics are in callback_metrics too.
        if not trainer.is_global_zero:
            return
        row = {"stage": self.stage, "epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self._write([*self._rows(), row])

    def _write(self, rows: list[dict]) -> None:
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        write_csv(self.path, pd.DataFrame(rows))


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch: depends only on the run seed and the epoch number."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**31)


class EpochSeed(L.Callback):
    """Reseeds torch / numpy / random at each epoch start, so augmentations of epoch k do not
    depend on what ran before: a run resumed after epoch k continues exactly as an uninterrupted one."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(epoch_seed(self.seed, trainer.current_epoch) + trainer.global_rank, verbose=False)


class NonFiniteGuard(L.Callback):
    """Stops training on a NaN / inf loss, before it reaches a checkpoint."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not torch.isfinite(loss).all():
            raise LesionSSLError(
                f"the loss became {float(loss)} at epoch {trainer.current_epoch}, batch {batch_idx}; "
                f"stopped - the last good checkpoint is {self.where} (lower the LR, or check the data)"
            )


class EpochCheckpoint(L.Callback):
    """The full training state after every epoch, to one file (written atomically by the
    trainer's checkpoint writer). Lightning 2.6's ``ModelCheckpoint(save_last=True,
    save_top_k=0)`` writes ``last.ckpt`` only when training ends, which would make a kill
    mid-run lose every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class Stopwatch(L.Callback):
    """The wall time a run's result took, summed over the processes that made it.

    A resumed process adds its own time to what the earlier ones kept: their seconds travel in
    each epoch checkpoint (Lightning saves a callback's ``state_dict``) and in ``stages.json``.
    What an interrupted process did after its last checkpoint was redone, so it is not counted."""

    def __init__(self) -> None:
        self.carried, self.started = 0.0, time.monotonic()

    @property
    def seconds(self) -> float:
        return self.carried + time.monotonic() - self.started

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.carried = float(state_dict["seconds"])


def resumed_epoch(checkpoint: Path) -> int:
    """The epoch a run resumed from an :class:`EpochCheckpoint` starts with.

    Lightning 2.6 builds the first resumed epoch's batch iterator (and prefetches from it)
    before it tells the sampler the epoch, so the caller sets the sampler's epoch itself."""
    return int(torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)["epoch"]) + 1
