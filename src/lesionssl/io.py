"""Atomic file writes: a temp file in the same folder, then ``os.replace``, so a kill never
leaves a half-written result or checkpoint behind."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lesionssl.errors import LesionSSLError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then move the temp file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(
            tmp, 0o666 & ~_umask()
        )  # after the write, which may recreate the file: mkstemp's 0600 would hide results from a shared group
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            kept = "the previous version is kept" if path.exists() else "nothing was written"
            raise LesionSSLError(
                f"no space left to write {path} ({exc.strerror}); {kept} - free space and run the command again"
            ) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_torch(path: Path, data: Any) -> None:
    """``torch.save``, atomically. Serialised in memory first, so a full disk raises Python's
    ``OSError`` (ENOSPC), which :func:`atomic_write` reports, instead of torch's opaque writer error."""
    import torch

    def write(tmp: Path) -> None:
        buffer = BytesIO()
        torch.save(data, buffer)
        tmp.write_bytes(buffer.getbuffer())

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on ``path`` held while the block runs (filelock: ``flock`` on POSIX,
    ``msvcrt`` on Windows); the kernel releases it when the process dies, so a killed holder never
    blocks the others. With ``wait=False`` the block gets False at once when another process holds
    the lock (and the lock is not taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(blocking=wait)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def write_csv(path: Path, frame: Any) -> None:
    """A pandas frame as CSV (no index), written atomically."""
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
