"""Named pretrained weights: source URL, checksum, architecture and preprocessing (timm-style).

Downloads go to ``$LESIONSSL_CACHE/weights`` (see :mod:`lesionssl.download`: resumable,
verified). torchvision puts the first 8 hex digits of the sha256 in its file names and those are
pinned here; the Facebook AI checkpoints publish no checksum, so theirs is recorded at the first
download (``weights/lock.json``) and every later use must match it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lesionssl.augment.views import IMAGENET_MEAN, IMAGENET_STD
from lesionssl.data.store import cache_root
from lesionssl.download import download, verify
from lesionssl.errors import LesionSSLError

IMAGENET_PREPROCESSING = {
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "interpolation": "bilinear",
    "resize": 256,
    "crop": 224,
}


@dataclass(frozen=True)
class WeightsEntry:
    """One registered set of weights."""

    name: str
    architecture: str
    method: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    has_projector: bool = False
    preprocessing: dict = field(default_factory=lambda: dict(IMAGENET_PREPROCESSING))
    notes: str = ""


REGISTRY: dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in (
        WeightsEntry(
            "tv-resnet18-v1",
            "resnet18",
            "supervised",
            "https://download.pytorch.org/models/resnet18-f37072fd.pth",
            sha256_prefix="f37072fd",
            notes="torchvision IMAGENET1K_V1, 69.76% top-1",
        ),
        WeightsEntry(
            "tv-resnet50-v1",
            "resnet50",
            "supervised",
            "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            sha256_prefix="0676ba61",
            notes="torchvision IMAGENET1K_V1, 76.13% top-1",
        ),
        WeightsEntry(
            "tv-resnet50-v2",
            "resnet50",
            "supervised",
            "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
            sha256_prefix="11ad3fa6",
            preprocessing={**IMAGENET_PREPROCESSING, "resize": 232},
            notes="torchvision IMAGENET1K_V2, 80.86% top-1; the seed's supervised baseline",
        ),
        WeightsEntry(
            "bt-resnet50-hub",
            "resnet50",
            "barlow-twins",
            "https://dl.fbaipublicfiles.com/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth",
            notes="official Barlow Twins, the URL torch.hub (hubconf.py) loads; backbone only; the seed's self-supervised init",
        ),
        WeightsEntry(
            "bt-resnet50-ljng",
            "resnet50",
            "barlow-twins",
            "https://dl.fbaipublicfiles.com/barlowtwins/ljng/resnet50.pth",
            notes="official Barlow Twins, the URL the README links since Dec 2021; backbone only",
        ),
        WeightsEntry(
            "bt-resnet50-ljng-full",
            "resnet50",
            "barlow-twins",
            "https://dl.fbaipublicfiles.com/barlowtwins/ljng/checkpoint.pth",
            has_projector=True,
            notes="official full checkpoint (module.backbone.*, module.projector.*): continue Barlow Twins with its projector",
        ),
        WeightsEntry(
            "vicreg-resnet50",
            "resnet50",
            "vicreg",
            "https://dl.fbaipublicfiles.com/vicreg/resnet50.pth",
            notes="official VICReg ResNet-50 (torch.hub facebookresearch/vicreg)",
        ),
    )
}


def weights_dir() -> Path:
    return cache_root() / "weights"


def fetch(name: str) -> tuple[Path, WeightsEntry, str]:
    """Path of a registered checkpoint (downloaded and verified if needed), its entry, and how it was verified."""
    if name not in REGISTRY:
        raise LesionSSLError(f"unknown weights {name!r}; registered: {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    target = weights_dir() / entry.name / Path(entry.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file():
        download(entry.url, target)
    return target, entry, verify(entry.url, target, weights_dir() / "lock.json", entry.sha256, entry.sha256_prefix)
