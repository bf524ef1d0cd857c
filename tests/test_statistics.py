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


def test_budget_to_reach_interpolates_on_the_log_budget_axis():
    import math

    from lesionssl.report.labels_saved import budget_to_reach

    budgets, scores = [10, 25, 50], [0.30, 0.40, 0.50]
    assert budget_to_reach(budgets, scores, 0.40) == pytest.approx(25)
    assert budget_to_reach(budgets, scores, 0.35) == pytest.approx(
        math.sqrt(10 * 25)
    )  # halfway in log between 10 and 25
    assert budget_to_reach(budgets, scores, 0.45) == pytest.approx(math.sqrt(25 * 50))
    assert budget_to_reach(budgets, scores, 0.25) == 10 and math.isinf(budget_to_reach(budgets, scores, 0.55))
    assert budget_to_reach(budgets, [0.30, 0.28, 0.50], 0.40) == pytest.approx(
        math.exp(math.log(25) + (0.12 / 0.22) * math.log(2))
    )


def test_labels_saved_on_hand_worked_runs_with_a_bootstrap_interval():
    from lesionssl.report.labels_saved import format_budget, labels_saved

    rows = []
    for seed, noise in enumerate([-0.01, 0.0, 0.01, 0.0]):
        for budget, random_score, bt_score in ((10, 0.30, 0.35), (25, 0.40, 0.45), (50, 0.50, 0.55)):
            rows += [
                {"init": "random", "budget": budget, "seed": seed, "balanced_accuracy": random_score + noise},
                {"init": "bt", "budget": budget, "seed": seed, "balanced_accuracy": bt_score + noise},
            ]
    table = labels_saved(pd.DataFrame(rows), "random", "bt", resamples=200).set_index("budget")
    assert table.loc[10, "labels_needed"] == pytest.approx(15.81, abs=0.01) and table.loc[10, "ratio"] == pytest.approx(
        1.581, abs=0.001
    )
    assert table.loc[25, "labels_needed"] == pytest.approx(35.36, abs=0.01)
    assert (
        math.isinf(table.loc[50, "labels_needed"])
        and format_budget(table.loc[50, "labels_needed"], [10, 25, 50]) == "> 50"
    )
    # paired noise moves both curves together, so the interval is tight around the point estimate
    assert table.loc[10, "ci_low"] <= table.loc[10, "labels_needed"] <= table.loc[10, "ci_high"] < 20


def test_paired_interval_is_the_t_interval_of_the_seed_differences():
    a = pd.DataFrame({"seed": [0, 1, 2, 3], "m": [0.50, 0.55, 0.60, 0.52]})
    b = pd.DataFrame({"seed": [0, 1, 2, 3], "m": [0.45, 0.52, 0.53, 0.50]})
    out = compare_pair(a, b, "m")
    differences = np.array([0.05, 0.03, 0.07, 0.02])
    half = stats.t.ppf(0.975, 3) * differences.std(ddof=1) / 2
    assert out["paired_difference"] == pytest.approx(differences.mean())
    assert (out["paired_ci_low"], out["paired_ci_high"]) == pytest.approx(
        (differences.mean() - half, differences.mean() + half)
    )
    assert out["paired_p"] == pytest.approx(stats.ttest_rel(a["m"], b["m"]).pvalue)


def test_batched_bootstrap_scores_equal_one_confusion_matrix_at_a_time():
    """The replicates are scored in batches; each row equals the metric of that resample alone
    (absent classes, ties, and a resample with one class included)."""
    from lesionssl.evaluate.metrics import compute_metrics
    from lesionssl.report.statistics import headline_scores, macro_auroc

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, (30, 25))
    labels[0] = 2  # one class only: no AUROC
    probs = np.round(rng.dirichlet(np.ones(5), (30, 25)), 1)  # class 4 never a label; ties
    scores, aurocs = headline_scores(labels, probs.argmax(axis=2), 5), macro_auroc(labels, probs)
    assert scores.shape == (30, 3) and aurocs.shape == (30,) and np.isnan(aurocs[0])
    for row in range(1, 30):
        metrics = compute_metrics(labels[row], probs[row], [str(c) for c in range(5)])
        assert scores[row] == pytest.approx([metrics["accuracy"], metrics["balanced_accuracy"], metrics["macro_f1"]])
        assert aurocs[row] == pytest.approx(metrics["macro_auroc"])
