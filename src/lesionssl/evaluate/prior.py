"""Prior shift: post-hoc logit adjustment and EM estimation of a test prior.

A class-capped training set (<= 500 per class) against a natural test distribution makes the
classifier over-predict rare classes. Bayes' rule moves posteriors from the training prior
``pi_s`` to a target prior ``pi_t``: ``p_t(y|x) ~ p_s(y|x) * pi_t(y) / pi_s(y)``, i.e. adding
``log pi_t - log pi_s`` to the logits (Menon et al. 2021, "logit adjustment"). When the target
prior is unknown it can be estimated from unlabelled images by EM (Saerens et al. 2002).
"""

from __future__ import annotations

import numpy as np


def class_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Relative class frequencies."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return counts / counts.sum()


def adjust(probs: np.ndarray, source_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """Re-weight posteriors from ``source_prior`` to ``target_prior`` and renormalise."""
    weights = np.divide(target_prior, source_prior, out=np.zeros_like(target_prior), where=source_prior > 0)
    adjusted = probs * weights
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def em_prior(probs: np.ndarray, source_prior: np.ndarray, iterations: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """Saerens-Latinne-Decaestecker EM: the class prior of unlabelled data given its posteriors."""
    prior = source_prior.copy()
    for _ in range(iterations):
        updated = adjust(probs, source_prior, prior).mean(axis=0)
        if np.abs(updated - prior).max() < tol:
            return updated
        prior = updated
    return prior
