"""``lesionssl finetune``: the seed's Algorithm 1 and a single, final test evaluation.

1. Freeze the encoder; train the new linear head for ``head_epochs`` at a constant ``head_lr``.
2. Unfreeze; run the LR finder (fastai semantics) and take its ``valley`` suggestion.
3. Train ``epochs`` with 1cycle (Adam beta1 cycling inversely to the LR).
4. Evaluate once on the test split. An optional ``val`` split is monitored every epoch and may
   choose the epoch (``select_on``) or stop early; nothing is ever selected on the test split,
   which is loaded only after training has finished.

Class imbalance and prior shift: ``sampling: class-balanced``, ``loss_weights: balanced`` and a
post-hoc logit adjustment to ``test_prior`` (uniform, stated, or estimated by EM on the manifest's
unlabelled images - never on test images); the run records which were used and the unadjusted
metrics next to the adjusted ones.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping

from lesionssl import __version__
from lesionssl.augment.batch import EvalView, finetune_view
from lesionssl.config import FinetuneConfig, config_hash, resolve_lr, to_yaml
from lesionssl.data.colour import mismatch as colour_mismatch
from lesionssl.data.loaders import eval_loader, train_loader
from lesionssl.data.split import Manifest, prepare_manifest, read_manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine.callbacks import EpochCheckpoint, EpochHistory, EpochSeed, Stopwatch, epoch_seed, resumed_epoch
from lesionssl.engine.stages import LR_FINDER_EPOCH, Stages
from lesionssl.engine.trainer import log_final, make_loggers, make_trainer, uses_cuda
from lesionssl.engine.transfer import choose_lr, head_epochs, one_cycle_schedule
from lesionssl.environment import run_environment
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.adabn import ADABN_SUFFIX, adapt_batchnorm, prior_warning
from lesionssl.evaluate.calibration import (
    TARGET_SENSITIVITY,
    apply_temperature,
    choose_threshold,
    fit_temperature,
    malignant_indices,
    malignant_point,
    malignant_probability,
    negative_log_likelihood,
    operating_point,
    resolve_malignant,
)
from lesionssl.evaluate.metrics import compute_metrics, expected_calibration_error, predictions_frame
from lesionssl.evaluate.prior import adjust, class_prior, em_prior
from lesionssl.evaluate.test_sets import EvaluationSet, external_sets, write_external
from lesionssl.figures import plot_confusion, plot_lr_finder, plot_reliability, plot_schedule
from lesionssl.finetuning.module import ClassifierModule, save_model
from lesionssl.io import write_csv, write_json, write_text
from lesionssl.layout import MODEL_IMAGES, RunFolder
from lesionssl.models.backbones import build_backbone, feature_dim, resolve_preprocessing
from lesionssl.optim.lr_finder import LRFinderResult
from lesionssl.optim.one_cycle import OneCycleCallback
from lesionssl.progress import console, run_log
from lesionssl.records import (
    Calibration,
    ExternalResult,
    LogitAdjustment,
    Metrics,
    ModelRecord,
    OperatingPoint,
    RunResult,
)

#: fastai ``tta`` blends the mean of the augmented views with the plain view: lerp(aug, plain, 0.25).
TTA_BETA = 0.25


def _with_rows(manifest: Manifest, split: str) -> pd.DataFrame:
    table = manifest.table.assign(row=np.arange(len(manifest.table)))
    return table[table["split"] == split].reset_index(drop=True)


def predict(
    module: ClassifierModule, config: FinetuneConfig, images: np.ndarray, table: pd.DataFrame, classes: list[str]
) -> np.ndarray:
    """Class probabilities for ``table``: the plain view, blended with ``tta`` augmented views."""
    trainer = make_trainer(config.runtime, 1)

    data = eval_loader(
        images, table, classes, config.batch_size * 2, config.runtime.num_workers, uses_cuda(config.runtime)
    )

    def run(tta: bool) -> np.ndarray:
        module.tta = tta  # augmented views (the training augmentation) instead of the plain one
        try:
            return torch.cat(trainer.predict(module, data)).numpy()
        finally:
            module.tta = False

    plain = run(tta=False)
    if config.tta == 0:
        return plain
    augmented = np.mean([run(tta=True) for _ in range(config.tta)], axis=0)
    return augmented + TTA_BETA * (plain - augmented)


class BestWeights(L.Callback):
    """Keeps the weights of the best validation epoch (validation split only, never test)."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.sign = monitor, 1.0 if mode == "min" else -1.0
        self.best, self.epoch, self.state = float("inf"), None, None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = self.sign * float(trainer.callback_metrics[self.monitor])
        if value < self.best:
            self.best, self.epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())

    def state_dict(self) -> dict:
        return {"best": self.best, "epoch": self.epoch, "state": self.state}  # a resumed run keeps its best epoch

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.epoch, self.state = state_dict["best"], state_dict["epoch"], state_dict["state"]


def _target_prior(
    config: FinetuneConfig, module: ClassifierModule, images: np.ndarray, manifest: Manifest, train_prior: np.ndarray
) -> tuple[np.ndarray | None, str]:
    """The test prior for logit adjustment, and how it was obtained."""
    classes = manifest.classes
    if config.test_prior == "train":
        return None, "none (training prior)"
    if config.test_prior == "uniform":
        return np.full(len(classes), 1 / len(classes)), "uniform"
    if config.test_prior == "pool":
        pool = _with_rows(manifest, "unlabelled")
        if pool.empty:
            raise LesionSSLError("test_prior: pool needs unlabelled images in the manifest")
        plain = FinetuneConfig.model_validate({**config.model_dump(), "tta": 0})
        return em_prior(
            predict(module, plain, images, pool, classes), train_prior
        ), f"EM estimate on {len(pool)} unlabelled images"
    given = np.array([config.test_prior.get(c, 0.0) for c in classes], dtype=float)
    if set(config.test_prior) - set(classes) or given.sum() <= 0:
        raise LesionSSLError(f"test_prior must give non-negative probabilities for the classes {classes}")
    return given / given.sum(), "stated"


@dataclass(frozen=True)
class FinishedRun:
    """What a run hands its caller's ``finish`` step just before it is marked finished: the model
    and its test predictions (``images``: the test images as stored, uint8)."""

    out: Path
    config: FinetuneConfig
    module: ClassifierModule
    images: np.ndarray
    test: pd.DataFrame
    labels: np.ndarray
    probs: np.ndarray
    result: RunResult


def finetune(config: FinetuneConfig, finish: Callable[[FinishedRun], None] | None = None) -> dict[str, Any]:
    """Run the transfer protocol; write the run folder; return the test metrics.

    ``finish`` runs before the run is marked finished (``experiment.finetune`` adds the model
    card and the Grad-CAM examples there, so this stage never imports ``deploy``)."""
    with ExitStack() as log:  # the run's log.txt, from the moment its folder exists
        if config.manifest is None and not config.data:
            raise LesionSSLError(
                "finetune needs --manifest MANIFEST (made by `lesionssl split`), or --data with a split section"
            )
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        log.enter_context(run_log(out))
        stopwatch = Stopwatch()
        L.seed_everything(config.seed, workers=True, verbose=False)
        manifest = read_manifest(
            prepare_manifest(config.manifest, config.data, config.split, out), data_root=config.data_root
        )
        classes = manifest.classes
        malignant = resolve_malignant(classes, config.malignant_classes)
        if config.malignant_classes is None and not malignant:
            console.print(
                f"no malignant classes: the classes ({', '.join(classes)}) are not ISIC 2019's; --malignant-classes CLASS sets them, for P(malignant) and an operating point",
                markup=False,
            )
        index = {c: i for i, c in enumerate(classes)}
        train, val = _with_rows(manifest, "train"), _with_rows(manifest, "val")
        if train.empty:
            raise LesionSSLError(f"{config.manifest} has no train images")
        if config.select_on != "none" and val.empty:
            raise LesionSSLError(f"select_on: {config.select_on} needs a validation split (lesionssl split --val N)")
        backbone, init_info = build_backbone(
            config.backbone, config.init, config.image_size
        )  # a wrong --init fails before any decoding
        if warning := colour_mismatch(init_info, config.colour):
            console.print(warning, markup=False)
        images = build_store(
            manifest.table["path"].tolist(),
            stored_size(config.image_size, config.store_margin),
            "decoding images",
            config.colour,
        )
        train_prior = class_prior(train["label"].map(index).to_numpy(), len(classes))
        train_data = train_loader(
            images,
            train,
            classes,
            config.batch_size,
            config.runtime.num_workers,
            config.seed,
            class_balanced=config.sampling == "class-balanced",
            pin_memory=uses_cuda(config.runtime),
        )
        val_data = (
            eval_loader(
                images, val, classes, config.batch_size * 2, config.runtime.num_workers, uses_cuda(config.runtime)
            )
            if len(val)
            else None
        )

        preprocessing = resolve_preprocessing(config.normalize, init_info)
        weights = None
        if config.loss_weights == "balanced":
            weights = torch.as_tensor(
                np.divide(1.0, len(classes) * train_prior, out=np.zeros_like(train_prior), where=train_prior > 0),
                dtype=torch.float32,
            )
        module = ClassifierModule(
            backbone,
            feature_dim(backbone),
            len(classes),
            config.weight_decay,
            config.runtime.channels_last,
            weights,
            finetune_view(config.image_size, preprocessing),
            EvalView(config.image_size, preprocessing),
        )
        history = RunFolder(out).history

        def fit(
            callbacks: list[L.Callback],
            epochs: int,
            loader=None,
            validate: bool = False,
            logger=False,
            ckpt: Path | None = None,
        ) -> None:
            trainer = make_trainer(
                config.runtime, epochs, callbacks, logger=logger, validate=validate and val_data is not None
            )
            trainer.fit(
                module, train_data if loader is None else loader, val_data if validate else None, ckpt_path=ckpt
            )

        # An interrupted run of this configuration in ``out`` continues from its last finished stage or epoch.
        stages, last = (
            Stages(out / "checkpoints", resume=True, key=config_hash(config), stopwatch=stopwatch),
            out / "checkpoints" / "last.ckpt",
        )
        if stages.values:
            console.print(f"resuming the interrupted run in {out}", markup=False)
        stages.restore(module)
        if not stages.get("head_done"):
            head_epochs(
                lambda callbacks, epochs: fit(callbacks, epochs, validate=True),
                module,
                lambda: module.freeze(config.freeze),
                module.unfreeze,
                config.head_epochs,
                config.head_lr,
                [EpochSeed(config.seed), EpochHistory(history, "head")],
            )
            stages.save(module, head_done=True)
        if "lr" not in stages:
            L.seed_everything(epoch_seed(config.seed, LR_FINDER_EPOCH), verbose=False)
            choice = choose_lr(fit, module, resolve_lr(config.lr, len(train)), train_data, config.lr_suggestion)
            stages.save(module, lr=choice.lr, lr_finder=asdict(choice.finder) if choice.finder else None)
        lr, finder = stages["lr"], LRFinderResult(**stages["lr_finder"]) if stages.get("lr_finder") else None
        one_cycle = one_cycle_schedule(lr, config.epochs * len(train_data))
        callbacks: list[L.Callback] = [EpochSeed(config.seed), one_cycle, EpochHistory(history, "one_cycle")]
        best = None
        if config.select_on != "none":
            mode = "min" if config.select_on == "val_loss" else "max"
            best = BestWeights(config.select_on, mode)
            callbacks.insert(0, best)
            if config.early_stopping_patience:
                callbacks.append(EarlyStopping(config.select_on, mode=mode, patience=config.early_stopping_patience))
        loggers = make_loggers(
            config.tracking,
            out,
            out.name,
            {
                "init": config.init,
                "seed": config.seed,
                "lr": float(lr),
                "epochs": config.epochs,
                "image_size": config.image_size,
                "backbone": config.backbone,
            },
        )
        resuming = last.is_file()
        if resuming:
            train_data.sampler.set_epoch(resumed_epoch(last))
        fit(
            [*callbacks, stopwatch, EpochCheckpoint(last)],
            config.epochs,
            validate=True,
            logger=loggers or False,
            ckpt=last if resuming else None,
        )
        if best is not None:
            module.load_state_dict(best.state)

        test = _with_rows(manifest, "test")  # first touched here, after training has finished
        if test.empty:
            raise LesionSSLError(f"{config.manifest} has no test images")
        target_prior, prior_source = _target_prior(config, module, images, manifest, train_prior)
        probs = predict(module, config, images, test, classes)
        labels = test["label"].map(index).to_numpy()
        unadjusted_probs = probs
        unadjusted = compute_metrics(labels, probs, classes)
        if target_prior is not None:
            probs = adjust(probs, train_prior, target_prior)
        metrics = compute_metrics(labels, probs, classes)
        deployment = fit_deployment(module, config, images, val, classes, labels, unadjusted_probs, malignant)
        external = {}

        def evaluate_external(model: ClassifierModule, evaluation: EvaluationSet) -> np.ndarray:
            """Score one set; return the model's own probabilities there (before any prior adjustment)."""
            raw = predict(model, config, evaluation.images, evaluation.table, classes)
            external_point = deployment.point(raw, evaluation.table["label"].map(index).to_numpy(), classes)
            external_probs = raw if target_prior is None else adjust(raw, train_prior, target_prior)
            external[evaluation.name] = ExternalResult(
                **write_external(out, evaluation, external_probs, classes), operating_point=external_point
            )
            return raw

        for evaluation in external_sets(
            manifest, images, config.external, config.image_size, config.store_margin, config.colour
        ):
            evaluate_external(module, evaluation)
            if config.adapt_bn:  # the same model with the site's own BatchNorm statistics, as `predict --adapt-bn`
                adapted = copy.deepcopy(module)
                adapt_batchnorm(adapted, evaluation.images, evaluation.table, classes, config.batch_size)
                adapted_probs = evaluate_external(adapted, replace(evaluation, name=evaluation.name + ADABN_SUFFIX))
                if warning := prior_warning(adapted_probs, train_prior, classes):
                    console.print(f"{evaluation.name}: {warning}", markup=False)
        pool = init_info.get("pretraining", {}).get("pool")
        result = RunResult(
            metrics=Metrics.from_dict(metrics),
            protocol="finetune",
            init=config.init,
            seed=config.seed,
            lr=float(lr),
            lr_setting=resolve_lr(config.lr, len(train)),
            preprocessing=preprocessing,
            pretraining_pool=pool,
            transductive=pool == "transductive",
            train_images=int(len(train)),
            test_images=int(len(test)),
            selected_epoch=best.epoch if best else None,
            budget_per_class=int(train["label"].value_counts().max()),
            external=external,
            imbalance={"sampling": config.sampling, "loss_weights": config.loss_weights},
            logit_adjustment=LogitAdjustment(
                target=prior_source,
                train_prior=dict(zip(classes, train_prior.round(6).tolist())),
                test_prior=dict(zip(classes, target_prior.round(6).tolist())) if target_prior is not None else None,
                unadjusted={k: unadjusted[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")},
            ),
            calibration=Calibration(**deployment.calibration),
            operating_point=OperatingPoint(**deployment.operating_point),
            lesionssl_version=__version__,
            seconds=round(stopwatch.seconds, 1),
        )
        log_final(
            loggers,
            {
                f"test_{k}": metrics[k]
                for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auroc", "ece")
            },
        )
        record = ModelRecord(
            architecture=config.backbone,
            classes=classes,
            image_size=config.image_size,
            store_margin=config.store_margin,
            preprocessing=preprocessing,
            train_prior=train_prior.tolist(),
            tta=config.tta,
            temperature=deployment.temperature,
            malignant_classes=malignant,
            threshold=deployment.threshold,
            target_sensitivity=TARGET_SENSITIVITY,
            init=config.init,
            seed=config.seed,
            colour_constancy=config.colour_constancy,
            colour_constancy_p=config.colour_constancy_p,
        )
        save_model(out, module, record)
        write_csv(
            out / MODEL_IMAGES,
            pd.concat([train, val])[["image", "path", "split"]].assign(path=lambda t: t["path"].map(os.path.realpath)),
        )
        if config.figures and deployment.temperature is not None:
            plot_reliability(
                labels,
                unadjusted_probs,
                apply_temperature(unadjusted_probs, deployment.temperature),
                RunFolder(out).reliability_figure,
            )
        _write_outputs(
            out,
            config,
            result,
            init_info,
            predictions_frame(test["image"].tolist(), labels, probs, classes),
            finder,
            one_cycle,
            lambda: (
                finish(FinishedRun(out, config, module, images[test["row"].to_numpy()], test, labels, probs, result))
                if finish
                else None
            ),
        )
        return result.to_dict()


@dataclass(frozen=True)
class Deployment:
    """What ``finetune`` fits on the validation split for using the model: a temperature and
    the malignant-vs-benign threshold, with what they give on test."""

    temperature: float | None
    threshold: float | None
    calibration: dict[str, Any]
    operating_point: dict[str, Any]
    malignant: tuple[str, ...] = ()

    def point(self, probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any] | None:
        """Sensitivity and specificity of the threshold on another labelled set."""
        return (
            None
            if self.threshold is None
            else malignant_point(
                apply_temperature(probs, self.temperature), labels, classes, self.malignant, self.threshold
            )
        )


def fit_deployment(
    module: ClassifierModule,
    config: FinetuneConfig,
    images: np.ndarray,
    val: pd.DataFrame,
    classes: list[str],
    test_labels: np.ndarray,
    test_probs: np.ndarray,
    malignant: list[str],
) -> Deployment:
    """Temperature scaling and the operating point, fitted on the validation split (the model's
    own probabilities, before any logit adjustment), measured on test."""
    if val.empty:
        note = "no validation split: no temperature or operating point was fitted (make the split with `lesionssl split --val N`)"
        return Deployment(None, None, {"note": note}, {"note": note})
    index = {c: i for i, c in enumerate(classes)}
    val_probs, val_labels = predict(module, config, images, val, classes), val["label"].map(index).to_numpy()
    temperature = fit_temperature(val_labels, val_probs)
    calibrated = apply_temperature(test_probs, temperature)
    calibration = {
        "temperature": temperature,
        "fitted_on": f"val ({len(val)} images)",
        "test": {
            "ece_before": expected_calibration_error(test_labels, test_probs),
            "ece_after": expected_calibration_error(test_labels, calibrated),
            "nll_before": negative_log_likelihood(test_labels, test_probs),
            "nll_after": negative_log_likelihood(test_labels, calibrated),
        },
    }
    val_malignant = np.isin(val_labels, malignant_indices(classes, malignant))
    if not malignant:
        return Deployment(
            temperature,
            None,
            calibration,
            {"note": "no operating point: no malignant classes were set (--malignant-classes)"},
        )
    if not val_malignant.any() or val_malignant.all():
        return Deployment(
            temperature,
            None,
            calibration,
            {
                "note": f"no operating point: the validation split lacks malignant ({', '.join(malignant)}) or benign cases"
            },
        )
    val_scores = malignant_probability(apply_temperature(val_probs, temperature), classes, malignant)
    threshold = choose_threshold(val_scores, val_malignant, TARGET_SENSITIVITY)
    point = {
        "target_sensitivity": TARGET_SENSITIVITY,
        "threshold": threshold,
        "malignant_classes": malignant,
        "val": operating_point(val_scores, val_malignant, threshold),
        "test": malignant_point(calibrated, test_labels, classes, malignant, threshold),
    }
    return Deployment(temperature, threshold, calibration, point, tuple(malignant))


def _write_outputs(
    out: Path,
    config: FinetuneConfig,
    result: RunResult,
    init_info: dict,
    predictions: pd.DataFrame,
    finder,
    one_cycle: OneCycleCallback,
    finish: Callable[[], None],
) -> None:
    folder = RunFolder(out)
    provenance = {k: v for k, v in result.to_dict().items() if k not in {f.name for f in fields(Metrics)} | {"format"}}
    write_text(folder.config, to_yaml(config, {"resolved": {**provenance, "init": init_info}}))
    write_csv(folder.predictions, predictions)
    schedule = pd.DataFrame(one_cycle.history)
    write_csv(out / "schedule.csv", schedule)
    if finder is not None:
        write_csv(folder.lr_finder, pd.DataFrame({"lr": finder.lrs, "smoothed_loss": finder.losses}))
    if config.figures:
        plot_schedule(schedule, out / "schedule.png")
        if finder is not None:
            plot_lr_finder(finder, result.lr, out / "lr_finder.png")
        plot_confusion(np.asarray(result.metrics.confusion_matrix_normalized), result.classes, out / "confusion.png")
    write_json(folder.environment, run_environment(config.seed))
    finish()  # before metrics.json: a finished run has whatever its caller adds (the card, the examples)
    result.write(out)  # its presence marks the run as finished
    shutil.rmtree(folder.checkpoints, ignore_errors=True)  # the model is kept; the training state is not needed
