"""Scaling: pretraining epoch time against the number of images, and ``compare`` wall time
against ``--jobs``. One JSON object per line:

    python benchmarks/bench_scaling.py epoch --counts 1000,4000,16000 --size 64
    python benchmarks/bench_scaling.py jobs --jobs 1,2

``epoch`` times one full lesionssl pretraining epoch (ResNet-18, projector 2048-2048, batch 128)
on the first N shared images (all 15,787 when N is larger), after the store is built (its build
time is reported too). ``jobs`` runs the demo experiment (synthetic lesions: 1 pretraining, 6
fine-tunes) once to produce its pretraining, then times the fine-tuning phase - all six runs -
with each ``--jobs`` value, from scratch each time.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from lesionssl.augment.batch import two_views
from lesionssl.config import RuntimeConfig
from lesionssl.data.loaders import pretrain_loader
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine.trainer import make_trainer
from lesionssl.experiment.compare import compare
from lesionssl.experiment.demo import demo_config
from lesionssl.optim.one_cycle import set_hyperparameters
from lesionssl.pretraining.methods import get_method
from lesionssl.pretraining.module import SelfSupervisedModule

from common import SHARED_IMAGES, LightningClock, emit, source_images, workdir


def epoch_time(count: int, size: int, batch_size: int) -> dict:
    paths = source_images(SHARED_IMAGES, min(count, sum(1 for _ in SHARED_IMAGES.glob("*.jpg"))))
    started = time.perf_counter()
    images = build_store(paths, stored_size(size), "decoding images")
    build_s = time.perf_counter() - started
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18()
    backbone.fc = torch.nn.Identity()
    module = SelfSupervisedModule(
        backbone,
        get_method("barlow_twins", {"projector": [2048, 2048], "lambd": 1 / 2048}),
        views=two_views("official", size, "imagenet"),
    )
    set_hyperparameters(module.persistent_optimizer(), 1e-4)
    data = pretrain_loader(images, np.arange(len(paths)), batch_size, 0, seed=0)
    clock = LightningClock(warmup=0)
    started = time.perf_counter()
    make_trainer(RuntimeConfig(accelerator="cpu"), 1, [clock]).fit(module, data)
    epoch_s = time.perf_counter() - started
    pairs = len(data) * batch_size
    return {
        "bench": "scaling_epoch",
        "images": len(paths),
        "size": size,
        "batch_size": batch_size,
        "steps": len(data),
        "epoch_s": round(epoch_s, 1),
        "pairs_per_s": round(pairs / epoch_s, 1),
        "store_build_s": round(build_s, 1),
        "threads": torch.get_num_threads(),
    }


def jobs_time(jobs_values: list[int], scratch: Path) -> list[dict]:
    out = scratch / "demo"
    shutil.rmtree(out, ignore_errors=True)
    config = demo_config(out)
    started = time.perf_counter()
    compare(config.model_copy(update={"jobs": 1}))
    first = time.perf_counter() - started
    records = []
    for jobs in jobs_values:
        shutil.rmtree(out / "runs")
        started = time.perf_counter()
        compare(config.model_copy(update={"jobs": jobs}))
        records.append(
            {
                "bench": "scaling_jobs",
                "jobs": jobs,
                "finetune_runs": 6,
                "finetune_phase_s": round(time.perf_counter() - started, 1),
                "first_full_compare_s": round(first, 1),
                "cpus": torch.get_num_threads(),
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["epoch", "jobs"])
    parser.add_argument("--counts", default="1000,4000,16000")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    scratch = workdir(args.workdir)
    if args.what == "epoch":
        for count in (int(c) for c in args.counts.split(",")):
            emit(epoch_time(count, args.size, args.batch_size))
    else:
        for record in jobs_time([int(j) for j in args.jobs.split(",")], scratch):
            emit(record)


if __name__ == "__main__":
    main()
