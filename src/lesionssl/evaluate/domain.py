"""How well a classifier tells two image sets apart from their features: the classifier two-sample
test (Lopez-Paz & Oquab, ICLR 2017) as a domain-shift measure. ``lesionssl shift`` measures each
site against the pool with it, and ``compare``'s probe runs each external set against the internal test."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

#: Images per side (equal samples of both; all of a smaller set).
MAX_PER_SIDE = 500


def domain_auroc(
    pool: np.ndarray, other: np.ndarray, seed: int = 0, folds: int = 5, cap: int = MAX_PER_SIDE
) -> float | None:
    """Cross-validated AUROC of a classifier telling ``other``'s features from ``pool``'s (equal
    samples of at most ``cap`` each); None when either side is too small to cross-validate."""
    rng = np.random.default_rng(seed)
    n = min(len(pool), len(other), cap)
    if n < folds:
        return None
    x = np.concatenate([pool[rng.choice(len(pool), n, replace=False)], other[rng.choice(len(other), n, replace=False)]])
    y = np.repeat([0, 1], n)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    scores = cross_val_predict(
        model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )[:, 1]
    return float(roc_auc_score(y, scores))
