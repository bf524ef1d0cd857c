"""Evaluation throughput: lesionssl's decode-once store vs the usual per-image PIL pipeline.

Both paths run the same ResNet-18 (eval mode, float32) over the same N images at the same size;
the baseline decodes and resizes every JPEG with PIL on each pass, as torchvision ImageFolder +
transforms do. Prints one JSON object per line: {"bench": "eval", ...}.

    python benchmarks/bench_eval.py --images 10000 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lesionssl.augment.views import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from lesionssl.config import RuntimeConfig
from lesionssl.data.loaders import labelled_loader
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine import make_trainer
from lesionssl.finetune.module import ClassifierModule

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skin-lesions"


class PILFolder(Dataset):
    """What users run today: open, decode, resize and normalise each file on every pass."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths = paths
        self.transform = torchvision.transforms.Compose([
            torchvision.transforms.Resize(size), torchvision.transforms.CenterCrop(size),
            torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), 0


def _model() -> ClassifierModule:
    backbone = torchvision.models.resnet18()
    backbone.fc = torch.nn.Identity()
    return ClassifierModule(backbone, 512, 8).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    labels = pd.read_csv(SHARED / "labels.csv", keep_default_na=False)
    paths = [str(SHARED / "images" / name) for name in labels["image"][: args.images]]
    torch.manual_seed(0)
    module = _model()
    os.environ.setdefault("LESIONSSL_CACHE", tempfile.mkdtemp(prefix="lesionssl-bench-"))

    started = time.perf_counter()
    images = build_store(paths, stored_size(args.size))
    store_build_s = time.perf_counter() - started

    table = pd.DataFrame({"label": [""] * len(paths), "row": np.arange(len(paths))})
    started = time.perf_counter()
    data = labelled_loader(images, table, ["x"], eval_transform(args.size, "imagenet"), args.batch_size, 0, shuffle=False)
    ours = torch.cat(make_trainer(RuntimeConfig(accelerator="cpu"), 1).predict(module, data))
    ours_s = time.perf_counter() - started

    started = time.perf_counter()
    with torch.inference_mode():
        baseline = torch.cat([torch.softmax(module(x), 1) for x, _ in DataLoader(PILFolder(paths, args.size), batch_size=args.batch_size)])
    baseline_s = time.perf_counter() - started

    model_only = torch.randn(args.batch_size, 3, args.size, args.size)
    with torch.inference_mode():
        module(model_only)
        started = time.perf_counter()
        for _ in range(5):
            module(model_only)
        model_s = (time.perf_counter() - started) / (5 * args.batch_size)
    print(json.dumps({
        "bench": "eval", "images": len(paths), "size": args.size, "threads": torch.get_num_threads(),
        "lesionssl_s": round(ours_s, 2), "lesionssl_img_per_s": round(len(paths) / ours_s, 1),
        "baseline_s": round(baseline_s, 2), "baseline_img_per_s": round(len(paths) / baseline_s, 1),
        "ratio": round(baseline_s / ours_s, 3), "model_only_img_per_s": round(1 / model_s, 1),
        "store_build_s": round(store_build_s, 2), "outputs_shape": list(ours.shape), "baseline_shape": list(baseline.shape),
    }))


if __name__ == "__main__":
    main()
