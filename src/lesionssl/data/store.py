"""Decode-once image store: every image decoded and resized once into a uint8 array on disk.

Pretraining, fine-tuning and evaluation all read from the same memory-mapped array, so JPEG
decoding and resizing of large dermoscopy files happens once per (image set, size), not once
per epoch. The store is keyed by the files' paths, sizes and modification times and by the
stored size, so it is rebuilt when images change.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lesionssl.config import STORE_MARGIN
from lesionssl.data.images import load_rgb, resize_shorter_center_crop
from lesionssl.progress import progress_bar


def stored_size(image_size: int, margin: float = STORE_MARGIN) -> int:
    """Side of the stored square for a given training size (``store_margin`` in the configs)."""
    return int(round(image_size * margin))


def cache_root() -> Path:
    """Folder for image stores: ``$LESIONSSL_CACHE`` or ``~/.cache/lesionssl``."""
    return Path(os.environ.get("LESIONSSL_CACHE", Path.home() / ".cache" / "lesionssl"))


def _store_key(paths: Sequence[str], size: int) -> str:
    digest = hashlib.sha256(f"v2:{size}".encode())  # v2: JPEG draft decoding
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_for_store(path: str, size: int) -> np.ndarray:
    """One image as the store keeps it: shorter side ``size``, centre square, HWC uint8."""
    # JPEG DCT scaling down to twice the stored side, then an antialiased resize: fast and sharp.
    return resize_shorter_center_crop(load_rgb(path, min_side=2 * size), size)


def build_store(paths: Sequence[str], size: int, description: str = "decoding images") -> np.ndarray:
    """Return an ``(N, size, size, 3)`` uint8 array of the images, building the store if needed.

    Decoding runs in threads (PIL releases the GIL while decoding) and shows progress. The
    array is written to a temporary file and renamed, so an interrupted build leaves no
    half-written store behind.

    Raises:
        ImageLoadError: An image cannot be decoded (the message names it).
    """
    paths = [str(p) for p in paths]
    target = cache_root() / f"images-{_store_key(paths, size)}-{size}px.npy"
    if target.is_file():
        return np.load(target, mmap_mode="r")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, progress_bar(description, len(paths)) as advance:
            for i, image in enumerate(pool.map(lambda p: decode_for_store(p, size), paths)):
                array[i] = image
                advance()
        array.flush()
        del array
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return np.load(target, mmap_mode="r")
