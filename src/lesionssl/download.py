"""Resumable, verified downloads (weights, datasets), with one-line errors when offline.

A download resumes from its ``.part`` file with an HTTP Range request and shows progress. A file
is verified against its pinned sha256 (or the 8-hex prefix torchvision puts in file names); when
the publisher gives none, the sha256 seen at the first download is recorded in ``lock.json`` next
to the file's folder and every later use must match it (trust on first use).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

from lesionssl.errors import LesionSSLError
from lesionssl.progress import progress_bar

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(url: str, path: Path, lock_file: Path, sha256: str | None = None, sha256_prefix: str | None = None) -> str:
    """Check ``path``; return how (``sha256``, ``sha256-prefix`` or ``first-use``). A mismatch removes the file."""
    actual = sha256_of(path)
    if sha256 is not None:
        expected, how = sha256, "sha256"
    elif sha256_prefix is not None:
        expected, how = sha256_prefix, "sha256-prefix"
    else:
        lock = json.loads(lock_file.read_text()) if lock_file.is_file() else {}
        expected, how = lock.setdefault(url, actual), "first-use"
        lock_file.write_text(json.dumps(lock, indent=2))
    if not actual.startswith(expected):
        path.unlink()
        raise LesionSSLError(
            f"checksum mismatch for {url}: expected {expected}, got {actual}; the file was removed, run again to re-download"
        )
    return how


def download(url: str, target: Path) -> None:
    """Download ``url`` to ``target``, resuming a previous ``.part`` with a Range request."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = response.status == 206
            total = int(response.headers.get("Content-Length", 0)) + (start if resumed else 0)
            with (
                partial.open("ab" if resumed else "wb") as handle,
                progress_bar(f"downloading {target.name}", max(1, total // CHUNK)) as advance,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    advance()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LesionSSLError(
            f"could not download {url} ({reason}); download it by other means and pass the file with --init PATH (weights) or put it in the data folder"
        ) from None
    partial.rename(target)
