"""Augmentation presets: what each view does.

The views themselves run batch-wise on the training device (``augment.batch``); this module
states the parameters. Two Barlow Twins presets:

* ``official`` - Zbontar et al. 2021, ``main.py`` of facebookresearch/barlowtwins: random
  resized crop (scale 0.08-1, bicubic), horizontal flip 0.5, colour jitter 0.4/0.4/0.2/0.1
  with p 0.8, grayscale p 0.2, Gaussian blur p 1.0 / 0.1 (sigma 0.1-2), solarize p 0 / 0.2,
  ImageNet normalisation.
* ``seed`` - the seed study's code (Haggerty & Chandra 2023): crop scale 0.7-1, jitter at
  0.6 of the official strength, rotation +-45 deg with p 0.5, no normalisation; blur and
  solarize as official. Unlike the seed code, each image gets its own crop.

Fine-tuning (the seed): crop scale 0.7-1, flip and +-45 deg rotation each with p 0.25.

The seed talk's other distortions can be added to either preset (``extras``): ``rotate90``
(0/90/180/270 deg), ``cutout``, ``noise`` (Gaussian) and ``sobel`` (edge magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Normalization = Literal["imagenet", "none"]
BTPreset = Literal["official", "seed"]
Extra = Literal["rotate90", "cutout", "noise", "sobel"]
EXTRAS: tuple[str, ...] = ("rotate90", "cutout", "noise", "sobel")


@dataclass(frozen=True)
class BTAugmentation:
    """Parameters of the two Barlow Twins views (view-specific pairs are ``(view1, view2)``)."""

    crop_scale: tuple[float, float]
    jitter_strength: float
    rotation_degrees: float
    rotation_p: float
    blur_p: tuple[float, float] = (1.0, 0.1)
    solarize_p: tuple[float, float] = (0.0, 0.2)
    grayscale_p: float = 0.2
    jitter_p: float = 0.8
    flip_p: float = 0.5


BT_PRESETS: dict[str, BTAugmentation] = {
    "official": BTAugmentation(crop_scale=(0.08, 1.0), jitter_strength=1.0, rotation_degrees=0.0, rotation_p=0.0),
    "seed": BTAugmentation(crop_scale=(0.7, 1.0), jitter_strength=0.6, rotation_degrees=45.0, rotation_p=0.5),
}
