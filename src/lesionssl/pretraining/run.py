"""``lesionssl pretrain``: a self-supervised method on the unlabelled pool, resumable, exported as a backbone.

Two optimisers, chosen by ``optimizer`` (the ``recipe`` presets set it):

* ``adam`` (the seed's fastai Adam; recipes ``small-data`` and ``seed``): optional
  projector-only epoch(s) with the encoder frozen (fastai freeze), unfreeze, a fixed LR or the
  LR finder (valley), then ``epochs`` of 1cycle.
* ``lars`` (Zbontar et al.; recipe ``official``): LARS (biases and BN excluded from weight
  decay and adaptation, with their own LR), LRs scaled by batch/256, linear warm-up then cosine
  to 0.001 x base.

Outputs in ``out``:

* ``backbone.safetensors`` / ``backbone.pth`` - torchvision key names, no ``fc``;
* ``backbone.json`` - architecture, preprocessing, pool mode (inductive / transductive), source;
* ``history.csv`` - the loss and the method's terms per epoch, and the monitors;
* ``config.yaml`` - the resolved configuration (seed, method hyperparameters, found LR);
* ``checkpoints/last.ckpt`` - full training state each epoch, for ``--resume``.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_only
from safetensors.torch import save_file

from lesionssl.augment.batch import EvalView, Views, two_view_specs
from lesionssl.augment.views import Preprocessing
from lesionssl.config import PretrainConfig, to_yaml
from lesionssl.data.colour import mismatch as colour_mismatch
from lesionssl.data.loaders import eval_loader, pretrain_loader
from lesionssl.data.sources import read_sources
from lesionssl.data.split import SITE_POOL, pool_rows, read_manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine.callbacks import (
    EpochCheckpoint,
    EpochHistory,
    EpochSeed,
    NonFiniteGuard,
    Stopwatch,
    epoch_seed,
    resumed_epoch,
)
from lesionssl.engine.modules import set_frozen
from lesionssl.engine.stages import LR_FINDER_EPOCH, Stages
from lesionssl.engine.trainer import log_final, make_loggers, make_trainer, uses_cuda
from lesionssl.engine.transfer import choose_lr, head_epochs, one_cycle_schedule
from lesionssl.environment import run_environment
from lesionssl.errors import LesionSSLError
from lesionssl.figures import plot_pretrain_history
from lesionssl.io import atomic_write, save_torch, write_csv, write_json, write_text
from lesionssl.layout import BACKBONE_PTH, BACKBONE_WEIGHTS, CONFIG, ENVIRONMENT, HISTORY, PRETRAIN_STAGE
from lesionssl.models.backbones import build_backbone, read_projector_state, resolve_preprocessing
from lesionssl.models.heads import ProjectionHead
from lesionssl.optim.lars import LARS, lars_param_groups
from lesionssl.optim.one_cycle import WarmupCosine, WarmupCosineCallback
from lesionssl.pretraining.methods import build_method
from lesionssl.pretraining.module import SelfSupervisedModule
from lesionssl.pretraining.monitor import PretrainMonitor
from lesionssl.progress import console, run_log
from lesionssl.records import BackboneRecord

#: The constant LR of projector-only epochs (fastai's default, as the seed's ``learn.fit(1)``).
PROJECTOR_WARMUP_LR = 1e-3


PROBE_IMAGES = 512


def _pool(config: PretrainConfig) -> tuple[pd.DataFrame, np.ndarray, str, list[str]]:
    """The whole table (for the shared store, with a ``row`` column), the pool's rows, the pool
    mode and the classes."""
    if config.manifest is not None:
        manifest = read_manifest(config.manifest, data_root=config.data_root)
        table = manifest.table.assign(row=np.arange(len(manifest.table)))
        rows = pool_rows(table, config.site_pool)
        if left := int(table["pretrain"].sum()) - len(rows):
            console.print(f"site_pool: exclude: {left} images of the held-out site stay out of the pool", markup=False)
        return table, rows, manifest.pool, manifest.classes
    if not config.data:
        raise LesionSSLError("pretrain needs --manifest MANIFEST or --data PATH")
    table = read_sources(config.data).assign(split="unlabelled")
    return table.assign(row=np.arange(len(table))), np.arange(len(table)), "all-images (no split given)", []


def _positive_groups(config: PretrainConfig, table: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The group of every pool row for lesion positives (None for self-pairs), and how many pool
    images have another image of their lesion in the pool (the cross-image pairs of an epoch)."""
    if config.positives == "self":
        return None, 0
    column = "group" if "group" in table else "lesion_id"
    groups = table[column].iloc[rows].astype(str).to_numpy() if column in table else np.array([])
    groups = (
        np.where((groups == "") | (groups == "nan"), [f"image:{r}" for r in rows], groups)
        if len(groups)
        else np.array([f"image:{r}" for r in rows])
    )
    sizes = pd.Series(groups).map(pd.Series(groups).value_counts()).to_numpy()
    cross = int((sizes > 1).sum())
    if cross == 0:
        console.print(
            "positives: lesion, but no lesion has two images in the pool: every pair is two views of one image",
            markup=False,
        )
    return groups, cross


def _monitor(
    config: PretrainConfig,
    images: np.ndarray,
    table: pd.DataFrame,
    rows: np.ndarray,
    classes: list[str],
    preprocessing: Preprocessing,
) -> PretrainMonitor:
    """Collapse indicators on a fixed sample of the pool; kNN accuracy when train and val splits exist."""
    probe_rows = np.random.default_rng(config.seed).permutation(rows)[:PROBE_IMAGES]
    batch = config.batch_size

    def load(part: pd.DataFrame):
        return eval_loader(images, part, classes, batch, config.runtime.num_workers)

    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    knn = (load(train), load(val)) if len(train) and len(val) else (None, None)
    return PretrainMonitor(
        EvalView(config.image_size, preprocessing), load(table.iloc[np.sort(probe_rows)]), *knn, k=config.knn_k
    )


def _optimizer_factory(config: PretrainConfig):
    """None (fastai Adam) for ``adam``; LARS with the official exclusions for ``lars``."""
    if config.optimizer == "adam":
        return None
    scale = config.batch_size / 256  # the official LR scaling

    def build(module: torch.nn.Module) -> LARS:
        groups = lars_param_groups(module, config.lr_weights * scale, config.lr_biases * scale)
        return LARS(
            groups,
            lr=config.lr_weights * scale,
            weight_decay=config.resolved_weight_decay,
            momentum=config.lars_momentum,
            eta=config.lars_eta,
        )

    return build


def load_projector(projector: ProjectionHead, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint's projector strictly (layer layout and widths must match)."""
    if not state:
        raise LesionSSLError(f"{source} has no projector (projector.* keys); use projector_init: fresh")
    expected = projector.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        widths = [v.shape[0] for k, v in sorted(state.items()) if k.endswith("weight") and v.ndim == 2]
        raise LesionSSLError(
            f"the projector in {source} does not match projector {projector.widths}: its linear layers have widths {widths}"
        )
    projector.load_state_dict(state)


def _backbone_state(module: SelfSupervisedModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.backbone.state_dict().items()}


def export_backbone(module: SelfSupervisedModule, out: Path, record: BackboneRecord) -> Path:
    """Write the backbone with torchvision / timm key names as safetensors and ``.pth``, and its record."""
    state = _backbone_state(module)
    target = out / BACKBONE_WEIGHTS
    # The safetensors file last: its presence marks a finished run whose record is already there.
    record.write(target.with_suffix(".json"))
    save_torch(out / BACKBONE_PTH, state)
    atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return target


class Snapshots(L.Callback):
    """Exports the backbone every ``every`` epochs to ``snapshots/epoch-<N>.safetensors`` (with
    its ``.json``), so feature quality can be measured against pretraining epochs."""

    def __init__(self, folder: Path, every: int, record: BackboneRecord) -> None:
        self.folder, self.every, self.record = folder, every, record

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every or not trainer.is_global_zero:
            return
        target = self.folder / f"epoch-{epoch:04d}.safetensors"
        state = _backbone_state(pl_module)
        atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        replace(self.record, snapshot_epoch=epoch).write(target.with_suffix(".json"))


def pretrain(config: PretrainConfig) -> Path:
    """Run self-supervised pretraining; return the exported backbone file."""
    with ExitStack() as log:  # the run's log.txt, from the moment its folder exists
        out = Path(config.out)
        last = out / "checkpoints" / "last.ckpt"
        if (out / BACKBONE_WEIGHTS).is_file():
            if not config.resume:
                raise LesionSSLError(
                    f"{out} already holds a finished pretraining run; choose another --out or pass --resume to keep it"
                )
            console.print(f"{out} is finished; nothing to do", markup=False)
            return out / BACKBONE_WEIGHTS
        if not config.resume and last.exists():
            raise LesionSSLError(
                f"{out} holds an interrupted run; pass --resume to continue it or choose another --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        log.enter_context(run_log(out))
        stopwatch = Stopwatch()
        if config.bn_statistics == "frozen":  # on purpose: Lightning would warn of the encoder's eval-mode BatchNorms
            log.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        L.seed_everything(config.seed, workers=True, verbose=False)

        table, rows, pool, classes = _pool(config)
        site_images = int((table["split"].to_numpy()[rows] == SITE_POOL).sum())
        if len(rows) < 2:
            raise LesionSSLError(f"the pretraining pool has {len(rows)} images; need at least 2")
        if config.batch_size > len(rows):  # every batch is a full one (the loss needs a batch's statistics)
            raise LesionSSLError(
                f"batch_size {config.batch_size} is larger than the pretraining pool ({len(rows)} images); lower --batch-size"
            )
        method = build_method(config)  # a wrong method hyperparameter or --init fails before any decoding
        backbone, init_info = build_backbone(config.backbone, config.init, config.image_size)
        if warning := colour_mismatch(init_info, config.colour):
            console.print(warning, markup=False)
        images = build_store(
            table["path"].tolist(),
            stored_size(config.image_size, config.store_margin),
            "decoding images",
            config.colour,
        )
        groups, cross_image = _positive_groups(config, table, rows)
        data = pretrain_loader(
            images,
            rows,
            config.batch_size,
            config.runtime.num_workers,
            config.seed,
            pin_memory=uses_cuda(config.runtime),
            groups=groups,
        )

        preprocessing = resolve_preprocessing(config.normalize, init_info)
        views = Views(
            method.view_specs(
                two_view_specs(
                    config.augmentation_parameters, config.image_size, preprocessing, tuple(config.extra_augmentations)
                )
            )
        )
        warmup_epochs = config.resolved_projector_warmup_epochs
        module = SelfSupervisedModule(
            backbone,
            method,
            config.resolved_weight_decay,
            config.runtime.channels_last,
            _optimizer_factory(config),
            views,
            encoder_lr_scale=config.encoder_lr_scale,
            frozen_bn_statistics=config.bn_statistics == "frozen",
            l2sp=config.l2sp,
        )
        if config.projector_init == "checkpoint":
            load_projector(method.projector, read_projector_state(config.init, config.backbone), config.init)
            method.update_momentum(backbone, progress=0.0, tau=0.0)  # a target starts as its online module
        init_info["projector"] = config.projector_init
        history = out / HISTORY

        def fit(callbacks: list[L.Callback], epochs: int, loader=None, ckpt: str | None = None, logger=False) -> None:
            trainer = make_trainer(config.runtime, epochs, callbacks, logger=logger, default_root_dir=out)
            trainer.fit(module, data if loader is None else loader, ckpt_path=ckpt)

        stages = Stages(out / "checkpoints", config.resume, stopwatch=stopwatch)
        stages.restore(module)
        monitor = _monitor(config, images, table, rows, classes, preprocessing)
        if config.init != "random" and "start_knn" not in stages:
            # The starting point's kNN accuracy: a continuation must not lose what the weights gave.
            module.eval()
            start = monitor.knn(module)
            module.train()
            stages.save(module, start_knn=start)
            if start is not None:
                write_csv(history, pd.DataFrame([{"stage": "start", "epoch": 0, "knn_accuracy": start}]))
                console.print(
                    f"kNN accuracy of {config.init} on the validation split, before pretraining: {start:.4f}",
                    markup=False,
                )

        if warmup_epochs and not stages.get("warmup_done"):
            console.print(f"projector warm-up: {warmup_epochs} epoch(s), encoder frozen")
            head_epochs(
                fit,
                module,
                lambda: set_frozen(module.backbone, True),
                lambda: set_frozen(module.backbone, False),
                warmup_epochs,
                PROJECTOR_WARMUP_LR,
                [EpochSeed(config.seed), NonFiniteGuard(out), EpochHistory(history, "warmup")],
            )
            stages.save(module, warmup_done=True)

        if "lr" not in stages:
            if config.optimizer == "lars":
                stages.save(module, lr=config.lr_weights * config.batch_size / 256)
            else:
                L.seed_everything(epoch_seed(config.seed, LR_FINDER_EPOCH), verbose=False)
                choice = choose_lr(fit, module, config.lr, data)
                stages.save(module, lr=choice.lr, lr_finder=asdict(choice.finder) if choice.finder else None)

        resolved = {
            "recipe": config.recipe,
            "method": config.method,
            "method_kwargs": method.resolved(),
            "positives": config.positives,
            "cross_image_pairs_per_epoch": cross_image,
            "augmentation": asdict(config.augmentation_parameters),
            "lr": stages["lr"],
            "encoder_lr": stages["lr"] * config.encoder_lr_scale,
            "bn_statistics": config.bn_statistics,
            "l2sp": config.l2sp,
            "weight_decay": config.resolved_weight_decay,
            "projector_warmup_epochs": warmup_epochs,
            "pool": pool,
            "pool_images": int(len(rows)),
            "site_images": site_images,
            "init": init_info,
        }
        total_steps = config.epochs * len(data)
        if config.optimizer == "lars":
            scale = config.batch_size / 256
            resolved |= {
                "optimizer": "LARS",
                "lr_weights_scaled": config.lr_weights * scale,
                "lr_biases_scaled": config.lr_biases * scale,
                "warmup_epochs": config.resolved_warmup_epochs,
            }
            schedule: L.Callback = WarmupCosineCallback(
                WarmupCosine(total_steps, config.resolved_warmup_epochs * len(data))
            )
        else:
            resolved |= {
                "optimizer": "Adam(0.9, 0.99, eps 1e-5), decoupled weight decay",
                "schedule": "1cycle (fastai)",
            }
            schedule = one_cycle_schedule(stages["lr"], total_steps)
        write_text(out / CONFIG, to_yaml(config, {"method_kwargs": method.resolved(), "resolved": resolved}))
        write_json(out / ENVIRONMENT, run_environment(config.seed))
        callbacks = [
            EpochSeed(config.seed),
            NonFiniteGuard(last),
            schedule,
            monitor,
            EpochHistory(history, PRETRAIN_STAGE),
            stopwatch,
            EpochCheckpoint(last),
        ]
        record = BackboneRecord(
            architecture=config.backbone,
            image_size=config.image_size,
            normalize=config.normalize,
            preprocessing=preprocessing,
            pool=pool,
            pool_images=int(len(rows)),
            site_images=site_images,
            init=init_info,
            epochs=config.epochs,
            recipe=config.recipe,
            method=config.method,
            method_kwargs=method.resolved(),
            positives=config.positives,
            cross_image_pairs_per_epoch=cross_image,
            lr=stages["lr"],
            colour_constancy=config.colour_constancy,
            colour_constancy_p=config.colour_constancy_p,
            encoder_lr_scale=config.encoder_lr_scale,
            bn_statistics=config.bn_statistics,
            l2sp=config.l2sp,
        )
        if config.snapshot_every:
            callbacks.insert(-1, Snapshots(out / "snapshots", config.snapshot_every, record))
        loggers = (
            make_loggers(
                config.tracking,
                out,
                f"pretrain-{out.name}",
                {k: v for k, v in resolved.items() if isinstance(v, (int, float, str))},
            )
            if rank_zero_only.rank == 0
            else []
        )
        resuming = config.resume and last.exists()
        if resuming:
            data.sampler.set_epoch(resumed_epoch(last))
        fit(callbacks, config.epochs, ckpt=str(last) if resuming else None, logger=loggers or False)
        log_final(loggers, {})
        plot_pretrain_history(pd.read_csv(history), out / "history.png")
        losses = _history_losses(history)
        if rank_zero_only.rank == 0:  # under DDP every process holds the same weights
            export_backbone(
                module,
                out,
                replace(record, final_loss=losses[-1] if losses else None, seconds=round(stopwatch.seconds, 1)),
            )
        return out / BACKBONE_WEIGHTS


def _history_losses(path: Path) -> list[float]:
    table = pd.read_csv(path)
    return [float(x) for x in table.loc[table["stage"] == PRETRAIN_STAGE, "loss"]]
