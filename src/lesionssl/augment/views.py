"""View transforms on uint8 CHW tensors (torchvision v2), for pretraining and fine-tuning.

Two Barlow Twins presets:

* ``official`` - Zbontar et al. 2021, ``main.py`` of facebookresearch/barlowtwins: random
  resized crop (scale 0.08-1, bicubic), horizontal flip 0.5, colour jitter 0.4/0.4/0.2/0.1
  with p 0.8, grayscale p 0.2, Gaussian blur p 1.0 / 0.1 (sigma 0.1-2), solarize p 0 / 0.2,
  ImageNet normalisation.
* ``seed`` - the seed study's code (Haggerty & Chandra 2023): crop scale 0.7-1, jitter at
  0.6 of the official strength, rotation +-45 deg with p 0.5, no normalisation; blur and
  solarize as official. Unlike the seed code, each image gets its own crop.

The seed talk's other distortions can be added to either preset (``extras``): ``rotate90``
(0/90/180/270 deg), ``cutout``, ``noise`` (Gaussian) and ``sobel`` (edge magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

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


class RandomRotate90(v2.Transform):
    """Rotate by a uniformly drawn multiple of 90 degrees (square images keep their shape)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return image
        return torch.rot90(image, int(torch.randint(1, 4, ())), dims=(-2, -1))


class Sobel(torch.nn.Module):
    """Sobel edge magnitude of the luminance, repeated on 3 channels (float images in [0, 1])."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        gray = (image * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)[None]
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
        padded = torch.nn.functional.pad(gray, (1, 1, 1, 1), mode="replicate")
        gx = torch.nn.functional.conv2d(padded, kx)
        gy = torch.nn.functional.conv2d(padded, kx.transpose(-1, -2))
        magnitude = torch.sqrt(gx**2 + gy**2)[0]
        return (magnitude / magnitude.max().clamp_min(1e-6)).expand(3, -1, -1).contiguous()


def _extras_uint8(extras: tuple[str, ...]) -> list[v2.Transform]:
    return [RandomRotate90(0.5)] if "rotate90" in extras else []


def _extras_float(extras: tuple[str, ...]) -> list[v2.Transform]:
    steps: list[v2.Transform] = []
    if "sobel" in extras:
        steps.append(v2.RandomApply([Sobel()], p=0.2))
    if "noise" in extras:
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=0.05, clip=True)], p=0.5))
    if "cutout" in extras:
        steps.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.2), value=0))
    return steps


def _to_float(normalize: Normalization, extras: tuple[str, ...] = ()) -> list[v2.Transform]:
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True), *_extras_float(extras)]
    if normalize == "imagenet":
        steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return steps


def _blur_kernel(image_size: int) -> int:
    """Odd kernel covering ~10% of the image, as the official 23 px at 224 px."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def bt_views(preset: BTPreset, image_size: int, normalize: Normalization, extras: tuple[str, ...] = ()) -> tuple[v2.Compose, v2.Compose]:
    """Build the two view transforms of a Barlow Twins preset, plus optional extra distortions."""
    if preset not in BT_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {sorted(BT_PRESETS)}")
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"unknown extra augmentations {sorted(unknown)}; choose from {list(EXTRAS)}")
    aug = BT_PRESETS[preset]
    s = aug.jitter_strength
    views = []
    for view in (0, 1):
        steps: list[v2.Transform] = [
            v2.RandomResizedCrop(image_size, scale=aug.crop_scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(aug.flip_p),
        ]
        if aug.rotation_p > 0:
            steps.append(v2.RandomApply([v2.RandomRotation(aug.rotation_degrees)], p=aug.rotation_p))
        steps += _extras_uint8(tuple(extras))
        steps += [
            v2.RandomApply([v2.ColorJitter(0.4 * s, 0.4 * s, 0.2 * s, 0.1 * s)], p=aug.jitter_p),
            v2.RandomGrayscale(aug.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(_blur_kernel(image_size), sigma=(0.1, 2.0))], p=aug.blur_p[view]),
            v2.RandomSolarize(threshold=128, p=aug.solarize_p[view]),
        ]
        views.append(v2.Compose(steps + _to_float(normalize, tuple(extras))))
    return views[0], views[1]


def finetune_train_transform(image_size: int, normalize: Normalization) -> v2.Compose:
    """The seed's fine-tuning augmentation: crop 0.7-1, flip and +-45 deg rotation each with p 0.25."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(0.25),
            v2.RandomApply([v2.RandomRotation(45.0)], p=0.25),
            *_to_float(normalize),
        ]
    )


def eval_transform(image_size: int, normalize: Normalization) -> v2.Compose:
    """Deterministic evaluation view: the stored square resized to the model's input size."""
    return v2.Compose([v2.Resize(image_size, antialias=True), *_to_float(normalize)])
