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
from lesionssl.data.colour import NO_COLOUR_CONSTANCY, ColourConstancy
from lesionssl.data.images import ImageLoadError, load_rgb, resize_shorter_center_crop
from lesionssl.errors import LesionSSLError
from lesionssl.io import file_lock
from lesionssl.progress import console, progress_bar


def stored_size(image_size: int, margin: float = STORE_MARGIN) -> int:
    """Side of the stored square for a given training size (``store_margin`` in the configs)."""
    return int(round(image_size * margin))


def cache_root() -> Path:
    """Folder for image stores: ``$LESIONSSL_CACHE`` or ``~/.cache/lesionssl``."""
    return Path(os.environ.get("LESIONSSL_CACHE", Path.home() / ".cache" / "lesionssl"))


def _store_key(paths: Sequence[str], size: int, colour: ColourConstancy = NO_COLOUR_CONSTANCY) -> str:
    digest = hashlib.sha256(f"v2:{size}{colour.key()}".encode())  # v2: JPEG draft decoding
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_for_store(path: str, size: int, colour: ColourConstancy = NO_COLOUR_CONSTANCY) -> np.ndarray:
    """One image as the store keeps it: shorter side ``size``, centre square, HWC uint8, colour
    constancy applied (once, here, so every epoch and every stage reads the corrected image)."""
    # JPEG DCT scaling down to twice the stored side, then an antialiased resize: fast and sharp.
    return colour(resize_shorter_center_crop(load_rgb(path, min_side=2 * size), size))


def build_store(
    paths: Sequence[str], size: int, description: str = "decoding images", colour: ColourConstancy = NO_COLOUR_CONSTANCY
) -> np.ndarray:
    """Return an ``(N, size, size, 3)`` uint8 array of the images, building the store if needed.

    Decoding runs in threads (PIL releases the GIL while decoding) and shows progress. The
    array is written to a ``.partial`` file and renamed, so a killed build never leaves a store
    that looks finished; a lock makes concurrent processes build a store once, and the holder
    deletes the partial files that killed builds left.

    Raises:
        ImageLoadError: An image cannot be decoded (the message names it).
    """
    paths = [str(p) for p in paths]
    target = cache_root() / f"images-{_store_key(paths, size, colour)}-{size}px.npy"
    shape = (len(paths), size, size, 3)
    stored = _load(target, shape)
    if stored is not None:
        return stored
    with file_lock(target.with_suffix(".lock")):
        stored = _load(target, shape)  # another process may have built it while this one waited
        if stored is None:
            _build(paths, size, description, target, colour)
            stored = np.load(target, mmap_mode="r")
    return stored


def _load(target: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The store at ``target``, or None when it is absent or damaged (then it is deleted)."""
    if not target.is_file():
        return None
    try:
        stored = np.load(target, mmap_mode="r")
        if stored.shape == shape and stored.dtype == np.uint8:
            return stored
    except (ValueError, OSError, EOFError):
        pass
    console.print(f"image store {target} is damaged (truncated or of another shape): building it again", markup=False)
    target.unlink(missing_ok=True)
    return None


def _build(paths: list[str], size: int, description: str, target: Path, colour: ColourConstancy) -> None:
    for stale in target.parent.glob(f"{target.stem}.*.partial"):  # left by a killed build
        stale.unlink(missing_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    try:
        decode_into(array, paths, description, colour=colour)
        array.flush()
        del array
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


#: Side at which ``check_readable`` decodes (JPEG DCT scaling makes it a fraction of a full decode).
CHECK_SIDE = 16


def check_readable(paths: Sequence[str]) -> None:
    """Decode every image once, small and in threads, with progress; name every unreadable file
    (one line each) before refusing them all at once.

    Raises:
        LesionSSLError: Some images cannot be read.
    """
    scratch = np.zeros((len(paths), CHECK_SIDE, CHECK_SIDE, 3), dtype=np.uint8)
    bad = decode_into(scratch, paths, "checking images", skip_unreadable=True)
    for _, reason in bad:
        console.print(f"unreadable: {reason}", markup=False)
    if bad:
        raise LesionSSLError(
            f"{len(bad)} of {len(paths)} images cannot be read (each named above, e.g. {bad[0][1]}); remove or replace them, or drop their rows from the label file"
        )


def decode_into(
    array: np.ndarray,
    paths: Sequence[str],
    description: str,
    skip_unreadable: bool = False,
    colour: ColourConstancy = NO_COLOUR_CONSTANCY,
) -> list[tuple[int, str]]:
    """Decode ``paths`` into the rows of ``array`` (``(N, size, size, 3)``) in threads (PIL
    releases the GIL while decoding), with progress.

    Returns:
        ``(row, reason)`` of each unreadable image when ``skip_unreadable`` (its row stays as it
        was); otherwise the first one raises :class:`ImageLoadError`.
    """
    size = array.shape[1]

    def decode(path: str) -> np.ndarray | str:
        try:
            return decode_for_store(path, size, colour)
        except ImageLoadError as exc:
            if not skip_unreadable:
                raise
            return str(exc)

    skipped = []
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        with progress_bar(description, len(paths)) as advance:
            for i, image in enumerate(pool.map(decode, paths)):
                if isinstance(image, str):
                    skipped.append((i, image))
                else:
                    array[i] = image
                advance()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a bad image or a stop does not wait for the queue
    return skipped
