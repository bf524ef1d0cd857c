"""Batch-level augmentation: every image its own random parameters, whole batches at once.

A :class:`BatchView` turns a ``(B, 3, H, W)`` uint8 batch (straight from the decoded store) into
a float batch of training views, on whatever device the batch is on (CPU or GPU). It follows the
per-image torchvision definitions of ``augment.views`` step by step, in the same order:

1. random resized crop (torchvision's 10-attempt sampler), horizontal flip, rotation (fill 0)
   and quarter turns - composed into one affine map per image and resampled once with
   ``grid_sample`` (bicubic or bilinear);
2. colour jitter with the four adjustments in a random order per image (torchvision
   ``ColorJitter``), grayscale, Gaussian blur (per-image sigma, reflect padding), solarize;
3. the float extras (Sobel, Gaussian noise, cutout) and normalisation.

Random parameters are drawn on the CPU from torch's global generator (reseeded every epoch by
``EpochSeed``), so results do not depend on the device and resumed runs repeat exactly.
``grid_sample`` does not antialias: with the default store margin a crop is never shrunk by more
than 1.14x; larger stored images are first resized (antialiased) to at most 1.5x the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lesionssl.augment.views import (
    EXTRAS,
    PAIR_PRESETS,
    SIGMA_REFERENCE_SIZE,
    Normalization,
    PairAugmentation,
    PairPreset,
    Preprocessing,
    as_preprocessing,
)

#: ITU-R 601 luma weights, as torchvision's ``rgb_to_grayscale``.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Largest input / output side ratio resampled without antialiasing.
MAX_SHRINK = 1.5
#: Solarize threshold of the official code (128 on uint8 images).
SOLARIZE_THRESHOLD = 128 / 255


@dataclass(frozen=True)
class ViewSpec:
    """Parameters of one view; probabilities are per image."""

    size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    flip_p: float = 0.5
    rotation_degrees: float = 0.0
    rotation_p: float = 0.0
    rotate90_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    jitter_p: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    sobel_p: float = 0.0
    noise_p: float = 0.0
    noise_sigma: float = 0.05
    cutout_p: float = 0.0
    cutout_scale: tuple[float, float] = (0.02, 0.2)
    cutout_ratio: tuple[float, float] = (0.3, 3.3)
    normalize: Normalization | Preprocessing = "imagenet"

    @property
    def blur_kernel(self) -> int:
        """Odd kernel covering ~10% of the image, as the official 23 px at 224 px."""
        return max(3, int(0.1 * self.size) // 2 * 2 + 1)


def _bernoulli(p: float, n: int) -> Tensor:
    return torch.rand(n) < p


def _uniform(low: float, high: float, n: int) -> Tensor:
    return torch.empty(n).uniform_(low, high)


def sample_crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], attempts: int = 10
) -> Tensor:
    """``(n, 4)`` crop boxes ``(top, left, h, w)`` drawn as torchvision's ``RandomResizedCrop``:
    up to 10 (area, log-ratio) attempts per image, else a centre crop clamped to ``ratio``."""
    area = height * width
    target = area * torch.empty(n, attempts).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1)
    pick = torch.arange(n)
    h, w, found = h[pick, first], w[pick, first], valid.any(dim=1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback = (round(width / ratio[0]), width)
    elif in_ratio > ratio[1]:
        fallback = (height, round(height * ratio[1]))
    else:
        fallback = (height, width)
    h = torch.where(found, h, float(fallback[0]))
    w = torch.where(found, w, float(fallback[1]))
    top = torch.where(
        found, torch.floor(torch.rand(n) * (height - h + 1)), torch.div(height - h, 2, rounding_mode="floor")
    )
    left = torch.where(
        found, torch.floor(torch.rand(n) * (width - w + 1)), torch.div(width - w, 2, rounding_mode="floor")
    )
    return torch.stack([top, left, h, w], dim=1)


def _grayscale(x: Tensor) -> Tensor:
    weights = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * factor.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    factor = factor.view(-1, 1, 1, 1)
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (factor * x + (1 - factor) * mean).clamp(0, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * x + (1 - factor) * _grayscale(x)).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns (HSV round trip, as torchvision's ``adjust_hue``)."""
    value, _ = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(dim=1)
    # Hue in sextants [0, 6): which channel is the maximum decides the formula.
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = hue + 6 * shift.view(-1, 1, 1)
    # HSV -> RGB: channel n is V - V S clamp(min(k, 4 - k), 0, 1), k = (n + hue) mod 6, and V S = chroma.
    channels = [
        value - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
        for k in (torch.remainder(n + hue, 6) for n in (5, 3, 1))
    ]
    return torch.stack(channels, dim=1).clamp(0, 1)


COLOUR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel: int) -> Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding (torchvision's)."""
    n, c, h, w = x.shape
    radius = kernel // 2
    offsets = torch.linspace(-radius, radius, kernel, device=x.device, dtype=x.dtype)
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1).to(x)) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, k)
    pad_h, pad_w = min(radius, h - 1), min(radius, w - 1)
    flat = F.pad(x.reshape(1, n * c, h, w), (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    if pad_w < radius or pad_h < radius:  # images smaller than the kernel: pad the rest with edges
        flat = F.pad(flat, (radius - pad_w, radius - pad_w, radius - pad_h, radius - pad_h), mode="replicate")
    flat = F.conv2d(flat, weights.view(n * c, 1, 1, kernel), groups=n * c)
    flat = F.conv2d(flat, weights.view(n * c, 1, kernel, 1), groups=n * c)
    return flat.view(n, c, h, w)


def sobel(x: Tensor) -> Tensor:
    """Sobel edge magnitude of the luminance, scaled to [0, 1] per image, on 3 channels."""
    gray = F.pad(_grayscale(x), (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype).view(
        1, 1, 3, 3
    )
    magnitude = torch.sqrt(F.conv2d(gray, kx) ** 2 + F.conv2d(gray, kx.transpose(-1, -2)) ** 2)
    peak = magnitude.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (magnitude / peak).expand(-1, 3, -1, -1)


def _per_image_steps(steps: list[tuple[Tensor, object, tuple[Tensor, ...]]], device: torch.device):
    """For each ``(mask, op, args)``: the chosen images' indices and their arguments on ``device``.

    Indices and arguments are gathered on the CPU and moved in two packed copies, so a GPU is
    not synchronised with the host once per step.
    """
    indices = [mask.nonzero().flatten() for mask, _, _ in steps]
    args = [a[index] for (_, _, step_args), index in zip(steps, indices) for a in step_args]
    packed_indices = torch.cat(indices).to(device).split([len(i) for i in indices])
    packed_args = iter(
        torch.cat([a.flatten() for a in args]).to(device).split([a.numel() for a in args]) if args else []
    )
    for (_, op, step_args), index, original in zip(steps, packed_indices, indices):
        moved = [next(packed_args).view(len(original), *a.shape[1:]) for a in step_args]
        yield op, index, moved


def _check_batch(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) uint8 batch, got {tuple(images.shape)} {images.dtype}")


class _Normalizing(nn.Module):
    """Holds the normalisation constants (moved with the module to the training device)."""

    def __init__(self, normalize: Normalization | Preprocessing) -> None:
        super().__init__()
        self.preprocessing = as_preprocessing(normalize)
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1), persistent=False)

    def normalized(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std).contiguous()


class EvalView(_Normalizing):
    """The deterministic evaluation view of a uint8 batch: the stored squares resized
    (antialiased, as torchvision's ``Resize``, with the backbone's interpolation: bilinear
    unless its pretrained configuration says otherwise) to ``size`` and normalised."""

    def __init__(self, size: int, normalize: Normalization | Preprocessing) -> None:
        super().__init__(normalize)
        self.size = size

    def forward(self, images: Tensor) -> Tensor:
        _check_batch(images)
        with torch.autocast(images.device.type, enabled=False):
            x = images.float().div_(255)
            if x.shape[-2:] != (self.size, self.size):
                x = F.interpolate(
                    x,
                    size=(self.size, self.size),
                    mode=self.preprocessing.interpolation,
                    antialias=True,
                    align_corners=False,
                ).clamp_(0, 1)
            return self.normalized(x)


class BatchView(_Normalizing):
    """One augmented view of a uint8 batch, each image with its own random parameters.

    ``sample`` draws the parameters (CPU tensors), ``apply`` renders them; calling the module
    does both. Inputs are ``(B, 3, H, W)`` uint8, outputs ``(B, 3, size, size)`` float32.
    """

    def __init__(self, spec: ViewSpec) -> None:
        super().__init__(spec.normalize)
        self.spec = spec

    def sample(self, n: int, height: int, width: int) -> dict[str, Tensor]:
        s = self.spec
        params = {"box": sample_crop_boxes(n, height, width, s.crop_scale, s.crop_ratio)}
        params["flip"] = _bernoulli(s.flip_p, n)
        angle = torch.where(
            _bernoulli(s.rotation_p, n), _uniform(-s.rotation_degrees, s.rotation_degrees, n), torch.zeros(n)
        )
        quarter = torch.where(_bernoulli(s.rotate90_p, n), torch.randint(1, 4, (n,)), torch.zeros(n, dtype=torch.long))
        params["angle"] = angle + 90.0 * quarter
        b, c, sat, h = s.jitter
        params["jitter"] = _bernoulli(s.jitter_p, n)
        params["jitter_order"] = torch.argsort(torch.rand(n, 4), dim=1)
        params["jitter_factors"] = torch.stack(
            [_uniform(1 - b, 1 + b, n), _uniform(1 - c, 1 + c, n), _uniform(1 - sat, 1 + sat, n), _uniform(-h, h, n)],
            dim=1,
        )
        params["grayscale"] = _bernoulli(s.grayscale_p, n)
        params["blur"] = _bernoulli(s.blur_p, n)
        params["blur_sigma"] = _uniform(*s.blur_sigma, n)
        params["solarize"] = _bernoulli(s.solarize_p, n)
        params["sobel"] = _bernoulli(s.sobel_p, n)
        params["noise"] = _bernoulli(s.noise_p, n)
        params["cutout"] = _bernoulli(s.cutout_p, n)
        params["cutout_box"] = sample_crop_boxes(n, s.size, s.size, s.cutout_scale, s.cutout_ratio)
        return params

    def geometry(
        self, params: dict[str, Tensor], height: int, width: int, device: torch.device
    ) -> tuple[Tensor, Tensor | None]:
        """Sampling grid ``(B, size, size, 2)`` into the input and the mask of in-view pixels
        (None when every pixel is in view).

        Output coordinates are rotated, flipped, then mapped into the crop box (normalised
        coordinates, ``align_corners=False``); pixels rotated out of the crop are filled with 0.
        """
        top, left, h, w = params["box"].unbind(dim=1)
        radians = torch.deg2rad(params["angle"])
        cos, sin = torch.cos(radians), torch.sin(radians)
        zeros = torch.zeros_like(cos)
        rotation = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
        grid = F.affine_grid(rotation.to(device), [len(cos), 1, self.spec.size, self.spec.size], align_corners=False)
        # Quarter turns map the square onto itself; only other angles leave corners to fill.
        inside = (grid.abs() <= 1 + 1e-4).all(dim=-1) if bool((params["angle"] % 90 != 0).any()) else None
        sign = torch.where(params["flip"], -1.0, 1.0)
        scale = torch.stack([sign * w / width, h / height], dim=1).to(device)
        centre = torch.stack([(2 * left + w) / width - 1, (2 * top + h) / height - 1], dim=1).to(device)
        return grid * scale.view(-1, 1, 1, 2) + centre.view(-1, 1, 1, 2), inside

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        _check_batch(images)
        s, (_, _, height, width), device = self.spec, images.shape, images.device
        # Geometry and colour in float32 even under autocast: bf16 would visibly band the images.
        with torch.autocast(device.type, enabled=False):
            x = images.float().div_(255)
            limit = round(MAX_SHRINK * s.size)
            if max(height, width) > limit:
                scale = limit / max(height, width)
                x = F.interpolate(
                    x,
                    size=(round(height * scale), round(width * scale)),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
            grid, inside = self.geometry(params, height, width, device)
            x = F.grid_sample(x, grid, mode=s.interpolation, padding_mode="zeros", align_corners=False)
            if inside is not None:
                x = x * inside.unsqueeze(1)
            x = x.clamp_(0, 1)  # bicubic overshoots
            p = params
            steps = [
                (p["jitter"] & (p["jitter_order"][:, position] == op_index), op, (p["jitter_factors"][:, op_index],))
                for position in range(4)
                for op_index, op in enumerate(COLOUR_OPS)
            ]
            steps += [
                (p["grayscale"], lambda t: _grayscale(t).expand(-1, 3, -1, -1), ()),
                (p["blur"], lambda t, sigma: gaussian_blur(t, sigma, s.blur_kernel), (p["blur_sigma"],)),
                (p["solarize"], lambda t: torch.where(t >= SOLARIZE_THRESHOLD, 1 - t, t), ()),
                (p["sobel"], sobel, ()),
                (p["noise"], lambda t: (t + s.noise_sigma * torch.randn_like(t)).clamp(0, 1), ()),
                (p["cutout"], self._erase, (p["cutout_box"],)),
            ]
            # Each step runs on the images it applies to only (e.g. hue on 80% of them, once).
            for op, index, args in _per_image_steps(steps, device):
                if len(index):
                    x = x.index_copy(0, index, op(x.index_select(0, index), *args))
            return self.normalized(x)

    @staticmethod
    def _erase(x: Tensor, boxes: Tensor) -> Tensor:
        top, left, h, w = (v.view(-1, 1, 1) for v in boxes.unbind(dim=1))
        rows = torch.arange(x.shape[2], device=x.device).view(1, -1, 1)
        cols = torch.arange(x.shape[3], device=x.device).view(1, 1, -1)
        hole = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return x * ~hole.unsqueeze(1)

    def forward(self, images: Tensor) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], images.shape[2], images.shape[3]))


class Views(nn.Module):
    """The views of a uint8 batch, one per spec (a method's ``view_specs``; two by default).

    With ``partner`` (a second image of each lesion, for lesion positives) the first view is
    drawn from ``images`` and every other view from ``partner``.
    """

    def __init__(self, specs: Sequence[ViewSpec]) -> None:
        super().__init__()
        self.views = nn.ModuleList(BatchView(spec) for spec in specs)

    def forward(self, images: Tensor, partner: Tensor | None = None) -> list[Tensor]:
        return [view(images if i == 0 or partner is None else partner) for i, view in enumerate(self.views)]


def resolve_preset(preset: PairPreset | PairAugmentation) -> PairAugmentation:
    """A preset name (``augment.views.PAIR_PRESETS``) or explicit parameters."""
    if isinstance(preset, PairAugmentation):
        return preset
    if preset not in PAIR_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {sorted(PAIR_PRESETS)}")
    return PAIR_PRESETS[preset]


def two_view_specs(
    preset: PairPreset | PairAugmentation,
    image_size: int,
    normalize: Normalization | Preprocessing,
    extras: tuple[str, ...] = (),
) -> tuple[ViewSpec, ViewSpec]:
    """The two views of a preset plus extras, at ``image_size``."""
    aug = resolve_preset(preset)
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"unknown extra augmentations {sorted(unknown)}; choose from {list(EXTRAS)}")
    sigma_scale = image_size / SIGMA_REFERENCE_SIZE
    common = dict(
        size=image_size,
        crop_scale=aug.crop_scale,
        interpolation="bicubic",
        flip_p=aug.flip_p,
        rotation_degrees=aug.rotation_degrees,
        rotation_p=aug.rotation_p,
        rotate90_p=max(aug.rotate90_p, 0.5 if "rotate90" in extras else 0.0),
        jitter=aug.jitter,
        jitter_p=aug.jitter_p,
        grayscale_p=aug.grayscale_p,
        blur_sigma=(aug.blur_sigma[0] * sigma_scale, aug.blur_sigma[1] * sigma_scale),
        sobel_p=0.2 if "sobel" in extras else 0.0,
        noise_p=0.5 if "noise" in extras else 0.0,
        cutout_p=0.5 if "cutout" in extras else 0.0,
        normalize=normalize,
    )
    first, second = (ViewSpec(**common, blur_p=aug.blur_p[v], solarize_p=aug.solarize_p[v]) for v in (0, 1))
    return first, second


def two_views(
    preset: PairPreset | PairAugmentation,
    image_size: int,
    normalize: Normalization | Preprocessing,
    extras: tuple[str, ...] = (),
) -> Views:
    """Batch module producing the two views of a preset."""
    return Views(two_view_specs(preset, image_size, normalize, extras))


def finetune_view(image_size: int, normalize: Normalization | Preprocessing) -> BatchView:
    """The seed's fine-tuning augmentation: crop 0.7-1, flip and +-45 deg rotation each with p 0.25."""
    return BatchView(
        ViewSpec(
            size=image_size,
            crop_scale=(0.7, 1.0),
            flip_p=0.25,
            rotation_degrees=45.0,
            rotation_p=0.25,
            normalize=normalize,
        )
    )
