"""Fine-tuning and evaluation throughput: lesionssl vs the usual per-image PIL pipeline.

* ``finetune``: one training epoch of ResNet + linear head. lesionssl: decode-once store, uint8
  batches, the seed's fine-tuning augmentation batch-wise on the device, ``ClassifierModule`` in
  Lightning. Baseline: ImageFolder-style PIL decoding of every file + the same augmentation per
  image with torchvision (crop 0.7-1, flip 0.25, rotation 45 deg p 0.25) in a plain loop.
  ``model_only`` is lesionssl's step on a ready-made batch.
* ``eval``: predicting ``--eval-images`` images (default 10,000): store + batch-wise resize on the device vs
  PIL decode + resize per pass.
* ``predict``: ``lesionssl predict`` end to end on the same images, from a saved model folder,
  with a fresh store cache (decoding every file, store, temperature, CSV), then once more with its
  store cached, against the ``eval`` numbers of the same run; and the
  exported ONNX model in onnxruntime on ready-made batches against PyTorch's model-only rate.

Same images, backbone, batch size, image size, optimiser (Adam, fixed LR) and precision. One JSON
object per line and measurement:

    python benchmarks/bench_finetune.py --size 64
    python benchmarks/bench_finetune.py --size 64 --images fullsize --eval-images 2000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T

from lesionssl.augment.batch import EvalView, finetune_view
from lesionssl.augment.views import IMAGENET_MEAN, IMAGENET_STD
from lesionssl.config import RuntimeConfig
from lesionssl.data.loaders import eval_loader, train_loader
from lesionssl.data.store import build_store, stored_size
from lesionssl.engine.trainer import make_trainer
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.optim.one_cycle import set_hyperparameters

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
CLASSES = [str(i) for i in range(8)]


def _runtime(args) -> RuntimeConfig:
    return RuntimeConfig(accelerator="gpu" if args.device == "cuda" else "cpu", precision=args.precision)


def _module(args) -> ClassifierModule:
    torch.manual_seed(0)
    backbone = getattr(torchvision.models, args.backbone)()
    features = backbone.fc.in_features
    backbone.fc = torch.nn.Identity()
    module = ClassifierModule(
        backbone,
        features,
        len(CLASSES),
        channels_last=args.channels_last,
        augment=finetune_view(args.size, "imagenet"),
        eval_view=EvalView(args.size, "imagenet"),
    )
    set_hyperparameters(module.persistent_optimizer(), LR)
    return module


def _table(count: int) -> pd.DataFrame:
    return pd.DataFrame({"label": [CLASSES[i % len(CLASSES)] for i in range(count)], "row": np.arange(count)})


def _fit(module: ClassifierModule, data, args) -> float:
    clock = LightningClock(args.warmup)
    make_trainer(_runtime(args), 1, [clock]).fit(module, data)
    return clock.clock.rate(args.batch_size)


def finetune_lesionssl(paths: list[str], args) -> dict:
    started = time.perf_counter()
    images = build_store(paths, stored_size(args.size), "decoding images")
    build_s = time.perf_counter() - started
    data = train_loader(
        images,
        _table(len(paths)),
        CLASSES,
        args.batch_size,
        args.lesionssl_workers,
        seed=0,
        pin_memory=args.device == "cuda",
    )
    with PeakMemory() as memory:
        rate = _fit(_module(args), data, args)
    module = _module(args)
    sample = torch.from_numpy(np.array(images[: args.batch_size])).permute(0, 3, 1, 2).to(args.device)
    ready = (
        module.augment.to(args.device)(sample).detach(),
        torch.arange(args.batch_size, device=args.device) % len(CLASSES),
        None,
    )
    model_only = _fit(module, DataLoader([ready] * (args.warmup + args.steps), batch_size=None), args)
    return {
        "lesionssl_img_per_s": rate,
        "lesionssl_model_only_img_per_s": model_only,
        "lesionssl_store_build_s": round(build_s, 2),
        **memory.result("lesionssl"),
    }


def finetune_baseline(paths: list[str], args) -> dict:
    torch.manual_seed(0)
    transform = T.Compose(
        [
            T.RandomResizedCrop(args.size, scale=(0.7, 1.0)),
            T.RandomHorizontalFlip(0.25),
            T.RandomApply([T.RandomRotation(45)], p=0.25),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    loader = DataLoader(
        FileDataset(paths, transform, len(CLASSES)),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.baseline_workers,
        pin_memory=args.device == "cuda",
        persistent_workers=args.baseline_workers > 0,
    )
    model = getattr(torchvision.models, args.backbone)(num_classes=len(CLASSES)).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    clock = StepClock(args.warmup)
    with PeakMemory() as memory:
        for step, (x, y) in enumerate(loader):
            x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.tick(step)
    return {"baseline_img_per_s": clock.rate(args.batch_size), **memory.result("baseline")}


def evaluate(paths: list[str], args) -> dict:
    module = _module(args).eval()
    started = time.perf_counter()
    images = build_store(paths, stored_size(args.size), "decoding images")
    build_s = time.perf_counter() - started
    with PeakMemory() as ours_memory:
        started = time.perf_counter()
        data = eval_loader(
            images,
            _table(len(paths)),
            CLASSES,
            2 * args.batch_size,
            args.lesionssl_workers,
            pin_memory=args.device == "cuda",
        )
        ours = torch.cat(make_trainer(_runtime(args), 1).predict(module, data))
        ours_s = time.perf_counter() - started
    transform = T.Compose(
        [T.Resize(args.size), T.CenterCrop(args.size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    loader = DataLoader(
        FileDataset(paths, transform, len(CLASSES)),
        batch_size=2 * args.batch_size,
        num_workers=args.baseline_workers,
        pin_memory=args.device == "cuda",
    )
    module = module.to(args.device)
    with (
        PeakMemory() as base_memory,
        torch.inference_mode(),
        torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"),
    ):
        started = time.perf_counter()
        baseline = torch.cat([torch.softmax(module(x.to(args.device)).float(), 1).cpu() for x, _ in loader])
        baseline_s = time.perf_counter() - started
        ready = torch.randn(2 * args.batch_size, 3, args.size, args.size, device=args.device)
        module(ready)
        started = time.perf_counter()
        for _ in range(5):
            module(ready)
        if args.device == "cuda":
            torch.cuda.synchronize()
        model_only = 5 * 2 * args.batch_size / (time.perf_counter() - started)
    assert ours.shape == baseline.shape
    return {
        "eval_images": len(paths),
        "lesionssl_s": round(ours_s, 2),
        "lesionssl_img_per_s": len(paths) / ours_s,
        "baseline_s": round(baseline_s, 2),
        "baseline_img_per_s": len(paths) / baseline_s,
        "ratio": baseline_s / ours_s,
        "lesionssl_model_only_img_per_s": model_only,
        "data_path_efficiency": len(paths) / ours_s / model_only,
        "lesionssl_store_build_s": round(build_s, 2),
        **ours_memory.result("lesionssl"),
        **base_memory.result("baseline"),
    }


def predict_end_to_end(paths: list[str], args, scratch: Path, evaluated: dict) -> dict:
    """``predict_images`` on ``paths`` from a model folder, next to the ``eval`` bench's numbers."""
    from dataclasses import asdict

    from lesionssl.augment.views import as_preprocessing
    from lesionssl.config import STORE_MARGIN
    from lesionssl.deploy.model import save_model
    from lesionssl.deploy.predict import predict_images
    from lesionssl.records import ModelRecord

    folder = scratch / "model"
    record = ModelRecord(
        architecture=args.backbone,
        classes=CLASSES,
        image_size=args.size,
        store_margin=STORE_MARGIN,
        preprocessing=asdict(as_preprocessing("imagenet")),
        train_prior=[1 / len(CLASSES)] * len(CLASSES),
        temperature=1.3,
    )
    save_model(folder, _module(args), record)
    listing = scratch / "predict.csv"
    pd.DataFrame({"path": paths}).to_csv(listing, index=False)
    os.environ["LESIONSSL_CACHE"] = str(scratch / "predict-cache")  # new images: the eval bench's store is not there
    timings = []
    for _ in range(2):  # first call: decode + store build; second: the store is cached
        started = time.perf_counter()
        result = predict_images(
            folder, [str(listing)], scratch / "predictions.csv", batch_size=2 * args.batch_size, runtime=_runtime(args)
        )
        timings.append(time.perf_counter() - started)
    seconds = timings[0]
    values = {
        "predict_images": result.predicted,
        "predict_s": round(seconds, 2),
        "predict_img_per_s": result.predicted / seconds,
        "predict_again_img_per_s": result.predicted / timings[1],
        "eval_img_per_s": evaluated["lesionssl_img_per_s"],
        "eval_plus_store_build_img_per_s": len(paths)
        / (evaluated["lesionssl_s"] + evaluated["lesionssl_store_build_s"]),
        "predict_vs_eval_plus_build": (evaluated["lesionssl_s"] + evaluated["lesionssl_store_build_s"]) / seconds,
        "baseline_img_per_s": evaluated["baseline_img_per_s"],
        "predict_vs_baseline": evaluated["baseline_s"] / seconds,
        "torch_model_only_img_per_s": evaluated["lesionssl_model_only_img_per_s"],
    }
    try:
        import onnxruntime
    except ImportError:
        return values
    from lesionssl.deploy.export import export_model

    session = onnxruntime.InferenceSession(
        str(export_model(folder, "onnx", scratch / "onnx")), providers=onnxruntime.get_available_providers()
    )
    batch = np.random.default_rng(0).standard_normal((2 * args.batch_size, 3, args.size, args.size), dtype=np.float32)
    session.run(None, {"image": batch})
    started = time.perf_counter()
    for _ in range(5):
        session.run(None, {"image": batch})
    return values | {"onnxruntime_model_only_img_per_s": 5 * len(batch) / (time.perf_counter() - started)}


def finetune_stages(args, scratch: Path) -> dict:
    """``lesionssl finetune`` end to end on ``--stage-images`` training images (8 classes of the
    shared set, 5 test images per class), with the time of each stage of Algorithm 1: store,
    head epoch, LR finder, 1cycle epochs, and the test evaluation with the run's outputs."""
    from lesionssl.config import FinetuneConfig, SplitConfig, validate
    from lesionssl.data.classes import resolve_class_order
    from lesionssl.data.sources import read_sources
    from lesionssl.data.split import make_split, write_manifest
    from lesionssl.finetuning import run

    per_class = max(1, args.stage_images // 8)
    table = read_sources([args.source.parent])
    labelled = table[table["label"] != ""].sample(frac=1.0, random_state=0)
    table = labelled.groupby("label").head(per_class + 5)
    spec = SplitConfig(per_class=per_class, seed=0)
    manifest = make_split(table.reset_index(drop=True), spec)
    path = scratch / "stages" / "split.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, path, spec, resolve_class_order(manifest["label"]), [str(args.source.parent)])
    seconds: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    originals = {name: getattr(run, name) for name in ("build_store", "head_epochs", "choose_lr")}
    for name, fn in originals.items():
        setattr(run, name, timed(name, fn))
    try:
        config = validate(
            FinetuneConfig,
            {
                "manifest": str(path),
                "out": str(scratch / "stages" / "ft"),
                "image_size": args.size,
                "backbone": args.backbone,
                "batch_size": args.stage_batch_size,
                "init": "random",
                "tracking": {"tensorboard": False, "mlflow": False},
            },
        )
        started = time.perf_counter()
        metrics = run.finetune(config)
        total = time.perf_counter() - started
    finally:
        for name, fn in originals.items():
            setattr(run, name, fn)
    # The 1cycle epochs and everything after training (test predictions, figures, card) are the rest.
    rest = total - sum(seconds.values())
    return {
        "train_images": metrics["train_images"],
        "test_images": metrics["test_images"],
        "epochs": config.epochs,
        "total_s": round(total, 2),
        "store_s": round(seconds["build_store"], 2),
        "head_s": round(seconds["head_epochs"], 2),
        "lr_finder_s": round(seconds["choose_lr"], 2),
        "one_cycle_and_outputs_s": round(rest, 2),
        "lr_finder_share": seconds["choose_lr"] / total,
        "lr": f"{metrics['lr']:.6g}",
        **finder_sweeps(args, path),
    }


def finder_sweeps(args, manifest_path: Path) -> dict:
    """The LR finder's sweep on the stages bench's training images, from the same weights and
    seed: one pass over the loader's epochs (lesionssl) against one Lightning epoch per pass over
    the images (the sweep as lesionssl ran it before; what Lightning's own tuner does too)."""
    import lightning as L

    from lesionssl.data.split import read_manifest
    from lesionssl.optim.lr_finder import LRFinderCallback, run_lr_finder

    manifest = read_manifest(manifest_path)
    table = manifest.table.assign(row=np.arange(len(manifest.table)))
    train = table[table["split"] == "train"].reset_index(drop=True)
    images = build_store(table["path"].tolist(), stored_size(args.size), "decoding images")
    data = train_loader(images, train, manifest.classes, args.stage_batch_size, 0, seed=0)
    runtime = _runtime(args)
    values = {}
    for name in ("epochs", "one_pass"):
        module = _module(args)
        L.seed_everything(0, verbose=False)
        started = time.perf_counter()
        if name == "epochs":
            finder = LRFinderCallback()
            make_trainer(runtime, finder.num_it // len(data) + 1, [finder]).fit(module, data)
            result = finder.result()
        else:
            result = run_lr_finder(
                lambda callbacks, epochs, loader, module=module: make_trainer(runtime, epochs, callbacks).fit(
                    module, loader
                ),
                module,
                data,
            )
        values[f"sweep_{name}_s"] = round(time.perf_counter() - started, 2)
        values[f"sweep_{name}_valley"] = f"{result.suggestions['valley']:.6g}"
    values["sweep_speedup"] = values["sweep_epochs_s"] / values["sweep_one_pass_s"]
    return values


def _record(bench: str, name: str, args, values: dict) -> dict:
    record = {
        "bench": bench,
        "images": name,
        "size": args.size,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": device_name(),
        "threads": torch.get_num_threads(),
        **values,
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", choices=["shared", "fullsize", "all"], default="all")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed fine-tuning steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-images", type=int, default=10000)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lesionssl-workers", type=int, default=None, help="default: 0 on CPU, 4 on CUDA")
    parser.add_argument(
        "--baseline-workers", type=int, default=None, help="default: 0 on CPU (fastest on 2 cores), 8 on CUDA"
    )
    parser.add_argument(
        "--skip",
        choices=["finetune", "eval", "predict", "stages"],
        action="append",
        default=[],
        help="benches to leave out (repeatable); predict needs eval",
    )
    parser.add_argument(
        "--only",
        choices=["finetune", "eval", "predict", "stages"],
        default=None,
        help="run this bench alone (stages: the whole finetune command, timed per stage)",
    )
    parser.add_argument("--stage-images", type=int, default=80, help="training images of the stages bench (8 classes)")
    parser.add_argument(
        "--stage-batch-size", type=int, default=64, help="batch size of the stages bench (finetune's default)"
    )
    parser.add_argument("--source", type=Path, default=SHARED_IMAGES)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.lesionssl_workers = (4 if cuda else 0) if args.lesionssl_workers is None else args.lesionssl_workers
    args.baseline_workers = (8 if cuda else 0) if args.baseline_workers is None else args.baseline_workers
    scratch = workdir(args.workdir)
    if args.only:
        args.skip = [b for b in ("finetune", "eval", "predict", "stages") if b != args.only]
    if "stages" not in args.skip:
        values = finetune_stages(args, scratch)
        emit(_record("stages", "shared", args, values | {"batch_size": args.stage_batch_size}))
    for name in ["shared", "fullsize"] if args.images == "all" else [args.images]:
        if "finetune" not in args.skip:
            paths = image_set(name, args.source, (args.warmup + args.steps) * args.batch_size, scratch)
            ours, base = finetune_lesionssl(paths, args), finetune_baseline(paths, args)
            values = {
                **ours,
                **base,
                "ratio": ours["lesionssl_img_per_s"] / base["baseline_img_per_s"],
                "data_path_efficiency": ours["lesionssl_img_per_s"] / ours["lesionssl_model_only_img_per_s"],
            }
            emit(_record("finetune", name, args, values))
        if "eval" not in args.skip:
            paths = image_set(name, args.source, args.eval_images, scratch)
            evaluated = evaluate(paths, args)
            emit(_record("eval", name, args, evaluated))
            if "predict" not in args.skip:
                emit(_record("predict", name, args, predict_end_to_end(paths, args, scratch, evaluated)))


if __name__ == "__main__":
    main()
