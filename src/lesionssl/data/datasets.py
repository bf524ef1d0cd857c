"""Torch datasets over a decoded image store (``rows`` index the store)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


class _StoreDataset(Dataset):
    def __init__(self, images: np.ndarray, rows: Sequence[int]) -> None:
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[self.rows[index]])).permute(2, 0, 1)  # copy: the store is a read-only memmap


class TwoViewDataset(_StoreDataset):
    """Yields two independently augmented views of each image (Barlow Twins input)."""

    def __init__(self, images: np.ndarray, rows: Sequence[int], view1: Transform, view2: Transform) -> None:
        super().__init__(images, rows)
        self.view1, self.view2 = view1, view2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.image(index)
        return self.view1(image), self.view2(image)


class LabelledDataset(_StoreDataset):
    """Yields ``(image, label index, position)``; the position ties predictions back to files."""

    def __init__(self, images: np.ndarray, rows: Sequence[int], labels: Sequence[int], transform: Transform) -> None:
        super().__init__(images, rows)
        if len(self.rows) != len(labels):
            raise ValueError("rows and labels differ in length")
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.long)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.transform(self.image(index)), self.labels[index], index
