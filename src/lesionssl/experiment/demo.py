"""``lesionssl demo``: the whole chain on synthetic lesions (or a real dataset) in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

from lesionssl.config import CompareConfig, validate
from lesionssl.data.sources import read_sources
from lesionssl.data.synthetic import make_synthetic_dataset
from lesionssl.experiment.compare import compare


def demo_config(out: Path, data: list[str] | None = None, seeds: int = 3) -> CompareConfig:
    """A small, CPU-friendly experiment on EfficientNet-Lite0 at 32 px: random weights, the
    installed supervised ImageNet weights (the recommended start), and Barlow Twins continued from
    them on the pool (recipe ``continue``, the seed's pre-pretraining).

    On synthetic data (no ``data``) the split takes 24 labelled images per class; on a real
    dataset 40 per class, grouped by lesion when lesion ids are known.
    """
    synthetic = not data
    if synthetic:
        root = make_synthetic_dataset(out / "data")
        data = [str(root / "labelled"), str(root / "unlabelled")]
    table = read_sources(data)
    group_by = "lesion_id" if (table["lesion_id"] != "").any() else None
    values = {
        "data": data,
        "out": str(out),
        "split": {"per_class": 24 if synthetic else 40, "group_by": group_by, "seed": 0},
        "initialisations": [
            {"name": "random", "init": "random"},
            {"name": "imagenet", "init": "imagenet"},
            {"name": "imagenet-barlow-twins", "init": "pretrain", "pretrain": {"init": "imagenet"}},
        ],
        "seeds": list(range(seeds)),
        "pretrain": {
            "backbone": "efficientnet_lite0",
            "image_size": 32,
            "batch_size": 128,
            "epochs": 4 if synthetic else 2,
            "projector": [1024, 1024],
        },
        "finetune": {
            "backbone": "efficientnet_lite0",
            "image_size": 32,
            "batch_size": 32,
            "epochs": 8 if synthetic else 5,
        },
    }
    return validate(CompareConfig, values, "demo")


def run_demo(out: Path, data: list[str] | None = None, seeds: int = 3) -> Path:
    """Build the demo experiment and run it; return the report path."""
    return compare(demo_config(Path(out), data, seeds))
