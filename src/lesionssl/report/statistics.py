"""Across-run statistics: per-initialisation summaries and pairwise comparisons.

For each metric of an initialisation: mean, sample std (n - 1) and a 95% percentile bootstrap
interval of the mean that resamples both the seeds (runs) and the test images they share
(:func:`study_interval`), so it states both sources of variation and never leaves [0, 1]. For each pair of
initialisations: difference of means with Welch's 95% CI, Welch's t-test, the mean paired
difference over the seeds both share with its 95% t-interval and paired t-test (runs with the
same seed share the labelled images, data order and head initialisation), and Hedges' g. With fewer than 3 runs per side no conclusion is drawn.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

MIN_RUNS = 3
#: Bootstrap replicates of an interval (a fifth of them for AUROC, which ranks every replicate).
BOOTSTRAP = 1000
#: Metrics computed from predictions by :func:`study_interval`.
BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc")


def headline_scores(labels: np.ndarray, predictions: np.ndarray, k: int) -> np.ndarray:
    """Accuracy, balanced accuracy and macro F1 (over the classes present), from one confusion
    matrix: the definitions of :func:`~lesionssl.evaluate.metrics.compute_metrics`, fast enough to
    be drawn thousands of times. Batched: ``[..., n]`` labels and predictions give ``[..., 3]``."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    batch, n = labels.shape[:-1], labels.shape[-1]
    rows = int(np.prod(batch, dtype=int))
    # One confusion matrix per row: offset each row's codes into its own k*k block of one bincount.
    codes = (labels * k + predictions).reshape(rows, n) + (np.arange(rows) * k * k)[:, None]
    counts = np.bincount(codes.ravel(), minlength=rows * k * k).reshape(rows, k, k).astype(float)
    support, called, hits = counts.sum(axis=2), counts.sum(axis=1), np.diagonal(counts, axis1=1, axis2=2)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
    precision = np.divide(hits, called, out=np.zeros_like(hits), where=called > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    classes = present.sum(axis=1)  # recall and F1 are 0 for absent classes, so sums over all are sums over the present
    scores = np.stack(
        [hits.sum(axis=1) / counts.sum(axis=(1, 2)), recall.sum(axis=1) / classes, f1.sum(axis=1) / classes], axis=-1
    )
    return scores.reshape(*batch, 3)


def macro_auroc(labels: np.ndarray, probs: np.ndarray) -> float | np.ndarray:
    """One-vs-rest AUROC averaged over the classes with positives and negatives (Mann-Whitney U).
    Batched: ``[..., n]`` labels and ``[..., n, k]`` probabilities give ``[...]`` (NaN where no class qualifies)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    n = labels.shape[-1]
    ranks = stats.rankdata(probs, axis=-2)  # mid-ranks of each class's scores within each row
    positives = labels[..., None] == np.arange(probs.shape[-1])
    n_pos = positives.sum(axis=-2)
    valid = (n_pos > 0) & (n_pos < n)
    u = np.where(positives, ranks, 0.0).sum(axis=-2) - n_pos * (n_pos + 1) / 2
    auroc = np.divide(u, n_pos * (n - n_pos), out=np.zeros(u.shape), where=valid)
    counted = valid.sum(axis=-1)
    mean = np.divide(auroc.sum(axis=-1), counted, out=np.full(counted.shape, math.nan), where=counted > 0)
    return float(mean) if mean.ndim == 0 else mean


def image_interval(labels: np.ndarray, predictions: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile intervals of :func:`headline_scores` over test images resampled with
    replacement (``scipy.stats.bootstrap``): one model's test-set sampling error."""
    result = stats.bootstrap(
        (labels, predictions),
        lambda a, b, axis=-1: headline_scores(np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1), k).T,
        paired=True,
        vectorized=True,
        n_resamples=BOOTSTRAP,
        method="percentile",
        random_state=seed,
    )
    return result.confidence_interval.low, result.confidence_interval.high


#: Replicates scored at once (bounds the memory of the batched scores on large test sets).
REPLICATE_CHUNK = 100


def image_replicates(labels: np.ndarray, probs: np.ndarray, metric: str, seed: int = 0) -> np.ndarray:
    """A run's metric on bootstrap resamples of its test images. The resamples depend only on
    ``seed`` and the number of images, so runs that share a test set are resampled jointly."""
    resamples = BOOTSTRAP // 5 if metric == "macro_auroc" else BOOTSTRAP
    draws = np.random.default_rng([seed, len(labels)]).integers(0, len(labels), (resamples, len(labels)))
    chunks = [draws[i : i + REPLICATE_CHUNK] for i in range(0, resamples, REPLICATE_CHUNK)]
    if metric == "macro_auroc":
        return np.concatenate([macro_auroc(labels[pick], probs[pick]) for pick in chunks])
    predictions, column = probs.argmax(axis=1), BOOTSTRAP_METRICS.index(metric)
    return np.concatenate(
        [headline_scores(labels[pick], predictions[pick], probs.shape[1])[:, column] for pick in chunks]
    )


def seed_interval(per_run: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean over runs from per-run image replicates ``[B, runs]``:
    each replicate also resamples the runs (seeds) with replacement."""
    chosen = np.random.default_rng(seed).integers(0, per_run.shape[1], per_run.shape)
    low, high = np.nanpercentile(np.take_along_axis(per_run, chosen, axis=1).mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def study_interval(runs: list[tuple[np.ndarray, np.ndarray]], metric: str, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of a metric's mean over runs, resampling the runs (seeds)
    and, within each replicate, the test images (jointly for runs that share a test set).

    Args:
        runs: Per run, true class indices ``[n]`` and probabilities ``[n, k]``.
        metric: One of :data:`BOOTSTRAP_METRICS`.
    """
    return seed_interval(
        np.column_stack([image_replicates(labels, probs, metric, seed) for labels, probs in runs]), seed
    )


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, sample std and 95% t-interval of the mean (the tables take its mean and std; paired seed differences its interval)."""
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    std = float(np.std(values, ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference with the small-sample correction."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return math.nan
    pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return math.nan
    return float((np.mean(a) - np.mean(b)) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def compare_pair(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> dict[str, float | str]:
    """Compare two initialisations' runs (frames with ``seed`` and ``metric`` columns)."""
    x, y = a[metric].to_numpy(float), b[metric].to_numpy(float)
    diff = float(np.mean(x) - np.mean(y))
    out: dict[str, float | str] = {"difference": diff, "n_a": len(x), "n_b": len(y)}
    if len(x) > 1 and len(y) > 1:
        va, vb = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
        se = math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se > 0 else math.inf
        half = stats.t.ppf(0.975, dof) * se if se > 0 else 0.0
        out |= {
            "ci_low": diff - half,
            "ci_high": diff + half,
            "welch_p": float(stats.ttest_ind(x, y, equal_var=False).pvalue) if se > 0 else math.nan,
        }
    paired = a.merge(b, on="seed", suffixes=("_a", "_b")).dropna(subset=[f"{metric}_a", f"{metric}_b"])
    out["n_paired"] = len(paired)
    if len(paired) > 1:
        differences = (paired[f"{metric}_a"] - paired[f"{metric}_b"]).to_numpy(float)
        paired_summary = summarize(differences)
        out |= {
            "paired_difference": paired_summary["mean"],
            "paired_ci_low": paired_summary["ci_low"],
            "paired_ci_high": paired_summary["ci_high"],
        }
        out["paired_p"] = (
            float(stats.ttest_rel(paired[f"{metric}_a"], paired[f"{metric}_b"]).pvalue)
            if differences.std() > 0
            else math.nan
        )
    out["hedges_g"] = hedges_g(x, y)
    out["note"] = "" if min(len(x), len(y)) >= MIN_RUNS else f"fewer than {MIN_RUNS} runs per side: no conclusion"
    return out


def pairwise_table(results: pd.DataFrame, order: list[str], metrics: tuple[str, ...]) -> pd.DataFrame:
    """One row per (pair of initialisations, metric)."""
    rows = []
    for first, second in itertools.combinations(order, 2):
        for metric in metrics:
            stats_row = compare_pair(results[results["init"] == first], results[results["init"] == second], metric)
            rows.append({"comparison": f"{first} - {second}", "metric": metric, **stats_row})
    return pd.DataFrame(rows)
