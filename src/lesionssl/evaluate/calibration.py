"""Calibration (temperature scaling) and the malignant-vs-benign operating point.

Both are fitted on the validation split only, never on a test set.

* Temperature scaling (Guo et al., 2017): one scalar ``T`` that minimises the validation
  negative log-likelihood of ``softmax(log p / T)``. It changes no prediction, only confidence.
* Operating point: the malignant probability is the sum over the malignant classes (the seed
  study's MEL, BCC, SCC and AK for ISIC classes; ``--malignant-classes`` for any other cancer). The threshold is the largest one whose validation sensitivity reaches
  the target, so the sensitivity met on validation is the target or just above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest

from lesionssl.data.classes import ISIC2019_CLASSES
from lesionssl.errors import LesionSSLError

#: The seed study's malignant classes (the other four, NV, BKL, DF and VASC, are benign): the
#: default only when a model's classes are ISIC 2019's.
MALIGNANT_CLASSES = ("MEL", "BCC", "SCC", "AK")
TARGET_SENSITIVITY = 0.95
_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the same argmax, confidences softened (T > 1) or sharpened."""
    logits = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0))))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the NLL of ``labels`` (searched on log T)."""
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(labels, apply_temperature(probs, math.exp(log_t))),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
    )
    return float(math.exp(result.x))


def resolve_malignant(classes: Sequence[str], given: Sequence[str] | None) -> list[str]:
    """The malignant classes: ``given`` (each must be a class), else the seed study's four when
    the classes are ISIC 2019's, else none (no operating point: another cancer must name its own)."""
    if given is not None:
        unknown = [c for c in given if c not in classes]
        if unknown:
            raise LesionSSLError(f"malignant_classes {unknown} are not classes of this data ({', '.join(classes)})")
        return [c for c in classes if c in given]
    return [c for c in classes if c in MALIGNANT_CLASSES] if set(classes) <= set(ISIC2019_CLASSES) else []


def malignant_indices(classes: Sequence[str], malignant: Sequence[str]) -> list[int]:
    return [i for i, c in enumerate(classes) if c in malignant]


def malignant_probability(probs: np.ndarray, classes: Sequence[str], malignant: Sequence[str]) -> np.ndarray:
    """P(malignant) = the sum of the malignant classes' probabilities."""
    return probs[:, malignant_indices(classes, malignant)].sum(axis=1)


def choose_threshold(scores: np.ndarray, malignant: np.ndarray, target: float = TARGET_SENSITIVITY) -> float:
    """The largest threshold t with sensitivity(score >= t) >= ``target`` on these cases."""
    positives = np.sort(scores[malignant])[::-1]
    if len(positives) == 0:
        raise ValueError("no malignant case to set a sensitivity on")
    return float(positives[math.ceil(target * len(positives)) - 1])


def _rate(successes: int, trials: int) -> dict[str, float | int | None]:
    if trials == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    interval = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return {"value": successes / trials, "ci_low": float(interval.low), "ci_high": float(interval.high), "n": trials}


def operating_point(scores: np.ndarray, malignant: np.ndarray, threshold: float) -> dict[str, dict]:
    """Sensitivity and specificity at ``threshold``, each with a 95% Wilson interval."""
    called = scores >= threshold
    return {
        "sensitivity": _rate(int((called & malignant).sum()), int(malignant.sum())),
        "specificity": _rate(int((~called & ~malignant).sum()), int((~malignant).sum())),
    }


def malignant_point(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], malignant: Sequence[str], threshold: float
) -> dict[str, dict]:
    """:func:`operating_point` of P(malignant) >= ``threshold`` on labelled cases (class indices)."""
    return operating_point(
        malignant_probability(probs, classes, malignant),
        np.isin(labels, malignant_indices(classes, malignant)),
        threshold,
    )
