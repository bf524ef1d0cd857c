"""Pretraining throughput: a lesionssl Barlow Twins epoch vs what users run today.

* **lesionssl**: the decode-once store, uint8 batches, batch-level augmentation on the training
  device, ``SelfSupervisedModule`` (Barlow Twins) in Lightning - the code ``lesionssl pretrain`` runs.
* **baseline**: an ImageFolder-style dataset (PIL decode of every file, every epoch), lightly's
  ``BYOLTransform`` (the official Barlow Twins views, per image, PIL), lightly's
  ``BarlowTwinsProjectionHead`` and ``BarlowTwinsLoss`` in a plain PyTorch loop.

Both use the same images, backbone, projector widths, lambda, batch size, image size, optimiser
(Adam, fixed LR), precision and number of steps; the first ``--warmup`` steps are not timed, data
loading of the timed steps is. ``model_only`` is lesionssl's step on ready-made views (no data
path). Image sets: ``shared`` (the 128 px JPEGs of ../shared/data/skin-lesions) and
``fullsize`` (the same images re-encoded once at 1024 px on the longer side, as users' ISIC
files are). One JSON object per line and measurement:

    python benchmarks/bench_pretrain.py                       # sizes 32, 64, 128 x both image sets
    python benchmarks/bench_pretrain.py --size 64 --images fullsize
    python benchmarks/bench_pretrain.py --device cuda --backbone resnet50 --size 224 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lesionssl.augment.batch import two_views
from lesionssl.config import RuntimeConfig
from lesionssl.data.loaders import pretrain_loader
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine.trainer import make_trainer
from lesionssl.optim.one_cycle import set_hyperparameters
from lesionssl.pretraining.methods import get_method
from lesionssl.pretraining.module import SelfSupervisedModule

from common import (
    SHARED_IMAGES,
    FileDataset,
    LightningClock,
    PeakMemory,
    StepClock,
    device_name,
    emit,
    image_set,
    workdir,
)

LR = 1e-4


def _backbone(name: str) -> torch.nn.Module:
    """Any lesionssl backbone (a torchvision ResNet, ``efficientnet_lite0``, ``timm:NAME``), random weights, no classifier."""
    from lesionssl.models.backbones import build_backbone

    return build_backbone(name, "random")[0]


def _autocast(args, device: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")


def run_baseline(paths: list[str], args, device: str) -> dict:
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules import BarlowTwinsProjectionHead
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    torch.manual_seed(0)
    transform = BYOLTransform(BYOLView1Transform(input_size=args.size), BYOLView2Transform(input_size=args.size))
    loader = DataLoader(
        FileDataset(paths, transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.baseline_workers,
        pin_memory=device == "cuda",
        persistent_workers=args.baseline_workers > 0,
    )
    backbone = _backbone(args.backbone).to(device)
    features = backbone(torch.zeros(2, 3, 32, 32, device=device)).shape[1]
    head = BarlowTwinsProjectionHead(features, args.projector[0], args.projector[-1]).to(device)
    criterion = BarlowTwinsLoss(lambda_param=args.lambd)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=LR)
    clock = StepClock(args.warmup)
    with PeakMemory() as memory:
        for step, (views, _) in enumerate(loader):
            x0, x1 = (v.to(device, non_blocking=True) for v in views)
            with _autocast(args, device):
                loss = criterion(head(backbone(x0)), head(backbone(x1)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.tick(step)
    return {"baseline_pairs_per_s": clock.rate(args.batch_size), **memory.result("baseline")}


def _module(args, views) -> SelfSupervisedModule:
    torch.manual_seed(0)
    backbone = _backbone(args.backbone)
    features = backbone(torch.zeros(2, 3, 32, 32)).shape[1]
    method = get_method("barlow_twins", {"projector": args.projector, "lambd": args.lambd})
    module = SelfSupervisedModule(backbone, method, channels_last=args.channels_last, views=views, in_dim=features)
    set_hyperparameters(module.persistent_optimizer(), LR)
    return module


def _fit(module: SelfSupervisedModule, data, args, device: str) -> float:
    clock = LightningClock(args.warmup)
    runtime = RuntimeConfig(accelerator="gpu" if device == "cuda" else "cpu", precision=args.precision)
    make_trainer(runtime, 1, [clock]).fit(module, data)
    return clock.clock.rate(args.batch_size)


def run_lesionssl(paths: list[str], args, device: str) -> dict:
    started = time.perf_counter()
    images = build_store(paths, stored_size(args.size), "decoding images")
    build_s = time.perf_counter() - started
    data = pretrain_loader(
        images, np.arange(len(paths)), args.batch_size, args.lesionssl_workers, seed=0, pin_memory=device == "cuda"
    )
    views = two_views("official", args.size, "imagenet")
    with PeakMemory() as memory:
        rate = _fit(_module(args, views), data, args, device)
    result = {"lesionssl_pairs_per_s": rate, "lesionssl_store_build_s": round(build_s, 2), **memory.result("lesionssl")}
    # Model only: the same step on views made once, already on the device.
    sample = torch.from_numpy(np.array(images[: args.batch_size])).permute(0, 3, 1, 2).to(device)
    pair = tuple(v.detach() for v in views.to(device)(sample))
    ready = DataLoader([pair] * (args.warmup + args.steps), batch_size=None)
    result["lesionssl_model_only_pairs_per_s"] = _fit(_module(args, views), ready, args, device)
    return result


def measure(name: str, size: int, args, device: str, scratch: Path) -> dict:
    args.size = size
    count = (args.warmup + args.steps) * args.batch_size
    paths = image_set(name, args.source, count, scratch)
    ours = run_lesionssl(paths, args, device)
    base = run_baseline(paths, args, device)
    epoch_pairs = args.steps * args.batch_size
    first_epoch_s = epoch_pairs / ours["lesionssl_pairs_per_s"] + ours["lesionssl_store_build_s"] * args.steps / (
        args.warmup + args.steps
    )
    record = {
        "bench": "pretrain",
        "images": name,
        "size": size,
        "backbone": args.backbone,
        "projector": args.projector,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "precision": args.precision,
        "device": device_name(),
        "threads": torch.get_num_threads(),
        "lesionssl_workers": args.lesionssl_workers,
        "baseline_workers": args.baseline_workers,
        **ours,
        **base,
        "ratio": ours["lesionssl_pairs_per_s"] / base["baseline_pairs_per_s"],
        "data_path_efficiency": ours["lesionssl_pairs_per_s"] / ours["lesionssl_model_only_pairs_per_s"],
        # The store is built once per image set and reused by every epoch and stage; this ratio
        # charges this epoch's share of the build to lesionssl.
        "ratio_first_epoch": (epoch_pairs / base["baseline_pairs_per_s"]) / first_epoch_s,
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", choices=["shared", "fullsize", "all"], default="all")
    parser.add_argument("--size", default="all", help="32, 64, 128, ... or 'all' (32, 64, 128)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument(
        "--projector", default="2048,2048", help="widths after the backbone (lightly's head: hidden, output)"
    )
    parser.add_argument("--lambd", type=float, default=0.0051)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lesionssl-workers", type=int, default=None, help="default: 0 on CPU, 4 on CUDA")
    parser.add_argument(
        "--baseline-workers", type=int, default=None, help="default: 0 on CPU (fastest on 2 cores), 8 on CUDA"
    )
    parser.add_argument("--source", type=Path, default=SHARED_IMAGES, help="folder of JPEGs")
    parser.add_argument(
        "--workdir", default=None, help="scratch folder (fullsize images, store); default: a new temp dir"
    )
    args = parser.parse_args()
    args.projector = [int(d) for d in args.projector.split(",")]
    cuda = args.device == "cuda"
    args.lesionssl_workers = (4 if cuda else 0) if args.lesionssl_workers is None else args.lesionssl_workers
    args.baseline_workers = (8 if cuda else 0) if args.baseline_workers is None else args.baseline_workers
    scratch = workdir(args.workdir)
    sizes = [32, 64, 128] if args.size == "all" else [int(args.size)]
    sets = ["shared", "fullsize"] if args.images == "all" else [args.images]
    for name in sets:
        for size in sizes:
            emit(measure(name, size, args, args.device, scratch))


if __name__ == "__main__":
    main()
