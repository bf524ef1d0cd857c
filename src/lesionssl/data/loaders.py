"""DataLoaders for the stages, built over one shared decoded store per manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from lesionssl.data.datasets import LabelledDataset, Transform, TwoViewDataset


def loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader whose shuffle order depends only on ``seed``."""
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def two_view_loader(images: np.ndarray, rows: np.ndarray, views: tuple[Transform, Transform], batch_size: int, num_workers: int, seed: int) -> DataLoader:
    """Shuffled pairs of views; an incomplete last batch is dropped (BN needs > 1 sample)."""
    dataset = TwoViewDataset(images, rows, *views)
    return loader(dataset, batch_size, shuffle=True, num_workers=num_workers, drop_last=len(rows) > batch_size, seed=seed)


def labelled_loader(images: np.ndarray, table: pd.DataFrame, classes: list[str], transform: Transform, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Images of ``table`` (manifest rows with a ``row`` column indexing the store)."""
    labels = table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    dataset = LabelledDataset(images, table["row"].to_numpy(), labels, transform)
    return loader(dataset, batch_size, shuffle=shuffle, num_workers=num_workers, seed=seed)
