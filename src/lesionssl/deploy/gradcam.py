"""Grad-CAM maps of a fine-tuned classifier (Selvaraju et al., 2017).

For class ``c`` and the activations ``A^k`` of the last convolutional stage, Grad-CAM weighs each
channel by ``alpha_k = mean_ij d y^c / d A^k_ij`` (eq. 1) and maps ``ReLU(sum_k alpha_k A^k)``
(eq. 2), upsampled to the image. Captum's ``LayerGradCam`` computes it; this module picks the
layer, upsamples, normalises each map to [0, 1] and draws the overlays. Temperature scaling
divides every logit by the same number, so it leaves the maps unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.calibration import apply_temperature
from lesionssl.figures import plot_examples
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.io import write_csv
from lesionssl.layout import RunFolder
from lesionssl.progress import console

#: Side of each half of an explanation panel (image | overlay): dermoscopy at 64 px is too small to read.
DISPLAY = 224


def target_layer(backbone: nn.Module) -> nn.Module:
    """The last convolutional stage: a torchvision ResNet's ``layer4``, or the module of a timm
    model's last ``feature_info`` entry (its deepest feature map)."""
    if hasattr(backbone, "layer4"):
        return backbone.layer4
    info = getattr(backbone, "feature_info", None)
    if info:
        return backbone.get_submodule(info[-1]["module"])
    raise LesionSSLError(
        f"Grad-CAM needs a convolutional backbone with a spatial feature map; {type(backbone).__name__} has none that lesionssl knows"
    )


@dataclass(frozen=True)
class Heatmaps:
    """Grad-CAM maps of a batch of images and the probabilities they explain."""

    probabilities: np.ndarray  # (N, K), calibrated with the model's temperature
    targets: np.ndarray  # (N,) the class each map explains
    maps: np.ndarray  # (N, S, S) in [0, 1], at the size of the input images


def grad_cam(
    module: ClassifierModule,
    images: np.ndarray,
    temperature: float | None = None,
    targets: np.ndarray | None = None,
    batch_size: int = 32,
) -> Heatmaps:
    """Grad-CAM of ``images`` (``(N, S, S, 3)`` uint8, as the store keeps them) for ``targets``
    (default: each image's predicted class), through the model's evaluation view."""
    from captum.attr import LayerGradCam

    layer = target_layer(module.backbone)
    shapes: list[int] = []
    hook = layer.register_forward_hook(lambda _m, _i, output: shapes.append(output.dim()))
    cam, device = LayerGradCam(module, layer), next(module.parameters()).device
    probabilities, chosen, maps = [], [], []
    try:
        for start in range(0, len(images), batch_size):
            batch = module.eval_view(
                torch.tensor(images[start : start + batch_size]).permute(0, 3, 1, 2).to(device)
            )  # a copy: store arrays may be read-only
            with torch.no_grad():
                probs = torch.softmax(module(batch).float(), dim=1).cpu().numpy()
            target = probs.argmax(axis=1) if targets is None else np.asarray(targets[start : start + batch_size])
            attribution = cam.attribute(batch, target=torch.as_tensor(target, device=device), relu_attributions=True)
            if shapes[-1] != 4:
                raise LesionSSLError(
                    f"Grad-CAM needs a spatial feature map; the last stage of {type(module.backbone).__name__} gives {shapes[-1]}-d tokens"
                )
            upsampled = F.interpolate(
                attribution.detach().float(), size=images.shape[1:3], mode="bilinear", align_corners=False
            )[:, 0]
            peak = upsampled.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
            maps.append((upsampled / peak).cpu().numpy())
            probabilities.append(probs)
            chosen.append(target)
    finally:
        hook.remove()
    probs = np.concatenate(probabilities)
    return Heatmaps(
        apply_temperature(probs, temperature) if temperature is not None else probs,
        np.concatenate(chosen),
        np.concatenate(maps),
    )


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map in the jet colour map over the image (both ``(S, S)``-sized), as uint8 RGB."""
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)


def panel(image: np.ndarray, heat: np.ndarray) -> Image.Image:
    """The image and its overlay side by side, each enlarged to :data:`DISPLAY` pixels."""
    left = Image.fromarray(image).resize((DISPLAY, DISPLAY), Image.Resampling.BICUBIC)
    right = Image.fromarray(overlay(image, heat)).resize((DISPLAY, DISPLAY), Image.Resampling.BICUBIC)
    both = Image.new("RGB", (2 * DISPLAY, DISPLAY))
    both.paste(left, (0, 0))
    both.paste(right, (DISPLAY, 0))
    return both


def select_examples(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per class, the most confident correct prediction of it and the most confident wrong one
    (an image of another class predicted as it): positions into ``labels``."""
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    rows = []
    for k, name in enumerate(classes):
        for kind, candidates in (
            ("correct", (predicted == k) & (labels == k)),
            ("wrong", (predicted == k) & (labels != k)),
        ):
            if candidates.any():
                position = int(np.flatnonzero(candidates)[np.argmax(confidence[candidates])])
                rows.append(
                    {
                        "class": name,
                        "kind": kind,
                        "position": position,
                        "label": classes[labels[position]],
                        "probability": float(confidence[position]),
                    }
                )
    return pd.DataFrame(rows, columns=["class", "kind", "position", "label", "probability"])


def write_examples(
    out: Path,
    module: ClassifierModule,
    images: np.ndarray,
    test: pd.DataFrame,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    temperature: float | None,
) -> None:
    """``examples.png`` / ``examples.csv``: per class, the most confident correct and wrong test
    predictions with their Grad-CAM maps, for the report (chosen after training, shown only)."""
    examples = select_examples(labels, probs, classes)
    if examples.empty:
        return
    chosen = examples["position"].to_numpy()
    try:
        heat = grad_cam(module, images[chosen], temperature, probs.argmax(axis=1)[chosen])
    except LesionSSLError as exc:  # token models (ViTs) have no spatial map; the run itself is fine
        console.print(f"no examples.png: {exc}", markup=False)
        return
    plot_examples(
        examples,
        images[chosen],
        np.stack([overlay(images[i], m) for i, m in zip(chosen, heat.maps)]),
        RunFolder(out).examples_figure,
    )
    write_csv(RunFolder(out).examples, examples.drop(columns="position").assign(image=test["image"].to_numpy()[chosen]))
