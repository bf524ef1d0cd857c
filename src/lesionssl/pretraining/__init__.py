"""Self-supervised pretraining: methods (one file each), the Lightning module, monitors, the runner."""

from __future__ import annotations

from pathlib import Path

#: Modules of ``methods/`` that are machinery, not methods.
_NOT_METHODS = {"__init__", "base", "distributed"}


def method_names() -> list[str]:
    """The registered methods' names without importing torch (for the CLI's help): one file per
    method, named as its registry entry (``methods.METHODS``; a test keeps the two equal)."""
    return sorted(
        path.stem for path in (Path(__file__).parent / "methods").glob("*.py") if path.stem not in _NOT_METHODS
    )
