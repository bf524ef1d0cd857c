import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lesionssl.report.statistics import compare_pair, hedges_g, pairwise_table, summarize


def test_summary_is_mean_sample_std_and_t_interval():
    s = summarize(np.array([0.6, 0.7, 0.8]))
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.1)
    assert s["ci_high"] - s["mean"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)


def test_pair_uses_welch_and_pairs_only_shared_seeds():
    a = pd.DataFrame({"seed": [0, 1, 2, 3], "acc": [0.70, 0.72, 0.71, 0.74]})
    b = pd.DataFrame({"seed": [0, 1, 2, 9], "acc": [0.66, 0.69, 0.67, 0.60]})
    out = compare_pair(a, b, "acc")
    assert out["difference"] == pytest.approx(a["acc"].mean() - b["acc"].mean())
    assert out["welch_p"] == pytest.approx(stats.ttest_ind(a["acc"], b["acc"], equal_var=False).pvalue)
    assert out["n_paired"] == 3
    assert out["paired_p"] == pytest.approx(stats.ttest_rel([0.70, 0.72, 0.71], [0.66, 0.69, 0.67]).pvalue)
    assert out["ci_low"] < out["difference"] < out["ci_high"] and out["note"] == ""


def test_small_n_is_flagged():
    a = pd.DataFrame({"seed": [0, 1], "acc": [0.7, 0.8]})
    assert "no conclusion" in compare_pair(a, a, "acc")["note"]


def test_hedges_g_of_shifted_samples():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert hedges_g(x + 1, x) == pytest.approx(1 / np.std(x, ddof=1) * (1 - 3 / (4 * 8 - 9)))


def test_pairwise_table_covers_every_pair_and_metric():
    results = pd.DataFrame({"init": list("aaabbbccc"), "seed": [0, 1, 2] * 3, "m": np.linspace(0, 1, 9)})
    table = pairwise_table(results, ["a", "b", "c"], ("m",))
    assert list(table["comparison"]) == ["a - b", "a - c", "b - c"]
