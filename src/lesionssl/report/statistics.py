"""Across-run statistics: per-initialisation summaries and pairwise comparisons.

For each metric: mean, sample std (n - 1) and a 95% t-interval of the mean. For each pair of
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


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, sample std and 95% t-interval of the mean."""
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
        out |= {"ci_low": diff - half, "ci_high": diff + half, "welch_p": float(stats.ttest_ind(x, y, equal_var=False).pvalue) if se > 0 else math.nan}
    paired = a.merge(b, on="seed", suffixes=("_a", "_b")).dropna(subset=[f"{metric}_a", f"{metric}_b"])
    out["n_paired"] = len(paired)
    if len(paired) > 1:
        differences = (paired[f"{metric}_a"] - paired[f"{metric}_b"]).to_numpy(float)
        paired_summary = summarize(differences)
        out |= {"paired_difference": paired_summary["mean"], "paired_ci_low": paired_summary["ci_low"], "paired_ci_high": paired_summary["ci_high"]}
        out["paired_p"] = float(stats.ttest_rel(paired[f"{metric}_a"], paired[f"{metric}_b"]).pvalue) if differences.std() > 0 else math.nan
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
