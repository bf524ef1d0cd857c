"""What a run needs to be reproduced: code version, package versions, and the seeds it used."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("lesionssl", "torch", "torchvision", "lightning", "numpy", "pandas", "scikit-learn", "scipy", "pillow")


def git_commit() -> str | None:
    """The commit of the lesionssl checkout (None when installed from a wheel or outside git)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return result.stdout.strip() + ("+dirty" if dirty else "")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def run_environment(seed: int) -> dict[str, Any]:
    """Provenance written as ``environment.json`` into every run folder."""
    return {
        "command": shlex.join(["lesionssl", *sys.argv[1:]])
        if Path(sys.argv[0]).name in ("lesionssl", "__main__.py")
        else shlex.join(sys.argv),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions(),
        "seeds": {
            "run": seed,
            "head_init": seed,
            "data_order": f"permutation seeded by ({seed}, epoch)",
            "augmentation": f"torch/numpy/random reseeded at every epoch from ({seed}, epoch)",
        },
    }
