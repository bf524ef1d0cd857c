"""Torch datasets over a decoded image store (``rows`` index the store)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class StoreBatches(Dataset):
    """Whole uint8 batches ``(B, 3, H, W)`` read from the store, one index list at a time.

    Augmentation happens afterwards on the batch (``augment.batch``), on the training device.
    With ``labels``, items are ``(images, labels, positions)``; positions tie outputs back to rows.
    A list of position pairs reads two batches, the first and second image of each pair.
    """

    def __init__(self, images: np.ndarray, rows: Sequence[int], labels: Sequence[int] | None = None) -> None:
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)
        self.labels = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.long)
        if self.labels is not None and len(self.labels) != len(self.rows):
            raise ValueError("rows and labels differ in length")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: list[int] | list[tuple[int, int]]):
        if positions and isinstance(positions[0], tuple):  # positive pairs of two images
            first, second = zip(*positions)
            return self[list(first)], self[list(second)]
        positions_array = np.asarray(positions, dtype=np.int64)
        rows = self.rows[positions_array]
        order = np.argsort(rows, kind="stable")  # ascending reads from the memory map, then back to batch order
        batch = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        batch[order] = self.images[rows[order]]
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)  # NHWC storage = channels_last NCHW
        if self.labels is None:
            return images
        return images, self.labels[positions_array], torch.from_numpy(positions_array)
