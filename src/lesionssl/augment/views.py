"""Augmentation presets: what each view does.

The views themselves run batch-wise on the training device (``augment.batch``); this module
states the parameters. Three presets for the two views of a positive pair (any method):

* ``official`` - Zbontar et al. 2021, ``main.py`` of facebookresearch/barlowtwins: random
  resized crop (scale 0.08-1, bicubic), horizontal flip 0.5, colour jitter 0.4/0.4/0.2/0.1
  with p 0.8, grayscale p 0.2, Gaussian blur p 1.0 / 0.1 (sigma 0.1-2 px at 224 px),
  solarize p 0 / 0.2, ImageNet normalisation.
* ``seed`` - the seed study's code (Haggerty & Chandra 2023): crop scale 0.7-1, jitter at
  0.6 of the official strength, rotation +-45 deg with p 0.5, no normalisation; blur and
  solarize as official. Unlike the seed code, each image gets its own crop.
* ``small-data`` - lesionssl's preset for small dermoscopy images, found by measurement on
  ../shared/data/skin-lesions (EVIDENCE.md): crops of 25-100% of the image (an 8% crop of a
  64 px image is a 18 px patch with no lesion left in it), flips and quarter turns (a lesion has
  no up or down), brightness / contrast / saturation jitter with a small hue shift (colour is
  diagnostic), grayscale 0.2, a light blur on one view, no solarisation.

Gaussian blur sigmas are stated for 224 px images, as in the papers, and scale with the
training size: at 64 px, sigma 2 px would blur away what the official recipe keeps.

Fine-tuning (the seed): crop scale 0.7-1, flip and +-45 deg rotation each with p 0.25.

The seed talk's other distortions can be added to any preset (``extras``): ``rotate90``
(0/90/180/270 deg), ``cutout``, ``noise`` (Gaussian) and ``sobel`` (edge magnitude).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``auto``: what the initialisation records (a timm pretrained config, a registered weights
#: entry, a lesionssl backbone's ``normalize``), ImageNet statistics otherwise.
Normalization = Literal["imagenet", "none", "auto"]


@dataclass(frozen=True)
class Preprocessing:
    """Input statistics a backbone expects, and the interpolation of its evaluation resize: the
    fields of timm's ``PretrainedCfg`` that travel with weights (its names, its meaning), recorded
    in ``backbone.json``, ``model.json`` and every run."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:  # lists from JSON, tuples in code: one value either way
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def from_config(cls, config: Any) -> Preprocessing:
        """From a timm ``PretrainedCfg``, a timm data config or a recorded mapping (other keys, such
        as a registry entry's ``resize``, are not preprocessing the network needs). Interpolations
        other than bilinear and bicubic fall back to bilinear (the evaluation resize has those two)."""
        if isinstance(config, cls):
            return config
        get = config.get if isinstance(config, Mapping) else lambda key, default=None: getattr(config, key, default)
        interpolation = get("interpolation", "bilinear") or "bilinear"
        return cls(
            tuple(get("mean")),
            tuple(get("std")),
            interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
        )


IMAGENET = Preprocessing(IMAGENET_MEAN, IMAGENET_STD)
UNNORMALISED = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
NAMED_PREPROCESSING = {"imagenet": IMAGENET, "none": UNNORMALISED}


def as_preprocessing(normalize: Normalization | Preprocessing) -> Preprocessing:
    """A named normalisation (``auto`` must be resolved by the caller first) as statistics."""
    if isinstance(normalize, Preprocessing):
        return normalize
    if normalize not in NAMED_PREPROCESSING:
        raise ValueError(f"normalisation {normalize!r} must be resolved against the initialisation first")
    return NAMED_PREPROCESSING[normalize]


PairPreset = Literal["official", "seed", "small-data"]
Extra = Literal["rotate90", "cutout", "noise", "sobel"]
EXTRAS: tuple[str, ...] = ("rotate90", "cutout", "noise", "sobel")


#: The official colour jitter: brightness, contrast, saturation, hue.
OFFICIAL_JITTER = (0.4, 0.4, 0.2, 0.1)
#: Image side at which blur sigmas are stated (the papers' 224 px crops).
SIGMA_REFERENCE_SIZE = 224


@dataclass(frozen=True)
class PairAugmentation:
    """Parameters of the two Barlow Twins views (view-specific pairs are ``(view1, view2)``).

    ``jitter`` is (brightness, contrast, saturation, hue), as torchvision's ``ColorJitter``;
    ``blur_sigma`` is in pixels of a 224 px image (scaled to the training size).
    """

    crop_scale: tuple[float, float]
    jitter: tuple[float, float, float, float] = OFFICIAL_JITTER
    rotation_degrees: float = 0.0
    rotation_p: float = 0.0
    rotate90_p: float = 0.0
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: tuple[float, float] = (0.0, 0.2)
    grayscale_p: float = 0.2
    jitter_p: float = 0.8
    flip_p: float = 0.5


PAIR_PRESETS: dict[str, PairAugmentation] = {
    "official": PairAugmentation(crop_scale=(0.08, 1.0)),
    "seed": PairAugmentation(
        crop_scale=(0.7, 1.0), jitter=tuple(0.6 * j for j in OFFICIAL_JITTER), rotation_degrees=45.0, rotation_p=0.5
    ),
    "small-data": PairAugmentation(
        crop_scale=(0.25, 1.0), jitter=(0.4, 0.4, 0.2, 0.02), rotate90_p=0.75, blur_p=(0.5, 0.1), solarize_p=(0.0, 0.0)
    ),
}
