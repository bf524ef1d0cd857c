"""DataLoaders for the stages, built over one shared decoded store per manifest.

Every loader yields whole uint8 batches read from the store; the modules turn them into
augmented or evaluation views on the training device (``augment.batch``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from lesionssl.data.datasets import StoreBatches


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of positions whose order depends only on (seed, epoch), so a resumed run sees the
    same batches. Lightning calls ``set_epoch`` at the start of every epoch.

    Args:
        length: Number of items.
        batch_size: Items per batch.
        seed: Run seed.
        shuffle: Random order (else sequential).
        drop_last: Drop an incomplete last batch.
        weights: Draw ``length`` items with replacement, proportionally to these weights
            (class-balanced sampling) instead of a permutation.
        shard: Under DDP each process takes every ``world``-th batch (the same number on all
            processes); without it every process reads all batches (evaluation).
        partners: For positive pairs of two images (``positives: lesion``): each position's
            fellow members of its group. Batches then hold ``(position, partner)`` pairs, the
            partner drawn from the same (seed, epoch) generator; a position alone in its group
            is its own partner.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        weights: torch.Tensor | None = None,
        shard: bool = True,
        partners: list[np.ndarray] | None = None,
    ) -> None:
        self.length, self.batch_size, self.seed = length, min(batch_size, length), seed
        self.shuffle, self.drop_last, self.weights, self.shard, self.epoch = shuffle, drop_last, weights, shard, 0
        self.partners = partners

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        if self.partners is not None:
            draws = torch.rand(self.length, generator=generator)
            mates = [
                int(m[int(u * len(m))]) if len(m) else p
                for p, m, u in zip(range(self.length), self.partners, draws.tolist())
            ]
            order = [(int(p), mates[int(p)]) for p in order]
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        else:
            batches = [b.tolist() for b in order.split(self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        world = self._world()
        if world > 1:
            batches = batches[dist.get_rank() :: world][: len(batches) // world]
        return batches

    def _world(self) -> int:
        sharded = self.shard and dist.is_available() and dist.is_initialized()
        return dist.get_world_size() if sharded else 1

    def __len__(self) -> int:
        batches = self.length // self.batch_size if self.drop_last else -(-self.length // self.batch_size)
        return batches // self._world()

    def __iter__(self):
        return iter(self._batches())


def group_partners(groups: np.ndarray) -> list[np.ndarray]:
    """For each position, the other positions with the same group id (empty when alone)."""
    members: dict[str, list[int]] = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(position)
    return [np.array([m for m in members[g] if m != p], dtype=np.int64) for p, g in enumerate(groups)]


def batch_loader(
    images: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    num_workers: int,
    seed: int,
    labels: np.ndarray | None = None,
    class_balanced: bool = False,
    shuffle: bool = True,
    drop_last: bool = False,
    pin_memory: bool = False,
    partners: list[np.ndarray] | None = None,
) -> DataLoader:
    """uint8 batches of the store rows ``rows`` (with labels and positions when ``labels`` is given).

    ``pin_memory`` (for CUDA) lets the copy to the GPU overlap the previous step."""
    weights = None
    if class_balanced:
        counts = np.bincount(labels)
        weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
    # Shuffled (training) loaders are sharded across DDP processes; in-order ones are read whole.
    sampler = EpochBatchSampler(
        len(rows), batch_size, seed, shuffle, drop_last, weights, shard=shuffle, partners=partners
    )
    # batch_size=None: the sampler yields whole batches and the dataset reads each in one go.
    # Its own generator: creating an iterator draws a base seed, which from torch's global
    # generator would shift the augmentations (a resumed run creates it at another moment).
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        StoreBatches(images, rows, labels),
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        generator=generator,
    )


def pretrain_loader(
    images: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    groups: np.ndarray | None = None,
) -> DataLoader:
    """Shuffled uint8 batches; an incomplete last batch is dropped (BN needs > 1 sample). With
    ``groups`` (one id per row), batches are pairs of batches: each image and another image of
    its group (multi-instance positives, Azizi et al. 2021), or itself when it is alone."""
    partners = group_partners(groups) if groups is not None else None
    return batch_loader(
        images,
        rows,
        batch_size,
        num_workers,
        seed,
        drop_last=len(rows) > batch_size,
        pin_memory=pin_memory,
        partners=partners,
    )


def label_indices(table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Label indices of the manifest rows in ``table``; unlabelled rows get -1."""
    return table["label"].map({c: i for i, c in enumerate(classes)}).fillna(-1).astype(int).to_numpy()


def train_loader(
    images: np.ndarray,
    table: pd.DataFrame,
    classes: list[str],
    batch_size: int,
    num_workers: int,
    seed: int,
    class_balanced: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled uint8 batches of labelled rows. ``class_balanced`` draws each class equally
    often (with replacement, weights 1 / class count), one epoch still being ``len(table)`` images.
    The incomplete last batch is dropped, as fastai's training loader does (the seed's)."""
    labels = label_indices(table, classes)
    return batch_loader(
        images,
        table["row"].to_numpy(),
        batch_size,
        num_workers,
        seed,
        labels,
        class_balanced,
        drop_last=len(table) > batch_size,
        pin_memory=pin_memory,
    )


def eval_loader(
    images: np.ndarray,
    table: pd.DataFrame,
    classes: list[str],
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """uint8 batches of ``table`` (manifest rows with a ``row`` column indexing the store) in
    order, with labels (-1 when unlabelled) and positions."""
    return batch_loader(
        images,
        table["row"].to_numpy(),
        batch_size,
        num_workers,
        0,
        label_indices(table, classes),
        shuffle=False,
        pin_memory=pin_memory,
    )
