"""Frozen-backbone protocols: features extracted once per backbone, a linear probe and kNN.

* Features: the pooled output of the backbone in eval mode on the evaluation view, cached per
  (weights, image store, view) in one ``.npz`` that probes and label selection share.

* Linear probe: multinomial logistic regression (scikit-learn, L-BFGS) on standardised
  features. Its inverse regularisation ``C`` is chosen on the validation split only (balanced
  accuracy; the smallest ``C`` among equals), then the probe is fitted on the training split.
  Without a validation split, ``C`` is chosen by stratified 3-fold cross-validation on the
  training split, and the record says so. The test split is never read.
* kNN (Wu et al. 2018): the ``k`` = 20 nearest training images by cosine similarity vote with
  weight ``exp(similarity / 0.07)``; the normalised votes are the class probabilities.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from lesionssl.augment.batch import EvalView
from lesionssl.augment.views import Normalization, Preprocessing
from lesionssl.io import atomic_write

#: Inverse regularisation strengths tried by the linear probe (log grid, as probe studies use).
PROBE_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))
KNN_K = 20
KNN_TEMPERATURE = 0.07
PROBE_MAX_ITER = 3000


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    image_size: int,
    normalize: Normalization | Preprocessing,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Pooled features ``(len(rows), D)`` of store rows, through the evaluation view (eval mode)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backbone = backbone.to(device).eval()
    view = EvalView(image_size, normalize).to(device)
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = np.sort(rows[start : start + batch_size])
        order = np.argsort(np.argsort(rows[start : start + batch_size]))  # back to the caller's order
        batch = torch.from_numpy(np.ascontiguousarray(images[chunk])).permute(0, 3, 1, 2).to(device)
        out.append(backbone(view(batch)).float().cpu().numpy()[order])
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _weights_key(backbone: nn.Module, images: np.ndarray, image_size: int, normalize: Preprocessing) -> str:
    digest = hashlib.sha256(f"{image_size}:{normalize}:{images.shape}:{getattr(images, 'filename', '')}".encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_features(
    cache: Path, backbone: nn.Module, images: np.ndarray, rows: np.ndarray, image_size: int, normalize: Preprocessing
) -> dict[int, np.ndarray]:
    """Features of store ``rows`` (row -> vector), each extracted once per (weights, image set,
    view): rows cached earlier (by a probe, or by ``select``) are read back, only the others are
    extracted, and the cache keeps them all."""
    target = Path(cache) / f"{_weights_key(backbone, images, image_size, normalize)}.npz"
    known: dict[int, np.ndarray] = {}
    if target.is_file():
        stored = np.load(target)
        known = dict(zip(stored["rows"].tolist(), stored["features"]))
    missing = np.array(sorted(set(np.asarray(rows).tolist()) - set(known)), dtype=np.int64)
    if len(missing):
        known |= dict(zip(missing.tolist(), extract_features(backbone, images, missing, image_size, normalize)))
        every = np.array(sorted(known), dtype=np.int64)

        def save(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez(handle, rows=every, features=np.stack([known[r] for r in every.tolist()]))

        atomic_write(target, save)
    return known


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe and how its regularisation was chosen."""

    model: object
    C: float
    selected_on: str
    selection_score: float
    n_classes: int

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for every class (zero for a class the training split lacked)."""
        probs = np.zeros((len(features), self.n_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(features)
        return probs


def _probe(c: float, seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=PROBE_MAX_ITER, random_state=seed))


def _score(model, features: np.ndarray, labels: np.ndarray) -> float:
    return float(balanced_accuracy_score(labels, model.predict(features)))


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray | None,
    val_y: np.ndarray | None,
    n_classes: int,
    cs: tuple[float, ...] = PROBE_CS,
    seed: int = 0,
) -> LinearProbe:
    """Fit the probe on ``train``, choosing ``C`` on ``val`` (or by CV on ``train`` without one)."""
    if val_x is not None and len(val_x):
        scores = [_score(_probe(c, seed).fit(train_x, train_y), val_x, val_y) for c in cs]
        selected_on = "val"
    else:
        folds = StratifiedKFold(n_splits=min(3, int(np.bincount(train_y).min())), shuffle=True, random_state=seed)
        scores = [
            float(
                np.mean(
                    [
                        _score(_probe(c, seed).fit(train_x[a], train_y[a]), train_x[b], train_y[b])
                        for a, b in folds.split(train_x, train_y)
                    ]
                )
            )
            for c in cs
        ]
        selected_on = "3-fold CV on train (no val split)"
    best = int(np.argmax(scores))  # first maximum: the strongest regularisation among equals
    return LinearProbe(_probe(cs[best], seed).fit(train_x, train_y), cs[best], selected_on, scores[best], n_classes)


def knn_probs(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    n_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> np.ndarray:
    """Class probabilities of ``query_x`` from its ``k`` nearest training images (cosine)."""
    train = F.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    query = F.normalize(torch.as_tensor(query_x, dtype=torch.float32), dim=1)
    labels = torch.tensor(train_y, dtype=torch.long)  # a copy: cached features are read-only
    votes = torch.zeros(len(query), n_classes, dtype=torch.float64)
    for start in range(0, len(query), 4096):
        similarity, neighbours = (query[start : start + 4096] @ train.T).topk(min(k, len(train)), dim=1)
        votes[start : start + 4096].scatter_add_(1, labels[neighbours], (similarity.double() / temperature).exp())
    return (votes / votes.sum(dim=1, keepdim=True)).numpy()
