"""Per-epoch monitors of Barlow Twins pretraining: kNN accuracy and collapse indicators.

* kNN accuracy (Wu et al. 2018): the k-nearest-neighbour vote (cosine, ``exp(s / 0.07)``
  weights) of the backbone features of labelled validation images against the training images.
* Embedding std: the mean per-dimension standard deviation of L2-normalised embeddings, times
  sqrt(d) - about 1 for well-spread embeddings, 0 at complete collapse (Chen & He 2021).
* Effective rank (RankMe, Garrido et al. 2023): exp of the entropy of the normalised singular
  values of the embedding matrix; dimensional collapse shows as a low rank.
"""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lesionssl.evaluate.probe import knn_probs

#: Warn when the normalised embedding std or the rank (as a share of d) fall below these.
STD_WARNING = 0.2
RANK_WARNING = 0.01


def effective_rank(embeddings: torch.Tensor) -> float:
    """RankMe: exp(entropy) of the singular value distribution of the centred embeddings."""
    singular = torch.linalg.svdvals(embeddings.double() - embeddings.double().mean(0))
    p = singular / singular.sum().clamp_min(1e-12) + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))


def normalised_std(embeddings: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised embeddings, times sqrt(d)."""
    z = F.normalize(embeddings.double(), dim=1)
    return float(z.std(dim=0).mean() * np.sqrt(z.shape[1]))


def knn_accuracy(
    train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, k: int = 20
) -> float:
    """Share of query images whose k nearest training images (cosine) vote for the right class
    (the kNN protocol of :mod:`lesionssl.evaluate.probe`)."""
    probs = knn_probs(
        train.numpy(), train_labels.numpy(), query.numpy(), int(max(train_labels.max(), query_labels.max())) + 1, k
    )
    return float((probs.argmax(axis=1) == query_labels.numpy()).mean())


@torch.no_grad()
def _embed(
    module: L.LightningModule, view: nn.Module, loader: DataLoader, project: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = [], []
    view = view.to(module.device)
    for images, targets, _ in loader:
        out = module.backbone(view(images.to(module.device)))
        features.append((module.method.projector(out) if project else out).float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


class PretrainMonitor(L.Callback):
    """Logs kNN accuracy (when a labelled train/val pair is given) and collapse indicators."""

    def __init__(
        self,
        view: nn.Module,
        probe: DataLoader,
        knn_train: DataLoader | None = None,
        knn_val: DataLoader | None = None,
        k: int = 20,
    ) -> None:
        self.view, self.probe, self.knn_train, self.knn_val, self.k = view, probe, knn_train, knn_val, k

    def knn(self, module: L.LightningModule) -> float | None:
        """The kNN accuracy of ``module.backbone``'s features on the validation split (None without one)."""
        if self.knn_train is None or self.knn_val is None:
            return None
        train, train_labels = _embed(module, self.view, self.knn_train, project=False)
        val, val_labels = _embed(module, self.view, self.knn_val, project=False)
        return knn_accuracy(train, train_labels, val, val_labels, self.k)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        was_training = pl_module.training
        pl_module.eval()
        try:
            embeddings, _ = _embed(pl_module, self.view, self.probe, project=True)
            std, rank = normalised_std(embeddings), effective_rank(embeddings)
            pl_module.log("embedding_std", std, sync_dist=True)
            pl_module.log("effective_rank", rank, sync_dist=True)
            if std < STD_WARNING or rank < max(2.0, RANK_WARNING * embeddings.shape[1]):
                warnings.warn(
                    f"possible collapse at epoch {trainer.current_epoch}: normalised embedding std {std:.3f}, effective rank {rank:.1f} of {embeddings.shape[1]}",
                    stacklevel=1,
                )
            knn = self.knn(pl_module)
            if knn is not None:
                pl_module.log("knn_accuracy", knn, sync_dist=True)
        finally:
            pl_module.train(was_training)
