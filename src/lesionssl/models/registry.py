"""Named pretrained weights: source URL, checksum, architecture and preprocessing (timm-style).

Downloads go to ``$LESIONSSL_CACHE/weights``; they resume from a ``.part`` file with an HTTP
Range request, show progress, and are verified before use. Where the publisher gives a checksum
it is pinned here (torchvision puts the first 8 hex digits of the sha256 in the file name); where
none is published (the Facebook AI checkpoints), the sha256 seen at the first download is
recorded in ``weights/lock.json`` and every later use must match it (trust on first use), and
the report says so.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lesionssl.data.store import cache_root
from lesionssl.errors import LesionSSLError
from lesionssl.progress import progress_bar

IMAGENET_PREPROCESSING = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bilinear", "resize": 256, "crop": 224}
CHUNK = 1 << 20


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
        WeightsEntry("tv-resnet18-v1", "resnet18", "supervised", "https://download.pytorch.org/models/resnet18-f37072fd.pth", sha256_prefix="f37072fd", notes="torchvision IMAGENET1K_V1, 69.76% top-1"),
        WeightsEntry("tv-resnet50-v1", "resnet50", "supervised", "https://download.pytorch.org/models/resnet50-0676ba61.pth", sha256_prefix="0676ba61", notes="torchvision IMAGENET1K_V1, 76.13% top-1"),
        WeightsEntry(
            "tv-resnet50-v2", "resnet50", "supervised", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", sha256_prefix="11ad3fa6",
            preprocessing={**IMAGENET_PREPROCESSING, "resize": 232}, notes="torchvision IMAGENET1K_V2, 80.86% top-1; the seed's supervised baseline",
        ),
        WeightsEntry(
            "bt-resnet50-hub", "resnet50", "barlow-twins", "https://dl.fbaipublicfiles.com/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth",
            notes="official Barlow Twins, the URL torch.hub (hubconf.py) loads; backbone only; the seed's self-supervised init",
        ),
        WeightsEntry("bt-resnet50-ljng", "resnet50", "barlow-twins", "https://dl.fbaipublicfiles.com/barlowtwins/ljng/resnet50.pth", notes="official Barlow Twins, the URL the README links since Dec 2021; backbone only"),
        WeightsEntry(
            "bt-resnet50-ljng-full", "resnet50", "barlow-twins", "https://dl.fbaipublicfiles.com/barlowtwins/ljng/checkpoint.pth", has_projector=True,
            notes="official full checkpoint (module.backbone.*, module.projector.*): continue Barlow Twins with its projector",
        ),
        WeightsEntry("vicreg-resnet50", "resnet50", "vicreg", "https://dl.fbaipublicfiles.com/vicreg/resnet50.pth", notes="official VICReg ResNet-50 (torch.hub facebookresearch/vicreg)"),
    )
}


def weights_dir() -> Path:
    return cache_root() / "weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock() -> dict[str, str]:
    path = weights_dir() / "lock.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def verify(entry: WeightsEntry, path: Path) -> str:
    """Check a downloaded file against the pinned checksum (or the one recorded at first use).

    Returns:
        How it was verified: ``sha256``, ``sha256-prefix`` or ``first-use``.
    """
    actual = _sha256(path)
    if entry.sha256 is not None:
        expected, how = entry.sha256, "sha256"
    elif entry.sha256_prefix is not None:
        expected, how = entry.sha256_prefix, "sha256-prefix"
    else:
        lock = _lock()
        expected, how = lock.setdefault(entry.url, actual), "first-use"
        (weights_dir() / "lock.json").write_text(json.dumps(lock, indent=2))
    if not actual.startswith(expected):
        path.unlink()
        raise LesionSSLError(f"checksum mismatch for {entry.name} ({entry.url}): expected {expected}, got {actual}; the file was removed, run again to re-download")
    return how


def _download(url: str, target: Path) -> None:
    """Download ``url`` to ``target``, resuming a previous ``.part`` with a Range request."""
    partial = target.with_suffix(target.suffix + ".part")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = response.status == 206
            total = int(response.headers.get("Content-Length", 0)) + (start if resumed else 0)
            with partial.open("ab" if resumed else "wb") as handle, progress_bar(f"downloading {target.name}", max(1, total // CHUNK)) as advance:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    advance()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LesionSSLError(f"could not download {url} ({reason}); download it by other means and pass the file with --init PATH") from None
    partial.rename(target)


def fetch(name: str) -> tuple[Path, WeightsEntry, str]:
    """Path of a registered checkpoint (downloaded and verified if needed), its entry, and how it was verified."""
    if name not in REGISTRY:
        raise LesionSSLError(f"unknown weights {name!r}; registered: {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    target = weights_dir() / entry.name / Path(entry.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file():
        _download(entry.url, target)
    return target, entry, verify(entry, target)
