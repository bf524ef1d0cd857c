"""The commands: one function each, their flags typed; everything generic is in :mod:`.contract`."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel
from rich.markup import escape
from typer.core import TyperOption

from lesionssl.cli.contract import (
    COMMAND_CONFIGS,
    EXTRA,
    PRINT,
    DataOpt,
    DataRootOpt,
    ManifestOpt,
    OutOpt,
    ResumeOpt,
    SeedOpt,
    _example_key,
    _generic_flags,
    _hold_out,
    _key_values,
    _lr,
    _settings,
    _shared_options,
    _values,
    _widths,
    choices_of,
    click,
    get_current_context,
    one_of,
)
from lesionssl.config import (
    COSINE_THRESHOLD,
    HASH_THRESHOLD,
    CompareConfig,
    FinetuneConfig,
    PretrainConfig,
    RuntimeConfig,
    SelectConfig,
    ShiftConfig,
    SplitCommand,
    validate,
)
from lesionssl.errors import LesionSSLError
from lesionssl.layout import PREDICTIONS, RunFolder
from lesionssl.models import NAMED_INITS, RESNETS, TIMM_PREFIX
from lesionssl.models.lite import LITE
from lesionssl.pretraining import method_names
from lesionssl.progress import console
from lesionssl.stopping import Stopped, resume_command, stop_on_signals

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Self-supervised pretraining (Barlow Twins, VICReg, SimCLR, BYOL) and limited-label transfer for lesion images. Every command accepts --config FILE (YAML with the same option names) and --print-config; flags override the file.",
)


#: The configuration class behind each command whose options are more than its flags.


BACKBONES = (*LITE, *RESNETS, f"{TIMM_PREFIX}NAME")


def _version(value: bool) -> None:
    if value:
        from lesionssl import __version__

        typer.echo(f"lesionssl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Self-supervised pretraining (Barlow Twins, VICReg, SimCLR, BYOL) and limited-label transfer for lesion images. Every command accepts --config FILE (YAML with the same option names) and --print-config; flags override the file."""


def _say_default_init(backbone: str, init: str) -> None:
    """One line when the user named no initialisation: what the default is, and why."""
    if init == "imagenet":
        console.print(
            f"init: the installed supervised ImageNet weights of {backbone} (the default: far above random weights in EVIDENCE.md); --init random for random weights",
            markup=False,
        )
    else:
        console.print(
            f"init: random weights ({backbone} has no installed ImageNet weights; --backbone efficientnet_lite0 has, or --init imagenet downloads them)",
            markup=False,
        )


@app.command(
    epilog="Example: lesionssl split --data ../shared/data/skin-lesions --test-fraction 0.25 --per-class 50 --group-by lesion_id --out split.csv"
)
def split(
    data: DataOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Manifest CSV to write.")] = None,
    per_class_cap: Annotated[
        int | None, typer.Option(help="At most N training images per class; the rest is test (the seed: 500).")
    ] = None,
    per_class: Annotated[int | None, typer.Option(help="Exactly N training images per class.")] = None,
    fraction: Annotated[float | None, typer.Option(help="This share of each class for training.")] = None,
    seed_isic2019: Annotated[
        bool | None,
        typer.Option("--seed-isic2019", help="The seed study's ISIC 2019 split: 2,554 train / 19,423 test."),
    ] = None,
    val: Annotated[int | None, typer.Option(help="Validation images per class (taken before the test split).")] = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="Keep groups (lesion_id, patient_id) within one split; none: split by image on purpose."),
    ] = None,
    transductive: Annotated[
        bool | None,
        typer.Option(
            "--transductive/--inductive", help="Let pretraining see test images (unlabelled), as the seed did."
        ),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(
            help="Hold out this share of the labelled groups (stratified by class) as test; training labels, val and the pretraining pool come from the rest."
        ),
    ] = None,
    hold_out: Annotated[
        list[str] | None,
        typer.Option(
            "--hold-out",
            help="COLUMN=V1,V2,...: images whose metadata column takes one of these values form the 'external' split (never in the pool). Repeatable.",
        ),
    ] = None,
    dedup: Annotated[
        bool | None,
        typer.Option(
            "--dedup", help="Merge near-duplicate clusters (pHash + thumbnail correlation) into one group each."
        ),
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Image folder for ISIC / HAM10000 label files.")] = None,
    skip_missing: Annotated[
        bool | None, typer.Option("--skip-missing", help="Drop label rows whose image file is missing.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="An expert's filled-in CSV from `lesionssl select`: its labels join the training set of the manifest the images were selected from (the next round's manifest).",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="With --labels: the manifest to add them to (default: the one the selection records)."
        ),
    ] = None,
    data_root: DataRootOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Write a limited-label split manifest (image,label,split,...) and print the per-class table; with --labels, add an expert's labels to a manifest."""
    from lesionssl.api import split as run
    from lesionssl.data.split import MIN_TEST_IMAGES, duplicates_file, pool_summary, thin_test_classes

    values = _values(
        data=data,
        out=out,
        per_class_cap=per_class_cap,
        per_class=per_class,
        fraction=fraction,
        seed_isic2019=seed_isic2019,
        val=val,
        group_by=group_by,
        transductive=transductive,
        test_fraction=test_fraction,
        hold_out=_hold_out(hold_out),
        dedup=dedup,
        images=images,
        skip_missing=skip_missing,
        labels=labels,
        manifest=manifest,
        data_root=data_root,
        seed=seed,
    )
    result = run(_settings(SplitCommand, values, "split"))
    if labels is not None or result.labels_added:
        console.print(
            f"{result.labels_added} labels added to the training set"
            + (f"; {result.labels_blank} rows had no label and stay unlabelled" if result.labels_blank else ""),
            markup=False,
        )
    console.print(result.counts.to_string(), markup=False)
    thin = thin_test_classes(result.counts)
    if thin:
        named = ", ".join(f"{c} ({n})" for c, n in thin.items())
        console.print(
            f"warning: {len(thin)} classes have fewer than {MIN_TEST_IMAGES} test images: {named}; their test metrics will be unreliable or undefined. "
            "Hold out a share of every class first with --test-fraction 0.25 (classes with few images otherwise go wholly to train)",
            markup=False,
        )
    if result.duplicates is not None:
        console.print(
            f"near-duplicates: {len(result.duplicates)} pairs merged into shared groups (listed in {duplicates_file(result.path)})",
            markup=False,
        )
    console.print(pool_summary(result.manifest, result.pool), markup=False)
    console.print(f"manifest written to {result.path}", markup=False)


@app.command(
    epilog="Example: lesionssl pretrain --manifest split.csv --backbone resnet18 --image-size 64 --epochs 20 --out runs/bt --runtime.precision bf16-mixed"
)
def pretrain(
    data: DataOpt = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Manifest from `lesionssl split`; its pretraining pool is used.")
    ] = None,
    data_root: DataRootOpt = None,
    out: OutOpt = None,
    backbone: Annotated[
        str | None,
        typer.Option(help=one_of(BACKBONES, {PretrainConfig.model_fields["backbone"].default: "default"})),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(help=one_of(NAMED_INITS, more="a registered name | PATH to a checkpoint (pre-pretraining).")),
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Side of the training views in pixels.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Image pairs per step.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the pool.")] = None,
    method: Annotated[str | None, typer.Option(help=one_of(method_names()))] = None,
    method_kwargs: Annotated[
        list[str] | None,
        typer.Option(
            "--method-kwargs",
            help="KEY=VALUE: a hyperparameter of the method (repeatable), e.g. lambd=0.0051 or temperature=0.2.",
        ),
    ] = None,
    projector: Annotated[str | None, typer.Option(help="Projector widths, comma-separated (e.g. 2048,2048).")] = None,
    positives: Annotated[
        str | None,
        typer.Option(
            help=one_of(
                choices_of(PretrainConfig, "positives"),
                {"self": "two views of one image", "lesion": "two images of one lesion where the pool has several"},
            )
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help=one_of(
                choices_of(PretrainConfig, "recipe"),
                {
                    "small-data": "from random weights; measured on small dermoscopy pools",
                    "continue": "trained weights; the default when --init is not random",
                    "seed": "Haggerty & Chandra",
                    "official": "Zbontar et al.",
                },
            )
            + ": a named set of settings; explicit keys override it."
        ),
    ] = None,
    augmentation: Annotated[str | None, typer.Option(help=one_of(choices_of(PretrainConfig, "augmentation")))] = None,
    lr: Annotated[str | None, typer.Option(help="'find' (LR finder, valley) or a number.")] = None,
    resume: ResumeOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Self-supervised pretraining of a backbone on unlabelled images; writes backbone.safetensors."""
    from lesionssl.pretraining.run import pretrain as run

    values = _values(
        data=data,
        manifest=manifest,
        data_root=data_root,
        out=out,
        backbone=backbone,
        init=init,
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        projector=_widths(projector),
        method=method,
        method_kwargs=_key_values(method_kwargs, "--method-kwargs"),
        positives=positives,
        recipe=recipe,
        augmentation=augmentation,
        lr=_lr(lr),
        resume=resume,
        seed=seed,
    )
    path = run(_settings(PretrainConfig, values, "pretrain"))
    console.print(f"backbone written to {path}")


@app.command(
    epilog="Example: lesionssl select --manifest split.csv --init runs/bt/backbone.safetensors --budget 80 --strategy typiclust --out to_label.csv"
)
def select(
    manifest: ManifestOpt = None,
    data_root: DataRootOpt = None,
    budget: Annotated[int | None, typer.Option(help="How many images to pick.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help=one_of(
                choices_of(SelectConfig, "strategy"),
                {"probcover": "typical and diverse: best at small budgets", "kcenter": "coverage"},
            )
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="The features' weights: PATH to a backbone from `lesionssl pretrain` (recommended) | "
            + one_of(NAMED_INITS, more="a registered name.")
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="Architecture of the weights: " + one_of(BACKBONES)),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Side of the images the features are taken at (as the probe's).")
    ] = None,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            "--exclude", help="CSV (an image column) of images already labelled or sent out: never picked (repeatable)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV to fill in; an HTML page of thumbnails is written beside it.")
    ] = None,
    seed: SeedOpt = None,
) -> None:
    """Pick the pool images an expert should label next (TypiClust, ProbCover, k-center or random on a backbone's features)."""
    from lesionssl.api import select as run

    values = _values(
        manifest=manifest,
        data_root=data_root,
        budget=budget,
        strategy=strategy,
        init=init,
        backbone=backbone,
        image_size=image_size,
        exclude=exclude,
        out=out,
        seed=seed,
    )
    settings = _settings(SelectConfig, values, "select")
    if settings.init == "random":
        console.print(
            "note: picking on the features of random weights; a backbone pretrained on this pool (--init runs/bt/backbone.safetensors) is what the strategies are made for",
            markup=False,
        )
    result = run(settings)
    if len(result.table) < result.settings["budget"]:
        console.print(
            f"only {len(result.table)} images could be picked: the pool has no other unlabelled lesion", markup=False
        )
    console.print(
        f"{len(result.table)} of {result.candidates} candidate images picked ({result.settings['strategy']}); pool {result.pool_images} images",
        markup=False,
    )
    console.print(
        f"fill in the label column of {result.path}, or open {result.page}; then: lesionssl split --labels {result.path} --out next.csv",
        markup=False,
    )


@app.command(epilog="Example: lesionssl audit --manifest split.csv --out audit")
def audit(
    manifest: Annotated[Path, typer.Option("--manifest", help="Manifest from `lesionssl split`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for pairs.csv, summary.json and index.html.")] = Path(
        "audit"
    ),
    data_root: Annotated[
        Path | None, typer.Option(help="The folder that now holds the manifest's images, when they moved.")
    ] = None,
    features: Annotated[
        str,
        typer.Option(help="Cosine detector: 'thumbnail' (colour thumbnails) or a backbone: random | imagenet | PATH."),
    ] = "thumbnail",
    backbone: Annotated[str, typer.Option(help="Architecture of a backbone given as --features.")] = "resnet18",
    hash_threshold: Annotated[
        int, typer.Option(help="Largest pHash Hamming distance (of 63 bits) that links a pair.")
    ] = HASH_THRESHOLD,
    cosine_threshold: Annotated[
        float, typer.Option(help="Smallest feature cosine that links a pair.")
    ] = COSINE_THRESHOLD,
) -> None:
    """Find near-duplicate images across the splits of a manifest (pHash + feature cosine), with thumbnails."""
    from lesionssl.data.audit import audit as run

    result = run(manifest, out, features, backbone, hash_threshold, cosine_threshold, data_root)
    cross = int(result.pairs["cross_split"].sum())
    if result.pairs.empty:
        console.print("no near-duplicates: no pair of images is within the pHash and feature thresholds", markup=False)
    else:
        console.print(
            f"{len(result.pairs)} near-duplicate pairs, {cross} across splits, {len(result.leaking)} leaking (evaluated image seen in training)",
            markup=False,
        )
    console.print(f"report written to {result.folder / 'index.html'}", markup=False)


@app.command(
    "augment-preview",
    epilog="Example: lesionssl augment-preview --data ../shared/data/skin-lesions --out grid.png --augmentation seed",
)
def augment_preview(
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("augmentations.png"),
    augmentation: Annotated[
        str, typer.Option(help=one_of(choices_of(PretrainConfig, "augmentation")) + " (as pretrain's augmentation)")
    ] = "small-data",
    extra_augmentations: Annotated[
        list[str] | None,
        typer.Option("--extra-augmentations", help="Extra distortion (repeatable): rotate90, cutout, noise, sobel."),
    ] = None,
    image_size: Annotated[int, typer.Option(help="Side of the views in pixels.")] = 128,
    rows: Annotated[int, typer.Option(help="Number of images (rows).")] = 6,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Draw rows of original + the two augmented views of a positive pair, to check the augmentations by eye."""
    from lesionssl.augment.preview import augment_preview as run
    from lesionssl.augment.views import EXTRAS, PAIR_PRESETS

    if augmentation not in PAIR_PRESETS or set(extra_augmentations or []) - set(EXTRAS):
        raise LesionSSLError(
            f"--augmentation must be one of {sorted(PAIR_PRESETS)} and --extra-augmentations one of {list(EXTRAS)}"
        )
    console.print(
        f"preview written to {run(data or [], out, augmentation, image_size, rows, seed, tuple(extra_augmentations or []))}"
    )


@app.command(
    epilog="Example: lesionssl finetune --manifest split.csv --init runs/bt/backbone.safetensors --epochs 10 --out runs/ft"
)
def finetune(
    manifest: ManifestOpt = None,
    data_root: DataRootOpt = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Image sources, split with --split.* settings when no --manifest is given (e.g. --split.per-class 50).",
        ),
    ] = None,
    out: OutOpt = None,
    backbone: Annotated[
        str | None,
        typer.Option(help=one_of(BACKBONES, {next(iter(LITE)): "default; its ImageNet weights come installed"})),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help=one_of(
                NAMED_INITS,
                {"imagenet": "default where the weights come installed: Lite0-2"},
                "a registered name | PATH",
            )
        ),
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Side of the training images in pixels.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    epochs: Annotated[int | None, typer.Option(help="1cycle epochs after the head epoch.")] = None,
    lr: Annotated[str | None, typer.Option(help="'find' (LR finder) or a number.")] = None,
    tta: Annotated[int | None, typer.Option(help="Augmented test views (the seed: 3).")] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help=one_of(choices_of(FinetuneConfig, "recipe")) + ": a named set of settings; explicit keys override it."
        ),
    ] = None,
    freeze: Annotated[
        str | None,
        typer.Option(
            help="Head stage: " + one_of(choices_of(FinetuneConfig, "freeze"), {"fastai": "BN trainable, the seed"})
        ),
    ] = None,
    sampling: Annotated[str | None, typer.Option(help=one_of(choices_of(FinetuneConfig, "sampling")))] = None,
    loss_weights: Annotated[
        str | None,
        typer.Option(
            help=one_of(choices_of(FinetuneConfig, "loss_weights"), {"balanced": "class-weighted cross-entropy"})
        ),
    ] = None,
    test_prior: Annotated[
        str | None,
        typer.Option(
            help="Logit adjustment to: "
            + one_of(choices_of(FinetuneConfig, "test_prior"), {"train": "none", "pool": "EM on unlabelled images"})
        ),
    ] = None,
    select_on: Annotated[
        str | None,
        typer.Option(
            help=one_of(choices_of(FinetuneConfig, "select_on")) + " (needs a val split; never the test split)."
        ),
    ] = None,
    resume: ResumeOpt = None,
    seed: SeedOpt = None,
) -> None:
    """The transfer protocol: head epoch, unfreeze, LR finder, 1cycle; then one test evaluation."""
    from lesionssl.api import finetune as run

    values = _values(
        manifest=manifest,
        data_root=data_root,
        data=data,
        out=out,
        backbone=backbone,
        init=init,
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        lr=_lr(lr),
        tta=tta,
        recipe=recipe,
        freeze=freeze,
        sampling=sampling,
        loss_weights=loss_weights,
        test_prior=test_prior,
        select_on=select_on,
        resume=resume,
        seed=seed,
    )
    settings = _settings(FinetuneConfig, values, "finetune")
    if "init" not in values:
        _say_default_init(settings.backbone, settings.init)
    if RunFolder(settings.out).finished and not settings.resume:
        raise LesionSSLError(
            f"{settings.out} already holds a finished run; choose another --out or pass --resume to keep it"
        )
    result = run(settings)
    m = result.metrics
    console.print(
        f"accuracy {m.accuracy:.4f}  balanced accuracy {m.balanced_accuracy:.4f}  macro F1 {m.macro_f1:.4f}  (LR {result.lr:.3g})"
    )
    console.print(f"results in {result.folder}")


@app.command(epilog="Example: lesionssl predict --model runs/ft --data new-images/ --out predictions.csv")
def predict(
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            help="A finished `finetune` run folder (model.safetensors + model.json), e.g. runs/compare/runs/<init>/seed0-<hash>.",
        ),
    ],
    data: Annotated[
        list[str],
        typer.Option(
            "--data", help="Images to predict: any source `split` accepts (labelled sources also get metrics)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="CSV to write: p_<CLASS> per class, prediction, p_malignant, malignant.")
    ] = Path(PREDICTIONS),
    tta: Annotated[
        int | None, typer.Option(help="Augmented views (default: what the model was evaluated with).")
    ] = None,
    prior: Annotated[
        str,
        typer.Option(
            help="Deployment class prior: none | uniform | estimate (EM on these images) | FILE (YAML {class: p})."
        ),
    ] = "none",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    precision: Annotated[str | None, typer.Option(help=one_of(choices_of(RuntimeConfig, "precision")))] = None,
    adapt_bn: Annotated[
        bool,
        typer.Option(
            "--adapt-bn",
            help="AdaBN: re-estimate the BatchNorm statistics on these images first (one new site's; warns when their class mix looks unlike training's). It lowered balanced accuracy on ISIC 2017 (EVIDENCE.md, 'A new site'): check it on labelled site images first.",
        ),
    ] = False,
) -> None:
    """Apply a fine-tuned model to new images; unreadable images are skipped and listed (exit code 3)."""
    from lesionssl.config import RuntimeConfig
    from lesionssl.deploy.predict import predict_images

    runtime = validate(RuntimeConfig, {"precision": precision} if precision else {}, "predict")
    result = predict_images(model, data, out, tta, prior, batch_size, runtime, adapt_bn)
    console.print(f"{result.predicted} images predicted -> {result.predictions}", markup=False)
    if result.seen and sum(result.seen.values()):
        console.print(
            f"{result.seen['train']} of the labelled images were in the model's own training split and {result.seen['val']} in its validation split: the metrics leave them out (column model_split)",
            markup=False,
        )
    if result.metrics is not None:
        m = result.metrics
        console.print(
            f"on {m['labelled_images']} labelled images: accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}",
            markup=False,
        )
    _exit_if_skipped(result.skipped, result.predictions.with_name("skipped.csv"))


def _exit_if_skipped(skipped: int, listing: Path) -> None:
    """Exit code 3 when some images could not be read (the rest were processed)."""
    from lesionssl.deploy.predict import SOME_SKIPPED

    if skipped:
        console.print(f"{skipped} unreadable images skipped, listed in {listing}", markup=False)
        raise typer.Exit(SOME_SKIPPED)


@app.command(
    epilog="Example: lesionssl explain --model runs/ft --data new_images/ --out explained  (then open explained/index.html)"
)
def explain(
    model: Annotated[
        Path, typer.Option("--model", help="A finished `finetune` run folder (model.safetensors + model.json).")
    ],
    data: Annotated[list[str], typer.Option("--data", help="Images to explain: any source `split` accepts.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for maps/*.png, explanations.csv and the gallery index.html.")
    ] = Path("explained"),
    target: Annotated[
        str, typer.Option(help="Class whose evidence to map: predicted (each image's own prediction) or a class name.")
    ] = "predicted",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
) -> None:
    """Grad-CAM maps over each image for its predicted class (or a chosen one), and a gallery page; unreadable images are skipped and listed (exit code 3)."""
    from lesionssl.deploy.explain import GALLERY, explain_images

    result = explain_images(model, data, out, target, batch_size)
    console.print(f"{result.explained} images explained -> {result.folder / GALLERY}", markup=False)
    _exit_if_skipped(result.skipped, result.folder / "skipped.csv")


@app.command(epilog="Example: lesionssl serve --model runs/ft  (then open http://127.0.0.1:7860)")
def serve(
    model: Annotated[
        Path, typer.Option("--model", help="A finished `finetune` run folder (model.safetensors + model.json).")
    ],
    host: Annotated[
        str,
        typer.Option(
            help="Address to bind: 127.0.0.1 keeps the page on this machine; 0.0.0.0 opens it to the network."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 7860,
) -> None:
    """A local web page (Gradio, the \\[serve] extra): drop an image, see the class probabilities, P(malignant) against the operating point, and the Grad-CAM map."""
    from lesionssl.deploy.serve import serve as run

    run(model, host, port)


@app.command(epilog="Example: lesionssl export --model runs/ft --format onnx --out exported")
def export(
    model: Annotated[Path, typer.Option("--model", help="A finished `finetune` run folder.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx (needs the \\[export] extra) | torchscript | safetensors (torchvision / timm key names)",
        ),
    ] = "onnx",
    out: Annotated[Path, typer.Option("--out", help="Folder for the exported file and its model.json.")] = Path(
        "exported"
    ),
) -> None:
    """Export a fine-tuned model: ONNX or TorchScript (calibrated probabilities), or safetensors for torchvision / timm."""
    from lesionssl.deploy.export import export_model

    console.print(
        f"model written to {export_model(model, format, out)} (preprocessing, classes, temperature, threshold in model.json)",
        markup=False,
    )


@app.command(epilog="Example: lesionssl card --model runs/ft")
def card(
    run: Annotated[
        Path | None,
        typer.Argument(
            help="A finished `finetune` run folder (or --model, as the other model commands take it).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", help="A finished `finetune` run folder.")] = None,
) -> None:
    """Write MODEL_CARD.md for a fine-tuned model: data and licences, metrics with CIs, calibration, operating point, limitations."""
    from lesionssl.deploy.card import write_card

    if (run is None) == (model is None):
        raise LesionSSLError("card needs one run folder: --model RUN (or RUN)")
    console.print(f"model card written to {write_card(model or run)}", markup=False)


@app.command(epilog="Example: lesionssl compare --config examples/shared-quick.yaml --finetune.epochs 3")
def compare(
    data: DataOpt = None,
    manifest: ManifestOpt = None,
    data_root: DataRootOpt = None,
    out: OutOpt = None,
    jobs: Annotated[int | None, typer.Option(help="Runs at once (one GPU each when there are GPUs).")] = None,
    shard: Annotated[str | None, typer.Option(help="k/n: run only the k-th of n slices (cluster job arrays).")] = None,
    seeds: Annotated[
        list[int] | None, typer.Option("--seeds", help="Seeds of every initialisation (repeatable).")
    ] = None,
) -> None:
    """Initialisations x seeds under the same protocol; resumable; writes results.csv and report.md."""
    from lesionssl.api import compare as run

    values = _values(data=data, manifest=manifest, data_root=data_root, out=out, jobs=jobs, shard=shard, seeds=seeds)
    settings = _settings(CompareConfig, values, "compare")
    if "initialisations" not in values and "preset" not in values:
        _say_default_init(settings.finetune.backbone, settings.initialisations[0].init)
    result = run(settings)
    console.print(f"report written to {result.report}")


@app.command(
    epilog="Examples: lesionssl reproduce isic2019 --root data/isic2019 | lesionssl reproduce isic2019 --root data/isic2019 --quick"
)
def reproduce(
    dataset: Annotated[str, typer.Argument(help="isic2019")],
    root: Annotated[Path, typer.Option("--root", help="Folder for the download and the runs.")],
    quick: Annotated[bool, typer.Option("--quick", help="A CPU-sized version: ResNet-18, 64 px, 3 seeds.")] = False,
    jobs: Annotated[int, typer.Option(help="Runs at once.")] = 1,
) -> None:
    """The seed study end to end: download ISIC 2019, seed split, pre-pretraining, 3 inits x 35 seeds, report."""
    from lesionssl.experiment.reproduce import reproduce as run

    if dataset != "isic2019":
        raise LesionSSLError(f"unknown dataset {dataset!r}; available: isic2019")
    console.print(f"report written to {run(root, quick, jobs)}")


@app.command(
    epilog="Example: lesionssl shift --manifest split.csv --init imagenet --out shift  (then open shift/index.html)"
)
def shift(
    manifest: ManifestOpt = None,
    data_root: DataRootOpt = None,
    backbone: Annotated[str | None, typer.Option(help="Architecture of the weights: " + one_of(BACKBONES))] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="The features' weights: " + one_of(NAMED_INITS, more="a registered name | PATH to a backbone.")
        ),
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Side of the images the features are taken at.")] = None,
    site_column: Annotated[
        str | None,
        typer.Option(
            help="Metadata column naming each external image's site (default: the split's --hold-out column)."
        ),
    ] = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
) -> None:
    """How far each test split or site is from the pretraining pool: colour, a domain classifier's AUROC, the implied class prior, recall per class, a t-SNE map."""
    from lesionssl.report.shift import shift as run

    values = _values(
        manifest=manifest,
        data_root=data_root,
        backbone=backbone,
        init=init,
        image_size=image_size,
        site_column=site_column,
        out=out,
        seed=seed,
    )
    settings = _settings(ShiftConfig, values, "shift")
    console.print(f"shift report written to {run(settings)}", markup=False)


@app.command(epilog="Example: lesionssl report runs/compare")
def report(directory: Annotated[Path, typer.Argument(help="Output folder of `compare`.")]) -> None:
    """Rebuild results.csv and report.md from whatever runs have finished."""
    from lesionssl.report.compare import write_report

    console.print(f"report written to {write_report(directory)}")


@app.command(epilog="Examples: lesionssl demo | lesionssl demo --data ../shared/data/skin-lesions --out demo-real")
def demo(
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("lesionssl-demo"),
    seeds: Annotated[int, typer.Option(help="Seeds per initialisation.")] = 3,
) -> None:
    """The whole chain (split -> Barlow Twins -> compare random vs BT) on synthetic lesions or --data."""
    from lesionssl.experiment.demo import run_demo

    report = run_demo(out, data, seeds)
    console.print(f"[bold green]done.[/bold green] report: {report}")


def _contract(command: click.Command, model: type[BaseModel] | None) -> None:
    """Give a command ``--config`` and ``--print-config``; for a configured command also a flag
    for every key of its configuration (generic and dotted), and help and defaults from it."""
    command.params += _shared_options()
    original = command.callback
    declared = {p.name for p in command.params if p.expose_value}
    if model is not None:
        command.allow_extra_args = command.ignore_unknown_options = True
        command.epilog = (
            (command.epilog or "")
            + f"  Every key of its YAML is also a flag, nested ones dotted: --{_example_key(model)}; --print-config lists them."
        )
        for param in command.params:
            field = model.model_fields.get(param.name or "")
            default = (
                field.get_default(call_default_factory=True) if field is not None and not field.is_required() else None
            )
            if isinstance(param, TyperOption) and param.default is None and default not in (None, [], {}):
                param.show_default = str(default)

    @functools.wraps(original)
    def callback(**kwargs: Any) -> Any:
        ctx = get_current_context()
        if model is not None:
            ctx.meta[EXTRA] = _generic_flags(ctx.args, model, {d.replace("_", "-") for d in declared})
        elif ctx.meta.get(PRINT):
            typer.echo(
                yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}, sort_keys=False),
                nl=False,
            )
            raise typer.Exit()
        return original(**kwargs)

    command.callback = callback


def cli() -> click.Command:
    """The click group of ``lesionssl`` with the flag/YAML contract applied to every command."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        _contract(command, COMMAND_CONFIGS.get(name))
    return group


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; SIGTERM / Ctrl-C stop
    with the command that resumes (exit code 128 + the signal)."""
    stop_on_signals()
    try:
        cli()()
    except LesionSSLError as exc:
        _error(str(exc))
        sys.exit(2)
    except OSError as exc:  # a read-only folder, a full disk, a missing file named by the OS
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc} - finished work is kept; fix this and run the same command again")
        sys.exit(2)
    except Stopped as stop:
        console.print(
            f"stopped by {stop}: finished work and the last checkpoint are kept. Resume with:\n  {resume_command(sys.argv[1:])}",
            markup=False,
        )
        sys.exit(128 + stop.signum)


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
