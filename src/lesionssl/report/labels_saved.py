"""Labels saved: how many labels per class a baseline needs to match another initialisation.

For each budget ``b`` the other initialisation's mean score ``s(b)`` is located on the
baseline's label-efficiency curve, interpolated linearly in log(budget) between the measured
budgets: the baseline needs ``b*`` labels per class to score ``s(b)``. When the baseline's
curve never reaches ``s(b)`` within the measured budgets, ``b*`` is only known to exceed the
largest one (reported as ``> B``); when it starts above, ``b*`` is at most the smallest one.
A 95% bootstrap interval resamples the seeds (with replacement, jointly for both
initialisations, since a seed fixes the labelled images both saw) and recomputes ``b*``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

BOOTSTRAP = 2000


def budget_to_reach(budgets: np.ndarray, scores: np.ndarray, target: float) -> float:
    """Budget at which the curve ``scores(budgets)`` first reaches ``target`` (log-linear
    interpolation); ``budgets[0]`` when it starts at or above it, ``inf`` when it never does."""
    budgets, scores = np.asarray(budgets, float), np.asarray(scores, float)
    if scores[0] >= target:
        return float(budgets[0])
    for i in range(1, len(budgets)):
        if scores[i] >= target:
            share = (target - scores[i - 1]) / (scores[i] - scores[i - 1])
            return float(math.exp(math.log(budgets[i - 1]) + share * (math.log(budgets[i]) - math.log(budgets[i - 1]))))
    return math.inf


def _matrix(frame: pd.DataFrame, init: str, metric: str, budgets: list[int], seeds: list[int]) -> np.ndarray:
    """Scores ``(budgets, seeds)`` of one initialisation (NaN where a run is missing)."""
    rows = frame[frame["init"] == init].groupby(["budget", "seed"])[metric].mean()
    return np.array([[rows.get((b, s), np.nan) for s in seeds] for b in budgets], dtype=float)


def labels_saved(
    frame: pd.DataFrame,
    baseline: str,
    other: str,
    metric: str = "balanced_accuracy",
    resamples: int = BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per budget: the other initialisation's mean score, the baseline's ``b*`` with its
    bootstrap interval, and the ratio ``b* / b``.

    Args:
        frame: Runs with columns ``init``, ``budget``, ``seed`` and ``metric``.
    """
    budgets = sorted(int(b) for b in frame["budget"].dropna().unique())
    seeds = sorted(set(frame.loc[frame["init"] == baseline, "seed"]) & set(frame.loc[frame["init"] == other, "seed"]))
    if len(budgets) < 2 or not seeds:
        return pd.DataFrame()
    base, theirs = _matrix(frame, baseline, metric, budgets, seeds), _matrix(frame, other, metric, budgets, seeds)
    draws = np.random.default_rng(seed).integers(0, len(seeds), size=(resamples, len(seeds)))
    base_boot, theirs_boot = (
        np.nanmean(base[:, draws], axis=2).T,
        np.nanmean(theirs[:, draws], axis=2).T,
    )  # (resamples, budgets)
    base_mean, theirs_mean = np.nanmean(base, axis=1), np.nanmean(theirs, axis=1)
    rows = []
    for i, budget in enumerate(budgets):
        needed = budget_to_reach(budgets, base_mean, theirs_mean[i])
        boot = [budget_to_reach(budgets, b, t[i]) for b, t in zip(base_boot, theirs_boot)]
        low, high = np.percentile(boot, [2.5, 97.5], method="inverted_cdf")
        rows.append(
            {
                "budget": budget,
                "other": other,
                "other_score": theirs_mean[i],
                "baseline": baseline,
                "baseline_score": base_mean[i],
                "labels_needed": needed,
                "ci_low": float(low),
                "ci_high": float(high),
                "ratio": needed / budget,
                "seeds": len(seeds),
            }
        )
    return pd.DataFrame(rows)


def format_budget(value: float, budgets: list[int]) -> str:
    """``b*`` in words: ``> 50`` beyond the measured curve, ``<= 10`` at or below its start."""
    if math.isinf(value):
        return f"> {max(budgets)}"
    if value <= min(budgets):
        return f"<= {min(budgets)}"
    return f"{value:.1f}"
