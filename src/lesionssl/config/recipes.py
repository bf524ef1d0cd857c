"""Recipes and presets as data: named sets of settings for pretraining, fine-tuning and
experiments (the user's explicit keys override them), and the fixed-LR rule of ``lr: auto``."""

from __future__ import annotations

from typing import Any

#: Pretraining recipes (``recipe:``): the settings each one implies, and per method the
#: hyperparameters it changes from the method's defaults; keys given explicitly win.
PRETRAIN_RECIPES: dict[str, dict[str, Any]] = {
    # Measured on ../shared/data/skin-lesions (EVIDENCE.md): Adam at a fixed 1e-3 with 1cycle (the
    # LR finder picks 10-30x that on the self-supervised loss), the small-data augmentation, and
    # for Barlow Twins the official lambda with a two-layer 2048 projector.
    "small-data": {
        "optimizer": "adam",
        "augmentation": "small-data",
        "lr": 1e-3,
        "weight_decay": 1e-5,
        "projector_warmup_epochs": None,
        "method_defaults": {"barlow_twins": {"projector": [2048, 2048], "lambd": 0.0051}},
    },
    # The seed code: fastai Adam (wd 0.01), one projector-only epoch, LR finder (valley), 1cycle, lambda 1/d.
    "seed": {
        "optimizer": "adam",
        "augmentation": "seed",
        "lr": "find",
        "weight_decay": 0.01,
        "projector_warmup_epochs": 1,
        "method_defaults": {"barlow_twins": {"projector": [8192, 8192, 8192], "lambd": None}},
    },
    # Continuing from trained weights (the seed's pre-pretraining; the default when --init is not
    # random), measured on ../shared/data/skin-lesions from the ImageNet Lite0 (EVIDENCE.md): a
    # fresh projector warmed up alone, then 1cycle with the encoder at a tenth of the projector's
    # LR, its BatchNorm statistics frozen (updating them lost a third of the start's kNN accuracy
    # in one epoch) and a light L2-SP pull toward the start.
    "continue": {
        "optimizer": "adam",
        "augmentation": "small-data",
        "lr": 1e-3,
        "encoder_lr_scale": 0.1,
        "bn_statistics": "frozen",
        "l2sp": 100.0,
        "weight_decay": 1e-5,
        "projector_warmup_epochs": 1,
        "epochs": 6,
        "method_defaults": {"barlow_twins": {"projector": [2048, 2048], "lambd": 0.0051}},
    },
    # Zbontar et al.: LARS, LRs 0.2 / 0.0048 x batch/256, warm-up then cosine; each method's own defaults.
    "official": {
        "optimizer": "lars",
        "augmentation": "official",
        "weight_decay": 1.5e-6,
        "projector_warmup_epochs": 0,
        "method_defaults": {},
    },
}


#: Shorthands: top-level keys that go into ``method_kwargs`` (``projector: [2048, 2048]``).
METHOD_SHORTHANDS = ("projector", "lambd")


#: Named fine-tuning recipes; explicit keys override them.
#: ``lr: auto`` below this many training images: a fixed LR instead of the finder. Measured at
#: 200 (skin, 25 per class: +0.05 balanced accuracy, p 0.003) and 160 images (oral: +0.01, n.s.);
#: the seed study used the finder on 2,554.
SMALL_TRAINING_SET = 1000


SMALL_DATA_LR = 1e-3


#: The seed study's code: ResNet-50 + one linear layer, 256 px, Adam(0.9, 0.99, eps 1e-5), wd 0,
#: fastai freeze (BN trainable) for one epoch at a constant 1e-3, valley LR, 40 epochs 1cycle,
#: batch 64, TTA x3, no ImageNet normalisation.
_SEED_FINETUNE: dict[str, Any] = {
    "backbone": "resnet50",
    "image_size": 256,
    "batch_size": 64,
    "epochs": 40,
    "head_epochs": 1,
    "head_lr": 1e-3,
    "freeze": "fastai",
    "lr": "find",
    "lr_suggestion": "valley",
    "weight_decay": 0.0,
    "normalize": "none",
    "tta": 3,
}

FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "seed": _SEED_FINETUNE,
    # The same protocol with the seed's quirks fixed: ImageNet normalisation at its 224 px, no TTA randomness.
    "recommended": {**_SEED_FINETUNE, "image_size": 224, "normalize": "imagenet", "tta": 0},
}


#: Experiment presets (see the README for the side-by-side table and why each difference matters):
#: ``seed-faithful`` is the seed study's exact design, ``recommended`` the same with its quirks fixed
#: (lesion-grouped split, inductive pool, ImageNet normalisation, no random TTA).
SEED_INITIALISATIONS = [
    {"name": "supervised-imagenet", "init": "tv-resnet50-v2"},
    {"name": "barlow-twins-imagenet", "init": "bt-resnet50-hub"},
    {"name": "pre-pretrained", "init": "pretrain"},
]


_PRETRAIN = {
    "backbone": "resnet50",
    "init": "bt-resnet50-hub",
    "image_size": 256,
    "batch_size": 128,
    "epochs": 100,
    "projector": [8192, 8192, 8192],
    "lambd": 1 / 8192,
    "recipe": "seed",
    "augmentation": "seed",
    "weight_decay": 0.01,
    "projector_warmup_epochs": 1,
    "lr": "find",
}


EXPERIMENT_PRESETS: dict[str, dict[str, Any]] = {
    "seed-faithful": {
        "split": {"seed_isic2019": True, "transductive": True, "seed": 0},
        "initialisations": SEED_INITIALISATIONS,
        "seeds": list(range(35)),
        "pretrain": {**_PRETRAIN, "normalize": "none"},
        "finetune": {"recipe": "seed"},
    },
    "recommended": {
        "split": {"per_class_cap": 500, "group_by": "lesion_id", "transductive": False, "seed": 0},
        "initialisations": SEED_INITIALISATIONS,
        "seeds": list(range(35)),
        "pretrain": {**_PRETRAIN, "normalize": "imagenet"},
        "finetune": {"recipe": "recommended"},
    },
}


def apply_experiment_preset(values: dict[str, Any]) -> dict[str, Any]:
    """Merge the named preset under the user's values (sections merge key by key)."""
    name = values["preset"]
    merged = dict(EXPERIMENT_PRESETS[name])
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    chosen = (values.get("split") or {}).keys() & {"per_class_cap", "per_class", "fraction", "seed_isic2019"}
    if chosen:  # the user chose the split mode: drop the preset's
        merged["split"] = {
            k: v
            for k, v in merged["split"].items()
            if k not in {"per_class_cap", "per_class", "fraction", "seed_isic2019"} - chosen
        }
    return merged


def resolve_lr(setting: float | str, training_images: int) -> float | str:
    """A run's LR setting with ``auto`` decided by the size of its training split."""
    if setting != "auto":
        return setting
    return SMALL_DATA_LR if training_images <= SMALL_TRAINING_SET else "find"


def describe_lr(setting: float | str, chosen: float | None = None, suggestion: str = "valley") -> str:
    """How a run's ``lr`` key chose its LR, as the methods paragraph and the model card say it
    (here, not beside the finder: the report reads it without importing the training stack)."""
    if setting == "find":
        return f"an LR finder (fastai's lr_find, its {suggestion} suggestion" + (
            f": {chosen:.3g})" if chosen is not None else ")"
        )
    if setting == "auto":
        return f"a fixed LR of {SMALL_DATA_LR:g} for training splits of at most {SMALL_TRAINING_SET} images and an LR finder ({suggestion}) above (lr auto)"
    return f"a fixed LR of {float(setting):.3g} (no LR finder)"
