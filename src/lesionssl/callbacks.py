"""Lightning callbacks shared by the stages: per-epoch history written as CSV."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd

from lesionssl.io import atomic_write


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
        atomic_write(self.path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
