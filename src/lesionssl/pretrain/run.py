"""``lesionssl pretrain``: Barlow Twins on the unlabelled pool, resumable, exported as a backbone.

Recipe (the seed's): optional projector-only epoch(s) with the encoder frozen (fastai freeze),
unfreeze, LR finder (valley), then ``epochs`` of 1cycle with Adam. Outputs in ``out``:

* ``backbone.safetensors`` / ``backbone.pth`` - torchvision key names, no ``fc``;
* ``backbone.json`` - architecture, preprocessing, pool mode (inductive / transductive), source;
* ``history.csv`` - loss, invariance and redundancy terms per epoch;
* ``config.yaml`` - the resolved configuration (seed, lambda, found LR);
* ``checkpoints/last.ckpt`` - full training state each epoch, for ``--resume``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import save_file

from lesionssl.augment.views import bt_views
from lesionssl.callbacks import EpochHistory
from lesionssl.config import PretrainConfig, to_yaml
from lesionssl.data.loaders import two_view_loader
from lesionssl.data.sources import read_sources
from lesionssl.data.split import read_manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine import make_trainer, set_frozen
from lesionssl.errors import LesionSSLError
from lesionssl.io import atomic_write, write_json, write_text
from lesionssl.models.backbones import build_backbone, feature_dim
from lesionssl.models.heads import BarlowTwinsProjector
from lesionssl.optim.lr_finder import run_lr_finder
from lesionssl.optim.one_cycle import OneCycle, OneCycleCallback, set_hyperparameters
from lesionssl.pretrain.module import BarlowTwinsModule
from lesionssl.progress import console

BACKBONE_FILE = "backbone.safetensors"


def _pool(config: PretrainConfig) -> tuple[list[str], np.ndarray, str]:
    """All paths of the dataset (for the shared store), the pool's rows, and the pool mode."""
    if config.manifest is not None:
        manifest = read_manifest(config.manifest)
        rows = np.flatnonzero(manifest.table["pretrain"].to_numpy() == 1)
        return manifest.table["path"].tolist(), rows, manifest.pool
    if not config.data:
        raise LesionSSLError("pretrain needs --split MANIFEST or --data PATH")
    table = read_sources(config.data)
    return table["path"].tolist(), np.arange(len(table)), "all-images (no split given)"


def _state_file(out: Path) -> Path:
    return out / "checkpoints" / "stages.json"


def _save_stage(out: Path, module: BarlowTwinsModule, stages: dict[str, Any]) -> None:
    """Persist weights + optimiser after a stage that Lightning's last.ckpt does not cover."""
    payload = {"model": module.state_dict(), "optimizer": module.persistent_optimizer().state_dict()}
    atomic_write(out / "checkpoints" / "stages.pt", lambda tmp: torch.save(payload, tmp))
    write_json(_state_file(out), stages)


def export_backbone(module: BarlowTwinsModule, out: Path, metadata: dict[str, Any]) -> Path:
    """Write the backbone with torchvision key names as safetensors and ``.pth``, plus metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.backbone.state_dict().items()}
    target = out / BACKBONE_FILE
    atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write(out / "backbone.pth", lambda tmp: torch.save(state, tmp))
    write_json(target.with_suffix(".json"), metadata)
    return target


def pretrain(config: PretrainConfig) -> Path:
    """Run Barlow Twins pretraining; return the exported backbone file."""
    out = Path(config.out)
    last = out / "checkpoints" / "last.ckpt"
    if (out / BACKBONE_FILE).is_file() and not config.resume:
        raise LesionSSLError(f"{out} already holds a finished pretraining run; choose another --out or pass --resume")
    if not config.resume and last.exists():
        raise LesionSSLError(f"{out} holds an interrupted run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)

    paths, rows, pool = _pool(config)
    if len(rows) < 2:
        raise LesionSSLError(f"the pretraining pool has {len(rows)} images; need at least 2")
    images = build_store(paths, stored_size(config.image_size), "decoding images")
    views = bt_views(config.augmentation, config.image_size, config.normalize, tuple(config.extra_augmentations))
    data = two_view_loader(images, rows, views, config.batch_size, config.runtime.num_workers, config.seed)

    backbone, init_info = build_backbone(config.backbone, config.init)
    projector = BarlowTwinsProjector(feature_dim(backbone), config.projector)
    module = BarlowTwinsModule(backbone, projector, config.resolved_lambd, config.weight_decay, config.runtime.channels_last)
    history = out / "history.csv"

    def fit(callbacks: list[L.Callback], epochs: int, ckpt: str | None = None) -> None:
        trainer = make_trainer(config.runtime, epochs, callbacks, default_root_dir=out)
        trainer.fit(module, data, ckpt_path=ckpt)

    stages: dict[str, Any] = json.loads(_state_file(out).read_text()) if config.resume and _state_file(out).is_file() else {}
    if stages:
        saved = torch.load(out / "checkpoints" / "stages.pt", map_location="cpu", weights_only=True)
        module.load_state_dict(saved["model"])
        module.persistent_optimizer().load_state_dict(saved["optimizer"])
    started = time.time()

    if config.projector_warmup_epochs and not stages.get("warmup_done"):
        console.print(f"projector warm-up: {config.projector_warmup_epochs} epoch(s), encoder frozen")
        set_frozen(module.backbone, True)
        set_hyperparameters(module.persistent_optimizer(), 1e-3)
        fit([EpochHistory(history, "warmup")], config.projector_warmup_epochs)
        set_frozen(module.backbone, False)
        stages["warmup_done"] = True
        _save_stage(out, module, stages)

    if "lr" not in stages:
        if config.lr == "find":
            result = run_lr_finder(fit, module, len(data))
            stages["lr"] = result.suggestions.get("valley", 1e-3)
            stages["lr_finder"] = {"lrs": result.lrs, "losses": result.losses, "suggestions": result.suggestions}
            console.print(f"LR finder (valley): {stages['lr']:.3g}")
        else:
            stages["lr"] = config.lr
        _save_stage(out, module, stages)

    resolved = {"resolved": {"lambd": config.resolved_lambd, "lr": stages["lr"], "pool": pool, "pool_images": int(len(rows)), "init": init_info}}
    write_text(out / "config.yaml", to_yaml(config, resolved))
    schedule = OneCycle(stages["lr"], config.epochs * len(data))
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0, every_n_epochs=1)
    one_cycle = OneCycleCallback(schedule)
    fit([one_cycle, checkpoint, EpochHistory(history, "bt")], config.epochs, ckpt=str(last) if config.resume and last.exists() else None)

    losses = [float(x) for x in _history_losses(history)]
    if losses and not np.isfinite(losses[-1]):
        raise LesionSSLError("the Barlow Twins loss became non-finite; lower the LR or check the data")
    metadata = {
        "format": "lesionssl-backbone/1",
        "architecture": config.backbone,
        "image_size": config.image_size,
        "normalize": config.normalize,
        "pool": pool,
        "pool_images": int(len(rows)),
        "init": init_info,
        "epochs": config.epochs,
        "lambd": config.resolved_lambd,
        "projector": config.projector,
        "lr": stages["lr"],
        "final_loss": losses[-1] if losses else None,
        "seconds": round(time.time() - started, 1),
    }
    return export_backbone(module, out, metadata)


def _history_losses(path: Path) -> list[float]:
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    return table.loc[table["stage"] == "bt", "loss"].tolist()
