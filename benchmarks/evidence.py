"""Pretraining evidence: ablations, the engine diagnosis and a long run (GPU), ablations (CPU).

Every job is a real ``lesionssl pretrain`` (the library, not a copy), followed by a frozen-feature
probe. Two probe protocols:

* ``ref``: the diagnosis of ../shared/research/bt-reference (its lesion-grouped split, 30% of
  the labelled groups as test, 32 px, 6 epochs): 50 labels per class from the pool, logistic
  regression with the preprocessing (standardise or L2) and C chosen by 3-fold CV on those
  labels, balanced accuracy on that test split, mean of 3 label draws.
* ``dev``: recipe selection on the evidence split *without its test or external images*: 25
  labels per class drawn from the labelled pool (val excluded), C chosen on the val split,
  balanced accuracy on the rest of the labelled pool; kNN (k 20) on the same draws; 3 draws.

Jobs run as subprocesses, several at once on the one GPU; the long run starts first and the
others queue by priority. Everything stops at ``--deadline`` seconds; what finished is in
``results.jsonl``, and the long run's backbone comes back in three safetensors parts.

``ablate`` runs the recipe ablations one after another on a random subset of the pool (e.g. on
a CPU): ``python benchmarks/evidence.py ablate --manifest runs/shared-evidence/manifest.csv
--out runs/ablations --pool-subset 3000 --size 32 --epochs 10``.

Usage (on the GPU machine, from the repository root):
    python benchmarks/evidence.py run --bundle .gpu --out $OUT --deadline 520
The bundle (images re-encoded at the 64 px store size, manifests) is made on the CPU machine by
``python benchmarks/evidence.py bundle --manifest ev-split.csv
--reference ref-split.csv --out .gpu``; it is never committed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

STORE_64 = 73  # the store side of 64 px training (margin 1.14)
DEV_CS = (0.001, 0.01, 0.1, 1.0)
POOL_SPLITS = ("train", "val", "unlabelled")


def bundle(args: argparse.Namespace) -> None:
    """Images at the 64 px store size as JPEG (quality 95) in one file, plus both manifests."""
    import pandas as pd
    from PIL import Image

    from lesionssl.data.store import build_store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from lesionssl.data.split import read_manifest

    manifest = read_manifest(args.manifest, check_leaks=False).table  # paths resolved below the data root
    images = build_store(manifest["path"].tolist(), STORE_64)
    blobs, offsets = [], [0]
    for array in images:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(array)).save(buffer, "JPEG", quality=95)
        blobs.append(buffer.getvalue())
        offsets.append(offsets[-1] + len(blobs[-1]))
    (out / "images.bin").write_bytes(b"".join(blobs))
    names = [Path(p).name for p in manifest["path"]]
    (out / "index.json").write_text(json.dumps({"names": names, "offsets": offsets}))
    for name, source in (("evidence", args.manifest), ("reference", args.reference)):
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
        table.to_csv(out / f"{name}.csv", index=False)
        Path(source).with_suffix(".json").is_file() and (out / f"{name}.json").write_text(
            Path(source).with_suffix(".json").read_text()
        )
    print(f"bundle: {len(names)} images, {offsets[-1] / 2**20:.1f} MiB")


def unpack(bundle_dir: Path, work: Path) -> dict[str, Path]:
    """Write the images as files and the manifests with their paths."""
    import pandas as pd

    index = json.loads((bundle_dir / "index.json").read_text())
    data = (bundle_dir / "images.bin").read_bytes()
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name, start, end in zip(index["names"], index["offsets"][:-1], index["offsets"][1:]):
        (folder / name).write_bytes(data[start:end])
    manifests = {}
    for name in ("evidence", "reference"):
        table = pd.read_csv(bundle_dir / f"{name}.csv", dtype=str, keep_default_na=False)
        table["path"] = [str(folder / Path(p).name) for p in table["path"]]  # absolute: read as written
        manifests[name] = work / f"{name}.csv"
        table.to_csv(manifests[name], index=False)
        meta = json.loads((bundle_dir / f"{name}.json").read_text())
        (work / f"{name}.json").write_text(json.dumps({**meta, "data_root": str(folder)}))
    return manifests


def calibrate(size: int = 64, batch: int = 128, steps: int = 30) -> float:
    """Model-only pairs/s of the default recipe's step (bf16, channels_last), no loader."""
    import torch

    from lesionssl.augment.batch import two_views
    from lesionssl.models.backbones import build_backbone
    from lesionssl.pretraining.methods import get_method
    from lesionssl.pretraining.module import SelfSupervisedModule

    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone, _ = build_backbone("resnet18", "random")
    method = get_method("barlow_twins", {"projector": [2048, 2048], "lambd": 0.0051})
    module = SelfSupervisedModule(backbone, method, 1e-5, True, None, two_views("small-data", size, "imagenet")).to(
        device
    )
    optimizer = module.persistent_optimizer()
    images = torch.randint(0, 255, (batch, 3, round(size * 1.14), round(size * 1.14)), dtype=torch.uint8, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step in range(steps + 5):
        if step == 5:
            sync()
            started = time.time()
        view_a, view_b = module.views(images)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = method.loss(module(view_a), module(view_b)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    return steps * batch / (time.time() - started)


# ----------------------------------------------------------------------------- probes


def _labels(table) -> np.ndarray:
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    return table["label"].map({c: i for i, c in enumerate(classes)}).fillna(-1).astype(int).to_numpy()


def _features(backbone_file: str | None, manifest: Path, rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    import pandas as pd
    import torch

    from lesionssl.data.store import build_store, stored_size
    from lesionssl.evaluate.probe import extract_features
    from lesionssl.models.backbones import build_backbone

    torch.manual_seed(seed)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    images = build_store(table["path"].tolist(), stored_size(size))
    backbone, _ = build_backbone("resnet18", backbone_file or "random")
    return extract_features(backbone.cuda() if torch.cuda.is_available() else backbone, images, rows, size, "imagenet")


def probe_reference(backbone_file: str | None, manifest: Path, size: int, seed: int = 0) -> dict:
    """The bt-reference probe: 50 per class from the pool, preprocessing and C by 3-fold CV."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    def model(pre: str, c: float):
        return make_pipeline(
            StandardScaler() if pre == "standardise" else Normalizer(), LogisticRegression(C=c, max_iter=3000)
        )

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    y = _labels(table)
    pool = np.flatnonzero(table["pretrain"].astype(int).to_numpy() == 1)
    test = np.flatnonzero(table["split"].to_numpy() == "test")
    labelled_pool = pool[y[pool] >= 0]
    rows = np.concatenate([labelled_pool, test])
    features = dict(zip(rows.tolist(), _features(backbone_file, manifest, rows, size, seed)))
    xt = np.stack([features[i] for i in test])
    scores, chosen = [], []
    for draw in range(3):
        r = random.Random(draw)
        train = []
        for c in range(8):
            candidates = [int(i) for i in labelled_pool if y[i] == c]
            r.shuffle(candidates)
            train += candidates[:50]
        x = np.stack([features[i] for i in train])
        grid = [(pre, c) for pre in ("standardise", "l2") for c in (0.01, 0.1, 1, 10)]
        cv = [cross_val_score(model(*pc), x, y[train], cv=3, scoring="balanced_accuracy").mean() for pc in grid]
        best = grid[int(np.argmax(cv))]
        scores.append(float(balanced_accuracy_score(y[test], model(*best).fit(x, y[train]).predict(xt))))
        chosen.append(best)
    return {"probe": "ref", "balanced_accuracy": float(np.mean(scores)), "draws": scores, "chosen": chosen}


def probe_dev(backbone_file: str | None, manifest: Path, size: int, seed: int = 0) -> dict:
    """Linear probe and kNN on the evidence split's labelled pool (never test or external)."""
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score

    from lesionssl.evaluate.probe import knn_probs, linear_probe

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    y = _labels(table)
    split = table["split"].to_numpy()
    labelled_pool = np.flatnonzero(np.isin(split, POOL_SPLITS) & (y >= 0))
    val = labelled_pool[split[labelled_pool] == "val"]
    features = dict(zip(labelled_pool.tolist(), _features(backbone_file, manifest, labelled_pool, size, seed)))
    out = {"probe": "dev", "linear": [], "knn": [], "C": []}
    rest_pool = labelled_pool[split[labelled_pool] != "val"]
    for draw in range(3):
        rng = np.random.default_rng(draw)
        train = np.concatenate([rng.permutation(rest_pool[y[rest_pool] == c])[:25] for c in range(8)])
        evaluate = np.setdiff1d(rest_pool, train)
        x, xv, xe = (np.stack([features[i] for i in part]) for part in (train, val, evaluate))
        probe = linear_probe(x, y[train], xv, y[val], 8, cs=DEV_CS)
        out["linear"].append(float(balanced_accuracy_score(y[evaluate], probe.predict_proba(xe).argmax(1))))
        out["knn"].append(float(balanced_accuracy_score(y[evaluate], knn_probs(x, y[train], xe, 8).argmax(1))))
        out["C"].append(probe.C)
    out["linear_balanced_accuracy"] = float(np.mean(out["linear"]))
    out["knn_balanced_accuracy"] = float(np.mean(out["knn"]))
    return out


# ----------------------------------------------------------------------------- jobs


def job(args: argparse.Namespace) -> None:
    """One job: pretrain (unless ``random``), then probe the backbone (and its snapshots)."""
    spec = json.loads(Path(args.spec).read_text())
    started = time.time()
    record = {"name": spec["name"], "settings": spec["settings"], "probe_protocol": spec["probe"]}
    manifest = Path(spec["manifest"])
    probe = probe_reference if spec["probe"] == "ref" else probe_dev
    size = spec["settings"].get("image_size", 64)
    if spec["settings"].get("init_only"):
        record["result"] = probe(None, manifest, size, seed=spec.get("seed", 0))
    else:
        from lesionssl.config import PretrainConfig, validate
        from lesionssl.pretraining.run import pretrain

        settings = {**spec["settings"], "manifest": str(manifest), "out": spec["out"]}
        config = validate(PretrainConfig, settings, spec["name"])
        backbone = pretrain(config)
        meta = json.loads(backbone.with_suffix(".json").read_text())
        _append(
            args.results,
            {
                **record,
                "stage": "trained",
                "backbone_json": meta,
                "history": (Path(spec["out"]) / "history.csv").read_text(),
            },
        )
        record["pretrain"] = {
            k: meta.get(k)
            for k in (
                "lr",
                "method",
                "method_kwargs",
                "positives",
                "cross_image_pairs_per_epoch",
                "final_loss",
                "seconds",
                "pool_images",
                "epochs",
                "recipe",
            )
        }
        record["pretrain"]["pairs_per_s"] = (
            config.epochs * (meta["pool_images"] // config.batch_size) * config.batch_size / meta["seconds"]
        )
        stages = Path(spec["out"]) / "checkpoints" / "stages.json"
        if stages.is_file():
            record["lr_finder"] = json.loads(stages.read_text()).get("lr_finder")
        record["history"] = (Path(spec["out"]) / "history.csv").read_text()
        record["config"] = (Path(spec["out"]) / "config.yaml").read_text()
        record["result"] = probe(str(backbone), manifest, size)
        snapshots = sorted((Path(spec["out"]) / "snapshots").glob("*.safetensors"))
        record["snapshots"] = {p.stem: probe(str(p), manifest, size) for p in snapshots}
    record["seconds"] = time.time() - started
    _append(args.results, record)


def _append(path: str, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def run(args: argparse.Namespace) -> None:
    """Unpack, calibrate, then run the long job and the queue until the deadline."""
    started = time.time()
    out, work = Path(args.out), Path("/tmp/evidence")
    work.mkdir(parents=True, exist_ok=True)
    os.environ["LESIONSSL_CACHE"] = str(work / "cache")
    manifests = unpack(Path(args.bundle), work)
    import pandas as pd

    from lesionssl.data.store import build_store, stored_size

    paths = pd.read_csv(manifests["evidence"], dtype=str, keep_default_na=False)["path"].tolist()
    for size in (32, 64):
        build_store(paths, stored_size(size))
    import torch

    rate = calibrate() if torch.cuda.is_available() else 100.0  # the CPU is only for trying the script out
    pool = int(pd.read_csv(manifests["evidence"], dtype=str, keep_default_na=False)["pretrain"].astype(int).sum())
    budget = args.deadline - (time.time() - started) - args.long_margin
    long_epochs = (
        int(min(args.max_long_epochs, max(args.min_long_epochs, args.long_share * rate * budget / pool)) // 10 * 10)
        or args.min_long_epochs
    )
    print(
        f"setup {time.time() - started:.0f}s; model-only {rate:.0f} pairs/s; long run {long_epochs} epochs", flush=True
    )
    gpu = {"precision": "bf16-mixed", "channels_last": True, "num_workers": 3}
    quiet = {"tracking": {"tensorboard": False, "mlflow": False}, "runtime": gpu}
    ev, ref = str(manifests["evidence"]), str(manifests["reference"])
    e = args.ablation_epochs
    jobs = [  # (name, manifest, probe, settings); the queue runs in this order
        ("dev-random-weights", ev, "dev", {"init_only": True}),
        ("dev-small-data", ev, "dev", {"epochs": e}),
        (
            "dev-previous-default",
            ev,
            "dev",
            {"recipe": "seed", "projector": [2048, 2048, 2048], "epochs": e, "augment": {"blur_sigma": [0.35, 7.0]}},
        ),
        ("ref-random-weights", ref, "ref", {"init_only": True, "image_size": 32}),
        ("ref-small-data", ref, "ref", {"image_size": 32, "epochs": args.ref_epochs}),
        (
            "ref-previous-default",
            ref,
            "ref",
            {
                "recipe": "seed",
                "projector": [2048, 2048, 2048],
                "image_size": 32,
                "epochs": 10 * args.ref_epochs // 6,
                "augment": {"blur_sigma": [0.7, 14.0]},
            },
        ),
        (
            "ref-reference-like",
            ref,
            "ref",
            {
                "image_size": 32,
                "epochs": args.ref_epochs,
                "augment": {"jitter": [0.4, 0.4, 0.0, 0.0], "blur_p": [0.0, 0.0], "rotate90_p": 0.5},
                "weight_decay": 1e-6,
            },
        ),
        ("dev-lr-find", ev, "dev", {"lr": "find", "epochs": e}),
        ("dev-defaults", ev, "dev", {}),
        ("dev-crop-0.08", ev, "dev", {"augment": {"crop_scale": [0.08, 1.0]}, "epochs": e}),
        (
            "dev-official-colour",
            ev,
            "dev",
            {"augment": {"jitter": [0.4, 0.4, 0.2, 0.1], "blur_p": [1.0, 0.1], "solarize_p": [0.0, 0.2]}, "epochs": e},
        ),
        ("dev-lambda-1/d", ev, "dev", {"lambd": 1 / 2048, "epochs": e}),
        ("dev-lr-3e-3", ev, "dev", {"lr": 3e-3, "epochs": e}),
        ("dev-lr-3e-4", ev, "dev", {"lr": 3e-4, "epochs": e}),
        ("dev-projector-8192x3", ev, "dev", {"projector": [8192, 8192, 8192], "epochs": e}),
        ("dev-batch-256", ev, "dev", {"batch_size": 256, "epochs": e}),
        ("dev-32px", ev, "dev", {"image_size": 32, "epochs": e}),
        (
            "ref-official-aug",
            ref,
            "ref",
            {
                "recipe": "seed",
                "augmentation": "official",
                "lambd": 0.0051,
                "projector": [2048, 2048],
                "lr": 1e-3,
                "image_size": 32,
                "epochs": args.ref_epochs,
                "augment": {"blur_sigma": [0.7, 14.0]},
            },
        ),
        (
            "ref-official-aug-fp32",
            ref,
            "ref",
            {
                "recipe": "seed",
                "augmentation": "official",
                "lambd": 0.0051,
                "projector": [2048, 2048],
                "lr": 1e-3,
                "image_size": 32,
                "epochs": args.ref_epochs,
                "augment": {"blur_sigma": [0.7, 14.0]},
                "runtime": {**gpu, "precision": "32-true"},
            },
        ),
    ]
    long_job = (
        "long-small-data",
        ev,
        "dev",
        {
            "epochs": long_epochs,
            "snapshot_every": max(1, round(long_epochs / 6 / 10)) * 10
            if long_epochs >= 80
            else max(1, long_epochs // 4),
        },
    )
    results = out / "results.jsonl"
    processes: dict[str, subprocess.Popen] = {}

    def launch(entry) -> subprocess.Popen:
        name, manifest, probe, settings = entry
        merged = {**quiet, **settings, "runtime": {**gpu, **settings.get("runtime", {})}}
        spec = {
            "name": name,
            "manifest": manifest,
            "probe": probe,
            "settings": merged,
            "out": str(work / "runs" / name.replace("/", "-")),
        }
        spec_file = work / f"{name.replace('/', '-')}.json"
        spec_file.write_text(json.dumps(spec))
        log = open(out / "logs.txt", "a")
        process = subprocess.Popen(
            [sys.executable, __file__, "job", "--spec", str(spec_file), "--results", str(results)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes[name] = process
        return process

    def worker(queue: list) -> None:
        while time.time() - started < args.deadline - 45:
            try:
                entry = queue.pop(0)
            except IndexError:
                return
            process = launch(entry)
            while process.poll() is None and time.time() - started < args.deadline:
                time.sleep(1)

    long_process = launch(long_job)
    long_started = time.time()
    queue = list(jobs)
    threads = [threading.Thread(target=worker, args=(queue,)) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    history = work / "runs" / "long-small-data" / "history.csv"
    yielded = False
    while time.time() - started < args.deadline and (long_process.poll() is None or any(t.is_alive() for t in threads)):
        time.sleep(3)
        done = max(0, sum(1 for line in open(history) if line.startswith("bt,")) if history.is_file() else 0)
        if long_process.poll() is None and done >= 2 and not yielded:
            finish = time.time() + (long_epochs - done) * (time.time() - long_started) / done
            if finish > started + args.deadline - args.long_margin:
                # The long run is what the evidence needs: give it the GPU.
                print(f"long run projected to end at {finish - started:.0f}s: stopping the other jobs", flush=True)
                yielded = True
                queue.clear()
                for name, process in processes.items():
                    if name != long_job[0] and process.poll() is None:
                        process.kill()
    for name, process in processes.items():
        if process.poll() is None:
            process.kill()
            print(f"killed at the deadline: {name}", flush=True)
    final = work / "runs" / "long-small-data" / "backbone.safetensors"
    if final.is_file():
        _split(final, out)
    print(
        f"done in {time.time() - started:.0f}s; {sum(1 for _ in open(results)) if results.is_file() else 0} jobs finished",
        flush=True,
    )
    for line in open(results) if results.is_file() else []:
        record = json.loads(line)
        result = record.get("result", {})
        print(
            record["name"],
            {k: round(v, 4) for k, v in result.items() if isinstance(v, float)},
            record.get("pretrain", {}).get("pairs_per_s"),
            flush=True,
        )


#: CPU ablations of the small-data recipe: (name, settings changed from it).
ABLATIONS = [
    ("random-weights", {"init_only": True}),
    ("small-data", {}),
    ("augmentation-official", {"augmentation": "official"}),
    ("augmentation-seed", {"augmentation": "seed"}),
    ("crop-0.08", {"augment": {"crop_scale": [0.08, 1.0]}}),
    ("lambda-1/d", {"lambd": 1 / 2048}),
    ("lr-find", {"lr": "find"}),
    ("lr-3e-3", {"lr": 3e-3}),
    ("lr-3e-4", {"lr": 3e-4}),
    ("projector-512x2", {"projector": [512, 512]}),
    ("projector-4096x2", {"projector": [4096, 4096]}),
    ("batch-64", {"batch_size": 64}),
    ("batch-256", {"batch_size": 256}),
    ("size-48", {"image_size": 48}),
    # the other methods and positives, under the same budget (projectors sized for a CPU: the
    # papers' 8192-wide VICReg projector would cost four times the encoder at 32 px)
    ("lesion-positives", {"positives": "lesion"}),
    ("vicreg", {"method": "vicreg", "projector": [2048, 2048, 2048]}),
    ("simclr", {"method": "simclr"}),
]


def ablate(args: argparse.Namespace) -> None:
    """Each ablation as a ``job`` on a random subset of the pool, one after another (CPU)."""
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
    # whole lesions, so that every lesion keeps all its images for `positives: lesion`
    pool = table[table["pretrain"].astype(int) == 1]
    groups = pool["group"].drop_duplicates().sample(frac=1.0, random_state=0)
    sizes = pool.groupby("group").size()[groups].cumsum()
    keep = pool.index[pool["group"].isin(sizes.index[: int(np.searchsorted(sizes.to_numpy(), args.pool_subset)) + 1])]
    table["pretrain"] = 0
    table.loc[keep, "pretrain"] = 1
    manifest = out / "manifest.csv"
    table.to_csv(manifest, index=False)
    (out / "manifest.json").write_text(Path(args.manifest).with_suffix(".json").read_text())
    results = out / "results.jsonl"
    finished = (
        {json.loads(line)["name"] for line in open(results) if '"stage"' not in line} if results.is_file() else set()
    )
    known = dict(ABLATIONS)
    unknown = [name for name in args.only if name not in known]
    if unknown:
        raise SystemExit(f"unknown ablation(s) {unknown}; known: {list(known)}")
    for name in args.only or list(known):  # in the order asked
        changes = known[name]
        if name in finished:
            continue
        settings = {
            "image_size": args.size,
            "epochs": args.epochs,
            "tracking": {"tensorboard": False, "mlflow": False},
            **changes,
        }
        spec = {
            "name": name,
            "manifest": str(manifest),
            "probe": "dev",
            "settings": settings,
            "out": str(out / "runs" / name.replace("/", "-")),
        }
        spec_file = out / f"{name.replace('/', '-')}.json"
        spec_file.write_text(json.dumps(spec))
        print(f"{name}: {changes}", flush=True)
        subprocess.run(
            [sys.executable, __file__, "job", "--spec", str(spec_file), "--results", str(results)], check=False
        )


def _split(backbone: Path, out: Path, parts: int = 4) -> None:
    """The backbone's tensors in ``parts`` safetensors files of similar size (largest first into
    the lightest part), each under the 16 MiB a device call returns per file."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(backbone))
    bins: list[dict] = [{} for _ in range(parts)]
    for key in sorted(state, key=lambda k: -state[k].numel()):
        min(bins, key=lambda b: sum(t.numel() for t in b.values()))[key] = state[key]
    for part, tensors in enumerate(bins):
        save_file(tensors, str(out / f"long-backbone-part{part}.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("--manifest", required=True)
    b.add_argument("--reference", required=True)
    b.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bundle", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--deadline", type=float, default=520)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--ablation-epochs", type=int, default=20)
    r.add_argument(
        "--long-share", type=float, default=0.4, help="share of the model-only rate the long run is expected to get"
    )
    r.add_argument(
        "--long-margin", type=float, default=70, help="seconds kept after the long run for its probes and the export"
    )
    r.add_argument("--min-long-epochs", type=int, default=50)
    r.add_argument("--max-long-epochs", type=int, default=400)
    r.add_argument("--ref-epochs", type=int, default=6)
    a = sub.add_parser("ablate")
    a.add_argument("--manifest", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--pool-subset", type=int, default=3000)
    a.add_argument("--size", type=int, default=32)
    a.add_argument("--epochs", type=int, default=10)
    a.add_argument("--only", nargs="*", default=[])
    j = sub.add_parser("job")
    j.add_argument("--spec", required=True)
    j.add_argument("--results", required=True)
    args = parser.parse_args()
    {"bundle": bundle, "run": run, "job": job, "ablate": ablate}[args.command](args)


if __name__ == "__main__":
    main()
