"""Where a lesionssl pretraining step spends its time: reading uint8 batches from the store (and
moving them to the device), batch augmentation, and the model step - each measured alone, plus
the top operators of the augmentation from torch.profiler. One JSON object per line:

    python benchmarks/profile_data_path.py --size 64 --images fullsize
    python benchmarks/profile_data_path.py --device cuda --size 224 --workers 4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from lesionssl.augment.batch import two_views
from lesionssl.data.loaders import pretrain_loader
from lesionssl.data.store import build_store, stored_size

from common import SHARED_IMAGES, device_name, emit, image_set, workdir


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", choices=["shared", "fullsize"], default="shared")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--source", type=Path, default=SHARED_IMAGES)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    paths = image_set(args.images, args.source, (args.batches + 1) * args.batch_size, workdir(args.workdir))
    images = build_store(paths, stored_size(args.size), "decoding images")
    data = pretrain_loader(
        images, np.arange(len(paths)), args.batch_size, args.workers, seed=0, pin_memory=args.device == "cuda"
    )
    views = two_views("official", args.size, "imagenet").to(args.device)

    batches = iter(data)
    next(batches)
    started = time.perf_counter()
    on_device = [b.to(args.device, non_blocking=True) for _, b in zip(range(args.batches), batches)]
    _sync(args.device)
    loader_s = time.perf_counter() - started

    views(on_device[0])
    started = time.perf_counter()
    for batch in on_device:
        views(batch)
    _sync(args.device)
    augment_s = time.perf_counter() - started

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        views(on_device[0])
        _sync(args.device)
    key = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
    top = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:8]
    pairs = args.batches * args.batch_size
    emit(
        {
            "bench": "data_path",
            "images": args.images,
            "size": args.size,
            "device": device_name(),
            "workers": args.workers,
            "loader_pairs_per_s": round(pairs / loader_s, 1),
            "augment_pairs_per_s": round(pairs / augment_s, 1),
            "augment_ms_per_batch": round(1000 * augment_s / args.batches, 2),
            "augment_top_ops_ms": {e.key: round(getattr(e, key) / 1000, 2) for e in top},
        }
    )


if __name__ == "__main__":
    main()
