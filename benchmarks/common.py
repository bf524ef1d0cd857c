"""Shared pieces of the benchmarks: image sets, timing, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import Dataset

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skin-lesions" / "images"
#: ISIC 2019 files run from 600x450 (HAM10000) to 1024x1024 (BCN) and larger.
FULLSIZE_SIDE = 1024


def source_images(source: Path, count: int) -> list[str]:
    """The first ``count`` images (sorted names) of a folder of JPEGs."""
    paths = sorted(str(p) for p in Path(source).glob("*.jpg"))[:count]
    if len(paths) < count:
        raise SystemExit(f"{source} has {len(paths)} JPEGs; the benchmark needs {count} (lower --steps)")
    return paths


class FileDataset(Dataset):
    """torchvision ImageFolder's work per item: open, decode, convert to RGB, transform.
    Labels cycle through ``classes`` (speed does not depend on them)."""

    def __init__(self, paths: list[str], transform, classes: int = 1) -> None:
        self.paths, self.transform, self.classes = paths, transform, classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), i % self.classes


def _enlarge(path: str, target: Path) -> str:
    out = target / Path(path).name
    if not out.is_file():
        with Image.open(path) as image:
            scale = FULLSIZE_SIDE / max(image.size)
            size = (round(image.size[0] * scale), round(image.size[1] * scale))
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(out, quality=95)
    return str(out)


def image_set(name: str, source: Path, count: int, workdir: Path) -> list[str]:
    """``shared``: the 128 px JPEGs as they are; ``fullsize``: the same images re-encoded once at
    1024 px on the longer side (the size of users' files), cached in ``workdir``."""
    paths = source_images(source, count)
    if name == "shared":
        return paths
    target = workdir / f"fullsize-{FULLSIZE_SIDE}"
    target.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(lambda p: _enlarge(p, target), paths))


def workdir(path: str | None) -> Path:
    """Benchmark scratch folder; the decode-once store goes there too (a fresh cache)."""
    folder = Path(path) if path else Path(tempfile.mkdtemp(prefix="lesionssl-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["LESIONSSL_CACHE"] = str(folder / "cache")
    return folder


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError):
        return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


class PeakMemory:
    """Peak resident memory of this process plus its DataLoader workers (sampled every 20 ms),
    and peak GPU memory when CUDA is used."""

    def __enter__(self) -> PeakMemory:
        self.peak, self._stop = 0, threading.Event()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes(me) + sum(_rss_bytes(c) for c in _children(me)))
            self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}_peak_rss_mb": round(self.peak / 2**20)}
        if torch.cuda.is_available():
            out[f"{prefix}_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        return out


class StepClock:
    """Wall time from the end of the warm-up steps to the end of the last step (data loading
    of the timed steps included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def tick(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if step + 1 == self.warmup:
            self.start = now
        if step + 1 > self.warmup:
            self.end, self.steps = now, step + 1 - self.warmup

    def rate(self, items_per_step: int) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError("no timed steps: raise --steps")
        return self.steps * items_per_step / (self.end - self.start)


class LightningClock(L.Callback):
    """A :class:`StepClock` driven by Lightning's batch hooks."""

    def __init__(self, warmup: int) -> None:
        self.clock = StepClock(warmup)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.clock.tick(batch_idx)


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"


def emit(record: dict) -> None:
    """One JSON object per line (machine-readable)."""
    print(json.dumps(record), flush=True)
