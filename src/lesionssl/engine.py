"""The training engine shared by all stages: Lightning trainers, persistent Adam, freezing.

fastai keeps one optimiser across the head epoch, the LR finder and ``fit_one_cycle`` (Adam's
moments carry over); :class:`PersistentAdamModule` reproduces that on top of Lightning, where
every ``fit`` would otherwise build a fresh optimiser.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from torch import nn

from lesionssl.config import RuntimeConfig, TrackingConfig

#: fastai ``Adam`` defaults used by the seed (wd is decoupled, as fastai's ``true_wd``).
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-5

# Lightning's banner lines (GPU available, tips) drown the progress we print ourselves.
for _name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*defined a `validation_step` but have no `val_dataloader`.*")


def fastai_adam(module: nn.Module, weight_decay: float) -> torch.optim.Optimizer:
    """fastai's default optimiser: Adam(0.9, 0.99, eps 1e-5) with decoupled weight decay."""
    return torch.optim.AdamW(module.parameters(), lr=1e-3, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay)


class PersistentAdamModule(L.LightningModule):
    """A LightningModule whose optimiser (fastai Adam unless a factory is given) survives across
    successive ``Trainer.fit`` calls."""

    def __init__(self, weight_decay: float = 0.0, optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None) -> None:
        super().__init__()
        self.weight_decay = weight_decay
        self.optimizer_factory = optimizer_factory
        self._optimizer: torch.optim.Optimizer | None = None

    def persistent_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            factory = self.optimizer_factory or (lambda module: fastai_adam(module, self.weight_decay))
            self._optimizer = factory(self)
        return self._optimizer

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.persistent_optimizer()


def set_frozen(module: nn.Module, frozen: bool, mode: Literal["fastai", "linear-probe"] = "fastai") -> None:
    """Freeze or unfreeze a backbone.

    ``fastai`` mode (the seed's ``learn.freeze()``) keeps BatchNorm affine parameters trainable;
    ``linear-probe`` freezes everything (the caller keeps the module in eval mode as well).
    """
    for sub in module.modules():
        keep_trainable = mode == "fastai" and isinstance(sub, nn.modules.batchnorm._BatchNorm)
        for param in sub.parameters(recurse=False):
            param.requires_grad_(not frozen or keep_trainable)


def make_loggers(tracking: TrackingConfig, out: Path, run_name: str, params: dict) -> list[Logger]:
    """TensorBoard (``out/tensorboard``) and MLflow loggers for a run's main training phase."""
    loggers: list[Logger] = []
    if tracking.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""))
    if tracking.mlflow:
        uri = tracking.mlflow_uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        loggers.append(MLFlowLogger(experiment_name=tracking.experiment, tracking_uri=uri, run_name=run_name))
    for logger in loggers:
        logger.log_hyperparams(params)
    return loggers


def log_final(loggers: list[Logger], metrics: dict[str, float]) -> None:
    """Record final (test) numbers in the trackers and close them."""
    for logger in loggers:
        logger.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
        logger.finalize("success")


def uses_cuda(runtime: RuntimeConfig) -> bool:
    """Whether a trainer built from ``runtime`` will train on CUDA GPUs."""
    return runtime.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def make_trainer(runtime: RuntimeConfig, max_epochs: int, callbacks: list[L.Callback] | None = None, logger=False, default_root_dir: Path | None = None, validate: bool = False) -> L.Trainer:
    """A Lightning trainer with lesionssl's defaults (progress only on terminals, no sanity run)."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=runtime.accelerator,
        devices=runtime.devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        precision=runtime.precision,
        sync_batchnorm=runtime.sync_batchnorm,
        callbacks=callbacks or [],
        logger=logger,
        default_root_dir=default_root_dir,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks or []),
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        log_every_n_steps=1,
        # Training samplers shard batches across processes themselves (EpochBatchSampler), and
        # evaluation loaders are read whole on every process.
        use_distributed_sampler=False,
    )
