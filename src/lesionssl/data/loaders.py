"""DataLoaders for the stages, built over one shared decoded store per manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from lesionssl.data.datasets import LabelledDataset, Transform, TwoViewDataset


class EpochShuffleSampler(Sampler[int]):
    """A shuffle whose order depends only on (seed, epoch), so a resumed run sees the same order.

    Lightning calls ``set_epoch`` at the start of every epoch.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool = False, seed: int = 0, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` and the epoch."""
    if shuffle and sampler is None:
        sampler = EpochShuffleSampler(len(dataset), seed)
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def two_view_loader(images: np.ndarray, rows: np.ndarray, views: tuple[Transform, Transform], batch_size: int, num_workers: int, seed: int) -> DataLoader:
    """Shuffled pairs of views; an incomplete last batch is dropped (BN needs > 1 sample)."""
    dataset = TwoViewDataset(images, rows, *views)
    return loader(dataset, batch_size, shuffle=True, num_workers=num_workers, drop_last=len(rows) > batch_size, seed=seed)


def labelled_loader(images: np.ndarray, table: pd.DataFrame, classes: list[str], transform: Transform, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0, class_balanced: bool = False) -> DataLoader:
    """Images of ``table`` (manifest rows with a ``row`` column indexing the store).

    Unlabelled rows get label -1. ``class_balanced`` draws each class equally often (with
    replacement, weights 1 / class count), one epoch still being ``len(table)`` images.
    """
    labels = table["label"].map({c: i for i, c in enumerate(classes)}).fillna(-1).astype(int).to_numpy()
    dataset = LabelledDataset(images, table["row"].to_numpy(), labels, transform)
    sampler = None
    if class_balanced:
        counts = np.bincount(labels, minlength=len(classes))
        weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
        sampler = WeightedRandomSampler(weights, len(labels), replacement=True, generator=torch.Generator().manual_seed(seed))
    return loader(dataset, batch_size, shuffle=shuffle, num_workers=num_workers, seed=seed, sampler=sampler)
