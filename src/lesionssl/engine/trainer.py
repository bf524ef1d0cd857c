"""Lightning trainers and experiment loggers with lesionssl's defaults, shared by all stages."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lesionssl.config import RuntimeConfig, TrackingConfig
from lesionssl.engine.callbacks import EpochLine, EpochProgressBar
from lesionssl.errors import LesionSSLError
from lesionssl.io import save_torch

#: Lightning messages that drown the progress lesionssl prints itself (banners, tips, and
#: warnings about settings that are deliberate here).
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic")
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*defined a `validation_step` but have no `val_dataloader`.*",
)


def _quiet() -> None:
    """Applied when a trainer is made, not on import: importing lesionssl changes no global state."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file and a rename: a kill or a full disk
    during a write leaves the previous checkpoint whole (Lightning overwrites it in place)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        save_torch(Path(path), checkpoint)


def make_loggers(tracking: TrackingConfig, out: Path, run_name: str, params: dict) -> list[Logger]:
    """TensorBoard (``out/tensorboard``), MLflow and W&B loggers for a run's main training phase."""
    loggers: list[Logger] = []
    if tracking.enabled("tensorboard"):
        loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""))
    if tracking.enabled("mlflow"):
        uri = tracking.mlflow_uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        loggers.append(MLFlowLogger(experiment_name=tracking.experiment, tracking_uri=uri, run_name=run_name))
    if tracking.enabled("wandb"):
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(
            WandbLogger(project=tracking.wandb_project or tracking.experiment, name=run_name, save_dir=str(out))
        )
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


def check_runtime(runtime: RuntimeConfig) -> None:
    """Refuse, in one line naming what torch sees, an accelerator or a device count this machine
    lacks (Lightning would stop with a traceback, or start processes that fail later)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    seen = f"torch {torch.__version__} sees {gpus} CUDA GPU{'s' if gpus != 1 else ''}" + (
        "" if torch.version.cuda else " (a CPU-only build)"
    )
    if runtime.accelerator in ("gpu", "cuda") and not gpus:
        raise LesionSSLError(
            f"--runtime.accelerator {runtime.accelerator}: {seen}; use --runtime.accelerator cpu (or auto)"
        )
    if runtime.accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise LesionSSLError(
            "--runtime.accelerator mps: torch sees no Apple GPU (MPS); use --runtime.accelerator cpu (or auto)"
        )
    if isinstance(runtime.devices, int) and runtime.devices > 1:
        on_gpus = runtime.accelerator in ("gpu", "cuda") or (runtime.accelerator == "auto" and gpus)
        available = gpus if on_gpus else os.cpu_count() or 1
        if runtime.devices > available:
            what = seen if on_gpus else f"this machine has {available} CPU cores"
            raise LesionSSLError(
                f"--runtime.devices {runtime.devices}: {what}; use --runtime.devices {available} or fewer"
            )


def make_trainer(
    runtime: RuntimeConfig,
    max_epochs: int,
    callbacks: list[L.Callback] | None = None,
    logger=False,
    default_root_dir: Path | None = None,
    validate: bool = False,
) -> L.Trainer:
    """A Lightning trainer with lesionssl's defaults (a progress bar on terminals, a line per epoch
    elsewhere; no sanity run)."""
    check_runtime(runtime)
    _quiet()
    terminal = sys.stderr.isatty()
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=runtime.accelerator,
        devices=runtime.devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        precision=runtime.precision,
        sync_batchnorm=runtime.sync_batchnorm,
        callbacks=[*(callbacks or []), EpochLine(on_screen=not terminal), *([EpochProgressBar()] if terminal else [])],
        logger=logger,
        default_root_dir=default_root_dir,
        enable_checkpointing=False,  # EpochCheckpoint where a stage keeps one
        enable_progress_bar=terminal,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        log_every_n_steps=1,
        plugins=[AtomicCheckpointIO()],
        # Training samplers shard batches across processes themselves (EpochBatchSampler), and
        # evaluation loaders are read whole on every process.
        use_distributed_sampler=False,
    )
