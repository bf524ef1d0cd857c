"""The stages before the main fit that an epoch checkpoint does not cover: the head (or projector
warm-up) epochs and the LR finder. After each, the weights, the optimiser and what the stage
found are saved, so a resumed run skips what is done and ends as an uninterrupted one would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lesionssl.engine.callbacks import Stopwatch
from lesionssl.engine.modules import PersistentAdamModule
from lesionssl.errors import LesionSSLError
from lesionssl.io import save_torch, write_json

#: The LR finder's seed stream (``epoch_seed(seed, LR_FINDER_EPOCH)``): an epoch no run reaches,
#: so the finder sees the same batches whether it runs after the head stage or in a resumed process.
LR_FINDER_EPOCH = -1


class Stages:
    """``stages.json`` (what finished stages found) and ``stages.pt`` (weights and optimiser after them).

    Args:
        folder: The run's checkpoint folder.
        resume: Read what an earlier, interrupted process saved.
        key: The run's configuration hash: saved stages of another configuration are refused.
        stopwatch: The run's clock: each stage saves its seconds, a resumed run carries them on.
    """

    def __init__(self, folder: Path, resume: bool, key: str | None = None, stopwatch: Stopwatch | None = None) -> None:
        self.folder, self.key = Path(folder), key
        file = self.folder / "stages.json"
        self.values: dict[str, Any] = json.loads(file.read_text()) if resume and file.is_file() else {}
        if key is not None and self.values and self.values.get("config") != key:
            raise LesionSSLError(
                f"{self.folder.parent} holds an interrupted run of another configuration; choose another --out or delete {self.folder}"
            )
        self.stopwatch = stopwatch or Stopwatch()
        if "seconds" in self.values:
            self.stopwatch.load_state_dict({"seconds": self.values["seconds"]})

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def restore(self, module: PersistentAdamModule) -> None:
        """Load the weights and optimiser saved after the last finished stage, if any."""
        if self.values:
            saved = torch.load(self.folder / "stages.pt", map_location="cpu", weights_only=True)
            module.load_state_dict(saved["model"])
            module.persistent_optimizer().load_state_dict(saved["optimizer"])

    def save(self, module: PersistentAdamModule, **found: Any) -> None:
        """Record a finished stage: the weights first, then the JSON that points to them."""
        self.values.update(found, seconds=self.stopwatch.seconds, **({"config": self.key} if self.key else {}))
        save_torch(
            self.folder / "stages.pt",
            {"model": module.state_dict(), "optimizer": module.persistent_optimizer().state_dict()},
        )
        write_json(self.folder / "stages.json", self.values)
