"""``lesionssl reproduce isic2019``: the seed study end to end, from the download to the report.

Downloads the ISIC 2019 training images and ground truth into ``--root`` when absent (resumable,
checksum-verified; the ISIC archive publishes no checksums, so the sha256 of the first download is
recorded in ``<root>/lock.json`` and checked on every later use), builds the seed split (at most
500 training images per class, the rest is test), pre-pretrains Barlow Twins from the official
ImageNet weights on the transductive pool, and runs the seed's three initialisations x 35 seeds
with the ``seed-faithful`` preset. ``--quick`` runs a CPU-sized version (ResNet-18, 64 px, 3 seeds).
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesionssl.config import CompareConfig, validate
from lesionssl.download import download, verify
from lesionssl.experiment.compare import compare
from lesionssl.progress import progress_bar

ISIC_BASE = "https://isic-challenge-data.s3.amazonaws.com/2019"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
IMAGES = "ISIC_2019_Training_Input"


@dataclass(frozen=True)
class Source:
    """Where the ISIC 2019 files come from (overridable, e.g. by a mirror or the tests)."""

    base_url: str = ISIC_BASE

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


def prepare_isic2019(root: Path, source: Source = Source()) -> Path:
    """Make sure ``root`` holds the ground truth and the extracted images; return the CSV path."""
    root.mkdir(parents=True, exist_ok=True)
    lock = root / "lock.json"
    ground_truth = root / GROUND_TRUTH
    if not ground_truth.is_file():
        download(source.url(GROUND_TRUTH), ground_truth)
    verify(source.url(GROUND_TRUTH), ground_truth, lock)
    images = root / IMAGES
    if not images.is_dir():
        archive = root / f"{IMAGES}.zip"
        if not archive.is_file():
            download(source.url(archive.name), archive)
        verify(source.url(archive.name), archive, lock)
        _extract(archive, root)
    return ground_truth


def _extract(archive: Path, root: Path) -> None:
    """Unzip into a temporary folder, then rename it into place (an interrupted extraction restarts)."""
    staging = root / f".{IMAGES}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        with progress_bar(f"extracting {archive.name}", len(members)) as advance:
            for member in members:
                handle.extract(member, staging)
                advance()
    inner = staging / IMAGES if (staging / IMAGES).is_dir() else staging
    inner.rename(root / IMAGES)
    shutil.rmtree(staging, ignore_errors=True)


def reproduce_config(root: Path, quick: bool, out: Path | None = None) -> CompareConfig:
    """The seed-faithful experiment on the downloaded data (or its CPU-sized ``--quick`` version)."""
    values: dict[str, Any] = {
        "preset": "seed-faithful",
        "data": [str(root / GROUND_TRUTH)],
        "out": str(out or root / "runs" / ("seed-faithful-quick" if quick else "seed-faithful")),
        "reference": "seed-isic2019",
    }
    if quick:
        values |= {
            "split": {"per_class_cap": 50},
            "seeds": [0, 1, 2],
            "pretrain": {
                "backbone": "resnet18",
                "init": "tv-resnet18-v1",
                "image_size": 64,
                "epochs": 2,
                "projector": [1024, 1024],
                "lambd": None,
            },
            "finetune": {"backbone": "resnet18", "image_size": 64, "epochs": 5, "tta": 0},
            "initialisations": [
                {"name": "supervised-imagenet", "init": "tv-resnet18-v1"},
                {"name": "pre-pretrained", "init": "pretrain"},
            ],
        }
    return validate(CompareConfig, values, "reproduce")


def reproduce(root: Path, quick: bool = False, jobs: int = 1, source: Source = Source()) -> Path:
    """Download (if needed), then run the experiment; return the report."""
    prepare_isic2019(root, source)
    return compare(reproduce_config(root, quick).model_copy(update={"jobs": jobs}))
