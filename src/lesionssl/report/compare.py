"""The comparison report: the seed study's two tables and much more, recomputed from predictions.

Every number in ``results.csv``, ``report.md`` and ``report.html`` comes from the runs'
``predictions.csv`` files (not from cached metrics), so the report can be audited and rebuilt
with ``lesionssl report`` from whatever runs have finished (e.g. the shards of a job array).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from lesionssl.config import CompareConfig, FinetuneConfig, describe_lr, validate
from lesionssl.data.classes import CLASS_NAMES
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.calibration import apply_temperature
from lesionssl.evaluate.metrics import ECE_BINS, NOT_APPLICABLE, metrics_from_predictions, support_note
from lesionssl.figures import (
    plot_confusion,
    plot_label_efficiency,
    plot_lr_curves,
    plot_per_class_f1,
    plot_pretrain_history,
    plot_reliability,
    plot_roc,
)
from lesionssl.io import write_csv, write_text
from lesionssl.layout import BACKBONE_RECORD, CARD, METRICS, PRETRAIN_STAGE, ExperimentFolder, RunFolder
from lesionssl.progress import console
from lesionssl.records import BackboneRecord, RunRecord, RunResult
from lesionssl.report.document import Document
from lesionssl.report.labels_saved import format_budget, labels_saved
from lesionssl.report.published import PUBLISHED
from lesionssl.report.selection import selection_section
from lesionssl.report.statistics import (
    BOOTSTRAP,
    BOOTSTRAP_METRICS,
    compare_pair,
    image_replicates,
    pairwise_table,
    seed_interval,
    summarize,
)

RESULT_COLUMNS = ["init", "seed", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "run_dir"]
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
PAIRWISE_METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "macro_auroc")


#: Written by ``compare``: the run folders of the experiment's current configuration.


def current_runs(out: Path) -> set[str] | None:
    """Run folders (relative to ``out``) of the current configuration; None when unknown."""
    index = ExperimentFolder(out).run_index
    return set(json.loads(index.read_text())["runs"]) if index.is_file() else None


def collect_runs(out: Path) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """Finished runs under ``out/runs`` (each with its ``run.json`` record): one results row each,
    each run's full metrics, and the finished runs left out because an earlier configuration of
    the experiment produced them."""
    rows, full, stale = [], [], []
    expected = current_runs(out)
    for folder in ExperimentFolder(out).finished_runs():
        run = folder.path
        if expected is not None and str(run.relative_to(out)) not in expected:
            stale.append(str(run.relative_to(out)))
            continue
        planned, result = RunRecord.read(run), RunResult.read(run)
        metrics = metrics_from_predictions(folder.predictions, result.classes)
        row = {
            "init": planned.label,
            "initialisation": planned.name,
            "strategy": planned.strategy,
            "seed": planned.seed,
            **{k: metrics[k] for k in HEADLINE},
            "run_dir": str(run.relative_to(out)),
            "protocol": planned.protocol,
            "budget": result.budget_per_class if planned.strategy is None else planned.budget,
            "macro_auroc": metrics["macro_auroc"],
            "lr": result.lr,
            "pretraining_pool": result.pretraining_pool,
            "handling": result.handling,
        }
        for name in result.external:
            external = metrics_from_predictions(folder.external(name).predictions, result.classes)
            row |= {f"{name}:{k}": external[k] for k in (*HEADLINE, "macro_auroc")}
            row[f"{name}:domain_auroc"] = result.external[name].domain_auroc
        rows.append(row)
        full.append(
            {
                **metrics,
                "init": row["init"],
                "seed": planned.seed,
                "budget": row["budget"],
                "protocol": row["protocol"],
                "run": run,
                "result": result,
            }
        )
    return pd.DataFrame(rows), full, stale


class Intervals:
    """95% bootstrap intervals over seeds and test images (:func:`study_interval`) of the runs in
    a results frame, from their ``predictions.csv`` (read once)."""

    def __init__(self, out: Path) -> None:
        self.out, self._predictions, self._replicates = Path(out), {}, {}

    def predictions(self, run_dir: str, test_set: str = "test") -> tuple[np.ndarray, np.ndarray]:
        key = (run_dir, test_set)
        if key not in self._predictions:
            folder = RunFolder(self.out / run_dir)
            frame = pd.read_csv(
                (folder if test_set == "test" else folder.external(test_set)).predictions, keep_default_na=False
            )
            classes = [c.removeprefix("p_") for c in frame.columns if c.startswith("p_")]
            self._predictions[key] = (
                frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(),
                frame[[f"p_{c}" for c in classes]].to_numpy(),
            )
        return self._predictions[key]

    def __call__(self, runs: pd.DataFrame, metric: str, test_set: str = "test") -> tuple[float, float]:
        if metric not in BOOTSTRAP_METRICS or runs.empty:
            return math.nan, math.nan
        for run_dir in runs["run_dir"]:  # a run's image replicates serve every table it appears in
            if (run_dir, test_set, metric) not in self._replicates:
                self._replicates[run_dir, test_set, metric] = image_replicates(
                    *self.predictions(run_dir, test_set), metric
                )
        return seed_interval(np.column_stack([self._replicates[d, test_set, metric] for d in runs["run_dir"]]))


def _per(results: pd.DataFrame) -> str:
    """What a budget counts: labels per class (random draws), or in total (picked by a selection strategy)."""
    return "in total" if results["strategy"].notna().any() else "per class"


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def summary_table(
    results: pd.DataFrame, order: list[str], intervals: Intervals, test_set: str = "test"
) -> pd.DataFrame:
    """The seed's first table (mean accuracy, sample std, number of models), plus balanced metrics."""
    prefix = "" if test_set == "test" else f"{test_set}:"
    table = {
        "": [
            "Mean accuracy",
            "Standard deviation",
            "95% CI",
            "Mean balanced accuracy",
            "Std balanced accuracy",
            "Mean macro F1",
            "Number of models",
        ]
    }
    # Frozen-feature runs record how well a classifier tells the site from the internal test.
    shift = test_set != "test" and f"{prefix}domain_auroc" in results and results[f"{prefix}domain_auroc"].notna().any()
    if shift:
        table[""].append("Domain AUROC (site vs internal test)")
    for init in order:
        runs = results[results["init"] == init]
        accuracy = summarize(runs[f"{prefix}accuracy"].to_numpy(float))
        low, high = intervals(runs, "accuracy", test_set)
        table[init] = [
            _fmt(accuracy["mean"], 3),
            _fmt(accuracy["std"]),
            f"[{_fmt(low, 3)}, {_fmt(high, 3)}]",
            _fmt(runs[f"{prefix}balanced_accuracy"].mean(), 3),
            _fmt(runs[f"{prefix}balanced_accuracy"].std(ddof=1)),
            _fmt(runs[f"{prefix}macro_f1"].mean(), 3),
            str(len(runs)),
        ] + ([_fmt(runs[f"{prefix}domain_auroc"].astype(float).mean(), 3)] if shift else [])
    return pd.DataFrame(table)


def published_table(results: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The seed's published mean accuracy / std / runs beside ours, matched by initialisation name."""
    rows = []
    for init in order:
        ours = results.loc[results["init"] == init, "accuracy"]
        published = PUBLISHED.get(init, {})
        rows.append(
            {
                "initialisation": init,
                "published accuracy": _fmt(published.get("accuracy"), 4),
                "published std": _fmt(published.get("std"), 4),
                "published runs": published.get("runs", "-"),
                "our accuracy": _fmt(ours.mean(), 4),
                "our std": _fmt(ours.std(ddof=1), 4),
                "our runs": len(ours),
            }
        )
    return pd.DataFrame(rows)


def per_class_f1(full: list[dict], order: list[str]) -> pd.DataFrame:
    """Mean and sample std of every class's F1 per initialisation."""
    rows = []
    for init in order:
        runs = [m for m in full if m["init"] == init]
        for name in runs[0]["classes"]:
            values = np.array([m["per_class"][name]["f1"] for m in runs])
            rows.append(
                {
                    "init": init,
                    "class": name,
                    "mean": values.mean(),
                    "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                    "support": runs[0]["per_class"][name]["support"],
                }
            )
    return pd.DataFrame(rows)


def classification_report_table(full: list[dict], order: list[str]) -> pd.DataFrame:
    """The seed's second table: per-class F1 (mean +- std over runs), support, averages, accuracy."""
    f1 = per_class_f1(full, order)
    classes = list(dict.fromkeys(f1["class"]))
    rows = []
    for name in classes:
        row = {"Lesion type": CLASS_NAMES.get(name, name)}
        for init in order:
            entry = f1[(f1["init"] == init) & (f1["class"] == name)].iloc[0]
            row[f"f1 ({init})"] = (
                f"{_fmt(entry['mean'], 2)} ± {_fmt(entry['std'], 2)}" if entry["support"] else NOT_APPLICABLE
            )
        row["Support"] = int(f1[f1["class"] == name]["support"].iloc[0])
        rows.append(row)
    n = next(m["n"] for m in full if m["init"] == order[0])
    for label, key in (
        ("Weighted avg.", "weighted_f1"),
        ("Macro avg.", "macro_f1"),
        ("Accuracy", "accuracy"),
        ("Balanced accuracy", "balanced_accuracy"),
    ):
        row = {"Lesion type": label}
        for init in order:
            values = np.array([m[key] for m in full if m["init"] == init])
            row[f"f1 ({init})"] = (
                f"{_fmt(values.mean(), 2)} ± {_fmt(values.std(ddof=1) if len(values) > 1 else np.nan, 2)}"
            )
        row["Support"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_table(full: list[dict], order: list[str]) -> pd.DataFrame:
    """Per class (melanoma first) and initialisation: sensitivity and specificity, mean ± std over runs."""
    classes = full[0]["classes"]
    rows = []
    for name in sorted(classes, key=lambda c: c != "MEL"):
        row = {"class": CLASS_NAMES.get(name, name), "support": full[0]["per_class"][name]["support"]}
        for init in order:
            runs = [m["per_class"][name] for m in full if m["init"] == init]
            for key, label in (("recall", "sensitivity"), ("specificity", "specificity")):
                if key == "recall" and not row["support"]:
                    row[f"{label} ({init})"] = NOT_APPLICABLE
                    continue
                values = np.array([r.get(key) for r in runs if r.get(key) is not None], dtype=float)
                row[f"{label} ({init})"] = (
                    f"{_fmt(values.mean() if len(values) else None, 3)} ± {_fmt(values.std(ddof=1) if len(values) > 1 else None, 3)}"
                )
        rows.append(row)
    return pd.DataFrame(rows)


def metric_table(
    results: pd.DataFrame, order: list[str], metrics: tuple[str, ...], intervals: Intervals, test_set: str = "test"
) -> pd.DataFrame:
    """Mean, sample std and 95% bootstrap CI (seeds and test images) per initialisation for each metric."""
    rows = []
    for metric in metrics:
        for init in order:
            runs = results[results["init"] == init]
            s = summarize(runs[metric].dropna().to_numpy(float))
            low, high = intervals(runs, metric, test_set)
            rows.append(
                {
                    "metric": metric,
                    "init": init,
                    "n": s["n"],
                    "mean": _fmt(s["mean"]),
                    "std": _fmt(s["std"]),
                    "95% CI": f"[{_fmt(low)}, {_fmt(high)}]",
                }
            )
    return pd.DataFrame(rows)


def pairwise_frame(results: pd.DataFrame, order: list[str], metrics: tuple[str, ...]) -> pd.DataFrame:
    table = pairwise_table(results, order, metrics)
    if table.empty:
        return table
    records = table.to_dict("records")
    return pd.DataFrame(
        {
            "comparison": table["comparison"],
            "metric": table["metric"],
            "difference": table["difference"].map(_fmt),
            "95% CI (Welch)": [f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]" for r in records],
            "Welch p": [_fmt(r.get("welch_p"), 3) for r in records],
            "paired p (n)": [f"{_fmt(r.get('paired_p'), 3)} ({r['n_paired']})" for r in records],
            "Hedges g": [_fmt(r.get("hedges_g"), 2) for r in records],
            "note": table["note"],
        }
    )


PROTOCOL_TITLES = {
    "finetune": "Fine-tuning (the transfer protocol)",
    "linear": "Linear probe (frozen backbone, C chosen on the validation split)",
    "knn": "kNN (frozen backbone, k nearest training images by cosine similarity)",
}
STUDY_METRICS = ("balanced_accuracy", "macro_f1", "macro_auroc", "accuracy")


def test_set_names(results: pd.DataFrame) -> list[str]:
    """``test`` and every external set with results."""
    return ["test", *sorted({c.split(":")[0] for c in results.columns if ":" in c})]


def test_set_view(results: pd.DataFrame, test_set: str) -> pd.DataFrame:
    """The runs that scored one test set, with its metric columns under their plain names (some
    sets are only some runs': AdaBN's are the fine-tuned models')."""
    if test_set == "test":
        return results
    prefix = f"{test_set}:"
    columns = {c: c.removeprefix(prefix) for c in results.columns if c.startswith(prefix)}
    scored = results[list(columns)].notna().any(axis=1)
    return results[scored].drop(columns=[c for c in STUDY_METRICS if c in results]).rename(columns=columns)


def score_table(frame: pd.DataFrame, order: list[str], intervals: Intervals, test_set: str = "test") -> pd.DataFrame:
    """Per initialisation: runs, then mean [95% bootstrap interval over seeds and test images] of each study metric."""
    rows = []
    for init in order:
        runs = frame[frame["init"] == init]
        row = {"initialisation": init, "runs": len(runs)}
        for metric in STUDY_METRICS:
            s = summarize(runs[metric].dropna().to_numpy(float)) if metric in runs else summarize(np.array([]))
            low, high = intervals(runs, metric, test_set) if metric in runs else (math.nan, math.nan)
            row[metric.replace("_", " ")] = f"{_fmt(s['mean'], 3)} [{_fmt(low, 3)}, {_fmt(high, 3)}]"
        if test_set != "test" and "domain_auroc" in runs and runs["domain_auroc"].notna().any():
            row["domain AUROC (site vs internal test)"] = _fmt(runs["domain_auroc"].astype(float).mean(), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Each later initialisation against the first, paired over seeds: difference, 95% CI, p."""
    rows = []
    for other in order[1:]:
        for metric in STUDY_METRICS:
            if metric not in frame:
                continue
            c = compare_pair(frame[frame["init"] == other], frame[frame["init"] == order[0]], metric)
            rows.append(
                {
                    "comparison": f"{other} - {order[0]}",
                    "metric": metric.replace("_", " "),
                    "paired difference": _fmt(c.get("paired_difference"), 3),
                    "paired 95% CI": f"[{_fmt(c.get('paired_ci_low'), 3)}, {_fmt(c.get('paired_ci_high'), 3)}]",
                    "paired p": _fmt(c.get("paired_p"), 4),
                    "seeds": c["n_paired"],
                }
            )
    return pd.DataFrame(rows)


def _study(doc: Document, results: pd.DataFrame, order: list[str], intervals: Intervals) -> None:
    """Every protocol, budget and test set in its own tables."""
    budgets = sorted(b for b in results["budget"].dropna().unique()) or [None]
    doc.heading("Results by protocol, label budget and test set")
    doc.paragraph(
        "Mean over seeds with the 95% bootstrap interval over seeds and test images; differences are paired over the seeds both initialisations share "
        "(a seed fixes the labelled images, so both saw the same labels), with the t-interval of the paired differences and the paired t-test."
    )
    for protocol in [p for p in PROTOCOL_TITLES if p in set(results["protocol"])]:
        doc.heading(PROTOCOL_TITLES[protocol], 3)
        runs = results[results["protocol"] == protocol]
        for test_set in test_set_names(runs):
            view = test_set_view(runs, test_set)
            for budget in budgets:
                frame = view if budget is None else view[view["budget"] == budget]
                if frame.empty:
                    continue
                present = [i for i in order if i in set(frame["init"])]
                doc.heading(
                    f"{protocol} · {test_set}"
                    + (f" · {int(budget)} labels {_per(results)}" if budget is not None else ""),
                    4,
                )
                doc.table(score_table(frame, present, intervals, test_set))
                if len(present) > 1:
                    doc.table(paired_table(frame, present))


def _labels_saved(doc: Document, out: Path, results: pd.DataFrame, order: list[str]) -> None:
    """Labels per class the first initialisation needs to match each other one, per protocol and test set."""
    budgets = sorted(int(b) for b in results["budget"].dropna().unique())
    doc.heading("Labels saved")
    doc.paragraph(
        f"How many labels per class **{order[0]}** needs to reach each other initialisation's mean balanced accuracy at each budget: "
        "interpolated linearly in log(budget) on its label-efficiency curve; 95% bootstrap interval over seeds (resampled jointly for both). "
        f"`> {max(budgets)}`: not reached within the measured budgets; `<= {min(budgets)}`: reached already at the smallest."
    )
    rows = []
    for protocol in [p for p in PROTOCOL_TITLES if p in set(results["protocol"])]:
        runs = results[results["protocol"] == protocol]
        for test_set in test_set_names(runs):
            view = test_set_view(runs, test_set)
            for other in order[1:]:
                table = labels_saved(view, order[0], other)
                for r in table.to_dict("records"):
                    rows.append(
                        {
                            "protocol": protocol,
                            "test set": test_set,
                            "initialisation": other,
                            "labels per class": r["budget"],
                            "its balanced accuracy": _fmt(r["other_score"], 3),
                            f"{order[0]} at this budget": _fmt(r["baseline_score"], 3),
                            f"{order[0]} needs": format_budget(r["labels_needed"], budgets),
                            "95% CI": f"[{format_budget(r['ci_low'], budgets)}, {format_budget(r['ci_high'], budgets)}]",
                            "ratio": "n/a"
                            if np.isinf(r["ratio"]) or r["labels_needed"] <= min(budgets)
                            else f"{r['ratio']:.2f}",
                        }
                    )
    saved = pd.DataFrame(rows)
    if not saved.empty:
        write_csv(ExperimentFolder(out).labels_saved, saved)
        doc.table(saved)


def _interval(values: list[float]) -> str:
    """Mean with a 95% percentile bootstrap interval over runs (``scipy.stats.bootstrap``), which
    stays within the values' range (just the value for one run)."""
    if not values:
        return "-"
    values = np.asarray(values, dtype=float)
    if len(values) == 1 or np.ptp(values) == 0:
        return (
            _fmt(values[0], 3)
            if len(values) == 1
            else f"{_fmt(values[0], 3)} [{_fmt(values[0], 3)}, {_fmt(values[0], 3)}]"
        )
    result = stats.bootstrap((values,), np.mean, n_resamples=BOOTSTRAP, method="percentile", random_state=0)
    return f"{_fmt(values.mean(), 3)} [{_fmt(result.confidence_interval.low, 3)}, {_fmt(result.confidence_interval.high, 3)}]"


def deployment_table(full: list[dict], order: list[str]) -> pd.DataFrame:
    """Per initialisation: the temperature and the test ECE and NLL before and after it, and the
    sensitivity and specificity that the threshold chosen on validation reaches on test and on each
    external set (means with 95% percentile bootstrap intervals over runs)."""
    rows = []
    for init in order:
        results: list[RunResult] = [m["result"] for m in full if m["init"] == init]
        fitted = [r for r in results if r.calibration.temperature is not None]
        if not fitted:
            continue
        test = [r.calibration.test for r in fitted]
        row = {
            "init": init,
            "runs": len(fitted),
            "temperature (median)": _fmt(float(np.median([r.calibration.temperature for r in fitted])), 2),
            "ECE before": _interval([t["ece_before"] for t in test]),
            "ECE after": _interval([t["ece_after"] for t in test]),
            "NLL before": _interval([t["nll_before"] for t in test]),
            "NLL after": _interval([t["nll_after"] for t in test]),
        }
        points = {"test": [r.operating_point.test for r in fitted]}
        for name in sorted({n for r in fitted for n in r.external}):
            points[name] = [r.external[name].operating_point if name in r.external else None for r in fitted]
        for where, values in points.items():
            values = [v for v in values if v]
            for rate in ("sensitivity", "specificity"):
                row[f"{where} {rate}"] = _interval([v[rate]["value"] for v in values if v[rate]["value"] is not None])
        rows.append(row)
    return pd.DataFrame(rows)


def _pooled_reliability(runs: list[dict], path: Path, title: str) -> None:
    """One reliability diagram of every run's test predictions together, before and after each
    run's own temperature."""
    labels, before, after = [], [], []
    for m in runs:
        result: RunResult = m["result"]
        frame = pd.read_csv(RunFolder(m["run"]).predictions, keep_default_na=False)
        probs = frame[[f"p_{c}" for c in result.classes]].to_numpy()
        labels.append(frame["label"].map({c: i for i, c in enumerate(result.classes)}).to_numpy())
        before.append(probs)
        after.append(apply_temperature(probs, result.calibration.temperature))
    plot_reliability(np.concatenate(labels), np.concatenate(before), np.concatenate(after), path, title=title)


def _deployment(doc: Document, out: Path, full: list[dict], order: list[str]) -> None:
    """Calibration, operating point and where the models look."""
    table = deployment_table(full, order)
    doc.heading("Using the model: calibration and operating point")
    if table.empty:
        doc.paragraph(
            "No run fitted a temperature or an operating point: they need a validation split (`lesionssl split --val N`)."
        )
    else:
        target = next(
            (
                m["result"].operating_point.target_sensitivity
                for m in full
                if m["result"].operating_point.target_sensitivity
            ),
            None,
        )
        malignant = next(
            (
                m["result"].operating_point.malignant_classes
                for m in full
                if m["result"].operating_point.malignant_classes
            ),
            None,
        )
        doc.paragraph(
            "Each run fits a temperature on its validation split and chooses there the malignant-vs-benign threshold "
            + (f"that reaches sensitivity {target:g} " if target else "")
            + (
                f"(malignant: {', '.join(malignant)}); "
                if malignant
                else "(no run set malignant classes, so no threshold); "
            )
            + "the test and external columns show what those choices give on images never used to make them. "
            f"ECE: expected calibration error ({ECE_BINS} bins); NLL: negative log-likelihood. Means over runs with a 95% percentile bootstrap interval over runs (inside the values' range); every run's own Wilson intervals are in its {METRICS} and {CARD}."
        )
        doc.table(table)
    for init in order:
        # predictions.csv holds the model's own probabilities unless a test prior adjusted them
        fitted = [
            m
            for m in full
            if m["init"] == init
            and m["result"].calibration.temperature is not None
            and not m["result"].logit_adjustment.test_prior
        ]
        if fitted:
            path = out / "figures" / f"reliability_{init}.png"
            _pooled_reliability(fitted, path, f"{init}: test, {len(fitted)} runs pooled")
            doc.image(
                path,
                f"Reliability of {init} on test before and after temperature scaling (every run's predictions pooled, each with its own temperature)",
            )
        runs = sorted(
            (m for m in full if m["init"] == init and RunFolder(m["run"]).examples_figure.is_file()),
            key=lambda m: m["seed"],
        )
        if runs:
            doc.image(
                RunFolder(runs[0]["run"]).examples_figure,
                f"{init}, seed {runs[0]['seed']} (the lowest seed, not a chosen run): per class the most confident correct and wrong test predictions with Grad-CAM maps",
            )


def _figures(
    doc: Document,
    out: Path,
    full: list[dict],
    results: pd.DataFrame,
    order: list[str],
    experiment: CompareConfig | None,
    intervals: Intervals,
) -> None:
    figures = out / "figures"
    doc.heading("Figures")
    doc.paragraph("Every figure is in `figures/` as a 300-dpi PNG and as an SVG.")
    for init in order:
        runs = results[results["init"] == init]
        pooled = [intervals.predictions(d) for d in runs["run_dir"]]
        path = figures / f"roc_{init}.png"
        plot_roc(
            np.concatenate([labels for labels, _ in pooled]),
            np.concatenate([probs for _, probs in pooled]),
            full[0]["classes"],
            path,
            f"{init}: one-vs-rest ROC",
        )
        doc.image(path, f"One-vs-rest ROC curves of {init}, the test predictions of its {len(runs)} runs pooled")
    plot_per_class_f1(per_class_f1(full, order), figures / "per_class_f1.png")
    doc.image(figures / "per_class_f1.png", "Per-class F1, mean over runs with one standard deviation")
    for init in order:
        runs = [m for m in full if m["init"] == init]
        mean = np.mean([np.asarray(m["confusion_matrix_normalized"]) for m in runs], axis=0)
        path = figures / f"confusion_{init}.png"
        plot_confusion(mean, runs[0]["classes"], path, title=f"{init}: mean row-normalised confusion")
        doc.image(path, f"Mean confusion matrix of {init} ({len(runs)} runs)")
    curves = {
        init: [
            pd.read_csv(RunFolder(m["run"]).lr_finder)
            for m in full
            if m["init"] == init and RunFolder(m["run"]).lr_finder.is_file()
        ]
        for init in order
    }
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        chosen = {init: results.loc[results["init"] == init, "lr"].dropna().tolist() for init in curves}
        plot_lr_curves(curves, chosen, figures / "lr_finder.png")
        doc.image(figures / "lr_finder.png", "LR-finder curves of every run; dashed: the LR each run chose (valley)")
        lrs = results.groupby("init")["lr"].agg(["min", "median", "max", "count"]).reindex(order).reset_index()
        doc.table(
            lrs.assign(**{c: lrs[c].map(lambda v: f"{v:.3g}") for c in ("min", "median", "max")}).rename(
                columns={"count": "runs"}
            )
        )
    for history in sorted(out.glob("pretrain*/history.csv")):  # pretrain/, and pretrain-<name>/ of other methods
        figure = figures / f"{history.parent.name.replace('pretrain', 'pretraining', 1)}.png"
        frame = pd.read_csv(history)
        if not (frame["stage"] == PRETRAIN_STAGE).any():  # still before its first epoch (start, warm-up)
            doc.paragraph(f"{history.parent.name}/ has not finished an epoch yet.")
            continue
        plot_pretrain_history(frame, figure)
        doc.image(
            figure,
            f"Self-supervised pretraining per epoch ({history.parent.name}/): loss, the terms its method logs, kNN accuracy (when the pool has labelled train and val images) and collapse indicators",
        )
        collapse = collapse_note(frame)
        if collapse:
            doc.paragraph(f"**Warning ({history.parent.name}/): {collapse}**")
    gallery = figures / "augmentations.png"
    if not gallery.is_file() and experiment:
        _augmentation_gallery(out, experiment, gallery)
    doc.image(gallery, "Pretraining augmentations: each row is an image and the two views of its positive pair")


#: The monitor's effective rank falling below this share of its peak names a collapse in the report.
COLLAPSE_DROP = 0.2


def collapse_note(history: pd.DataFrame) -> str:
    """Words for a dimensional collapse the per-epoch monitor saw: the effective rank of the
    embeddings falling far below its peak (or the embedding std near 0); empty when none."""
    if "effective_rank" not in history or history["effective_rank"].dropna().empty:
        return ""
    rank = history["effective_rank"].dropna()
    peak, last = float(rank.max()), float(rank.iloc[-1])
    if last >= COLLAPSE_DROP * peak:
        return ""
    return (
        f"the embeddings collapsed: their effective rank fell from {peak:.0f} (peak) to {last:.1f} at the last epoch. "
        "Collapsed features probe and fine-tune like weak ones; try the small-data recipe, a lower LR, the official lambda, or more epochs with more images."
    )


def read_experiment(out: Path) -> CompareConfig | None:
    """The experiment's resolved configuration (``experiment.yaml``), validated as the
    :class:`CompareConfig` it was written from; None when there is none. One an earlier lesionssl
    wrote that no longer validates is named in one line, and the report says what the runs record."""
    path = ExperimentFolder(out).config
    if not path.is_file():
        return None
    try:
        return validate(CompareConfig, yaml.safe_load(path.read_text()) or {}, str(path))
    except LesionSSLError as exc:
        console.print(
            f"{exc} (an experiment.yaml of an earlier lesionssl?): the report describes what the runs record",
            markup=False,
        )
        return None


def _pretrainings(out: Path, experiment: CompareConfig) -> list[str]:
    """Each pretrained initialisation as its backbone.json records it (the arm's own recipe,
    epochs and start, not the experiment's pretrain section, which an arm may change)."""
    described = []
    for arm in experiment.initialisations:
        if arm.init != "pretrain":
            continue
        record_file = ExperimentFolder(out).pretraining(arm.name if arm.pretrain else None) / BACKBONE_RECORD
        if not record_file.is_file():
            described.append(f"{arm.name}: not finished")
            continue
        record = BackboneRecord.read(record_file)
        start = record.init.get("init", "random") if isinstance(record.init, dict) else record.init
        site = f", {record.site_images} of them the held-out site's (labels removed)" if record.site_images else ""
        colour = f", colour constancy {record.colour_constancy}" if record.colour_constancy != "none" else ""
        described.append(
            f"{arm.name}: {record.method} (recipe {record.recipe}) for {record.epochs} epochs at {record.image_size} px from {start} weights on {record.pool_images} images{site}, encoder LR x{record.encoder_lr_scale:g}, BatchNorm statistics {record.bn_statistics}{colour}"
        )
    return described


def _own_runs(experiment: CompareConfig) -> str:
    """The initialisations whose runs change the finetune section (e.g. colour constancy), in words."""
    own = [
        f"{arm.name} ({', '.join(f'{k} {v}' for k, v in arm.finetune.items())})"
        for arm in experiment.initialisations
        if arm.finetune
    ]
    return f" Runs with their own settings: {'; '.join(own)}." if own else ""


def _methods(
    doc: Document, out: Path, experiment: CompareConfig | None, results: pd.DataFrame, order: list[str]
) -> None:
    """A methods paragraph written from the resolved configuration and the manifest's counts."""
    finetune = experiment.finetune if experiment else FinetuneConfig()
    seeds = sorted(set(results["seed"]))
    manifest = (
        Path(experiment.manifest or ExperimentFolder(out).manifest) if experiment else ExperimentFolder(out).manifest
    )
    counts = ""
    if manifest.is_file():
        table = pd.read_csv(manifest, keep_default_na=False)
        splits = table["split"].value_counts()
        counts = (
            f" The manifest held {len(table)} images: "
            + ", ".join(f"{int(splits[s])} {s}" for s in ("train", "val", "test", "external") if s in splits)
            + f"; {int(table['pretrain'].sum())} images formed the pretraining pool."
        )
    pools = sorted(set(results["pretraining_pool"].dropna()) & {"inductive", "transductive"})
    budgets = sorted(int(b) for b in results["budget"].dropna().unique())
    doc.heading("Methods")
    doc.paragraph(
        f"We compared {len(order)} {'arms (initialisation · label-selection strategy)' if results['strategy'].notna().any() else 'initialisation(s)'} ({', '.join(order)}) of a {finetune.backbone} classifier "
        f"at {finetune.image_size} px under the {', '.join(sorted(set(results['protocol'])))} protocol(s)"
        + (f", with {', '.join(map(str, budgets))} labelled images {_per(results)}" if budgets else "")
        + f", each with {len(seeds)} seeds ({', '.join(map(str, seeds))})."
        + (
            f" Fine-tuning followed the transfer protocol: {finetune.head_epochs} head epoch(s), then unfreezing, {describe_lr(finetune.lr, suggestion=finetune.lr_suggestion)} and {finetune.epochs} epochs of 1cycle"
            + (f" (recipe {finetune.recipe})" if finetune.recipe else "")
            + "."
            if "finetune" in set(results["protocol"])
            else ""
        )
        + (
            " Self-supervised pretraining, as each pretrained backbone records it: "
            + "; ".join(_pretrainings(out, experiment))
            + (f"; the pool was {' and '.join(pools)}" if pools else "")
            + "."
            if experiment is not None and experiment.pretrain
            else ""
        )
        + (_own_runs(experiment) if experiment is not None else "")
        + (
            " Every fine-tuned model was also scored on each external set with BatchNorm statistics re-estimated on that set's images (AdaBN; the sets named -adabn)."
            if finetune.adapt_bn and "finetune" in set(results["protocol"])
            else ""
        )
        + counts
        + " Every run was evaluated once on the test split; nothing was selected on it. Software: lesionssl (this report's configuration is in experiment.yaml)."
    )


def _augmentation_gallery(out: Path, experiment: CompareConfig, path: Path) -> None:
    from lesionssl.augment.preview import augment_preview

    settings = experiment.pretrain
    manifest = ExperimentFolder(out).manifest if ExperimentFolder(out).manifest.is_file() else experiment.manifest
    if manifest and settings:
        augment_preview(
            [str(manifest)], path, settings.augmentation_parameters, 96, 4, 0, tuple(settings.extra_augmentations)
        )


def _pretraining_words(out: Path, init: str) -> str:
    """How an initialisation of the experiment was pretrained, from its backbone record."""
    for folder in (ExperimentFolder(out).pretraining(init), ExperimentFolder(out).pretraining()):
        if (folder / BACKBONE_RECORD).is_file():
            record = BackboneRecord.read(folder / BACKBONE_RECORD)
            kwargs = ", ".join(f"{k} {v}" for k, v in record.method_kwargs.items())
            positives = (
                f"two images of one lesion ({record.cross_image_pairs_per_epoch} cross-image pairs per epoch of {record.pool_images} images)"
                if record.positives == "lesion"
                else "two views of one image"
            )
            return f" Pretrained with {record.method} ({kwargs}), recipe {record.recipe}, {record.epochs} epochs at {record.image_size} px on {record.pool_images} images; positive pairs: {positives}."
    return ""


def _label_efficiency(doc: Document, out: Path, results: pd.DataFrame, order: list[str], intervals: Intervals) -> None:
    rows = []
    for protocol in [p for p in PROTOCOL_TITLES if p in set(results["protocol"])]:
        runs = results[results["protocol"] == protocol]
        for test_set in test_set_names(runs):
            view = test_set_view(runs, test_set)
            for (init, budget), group in view.groupby(["init", "budget"]):
                for metric in ("accuracy", "balanced_accuracy"):
                    low, high = intervals(group, metric, test_set)
                    rows.append(
                        {
                            "protocol": protocol,
                            "test set": test_set,
                            "init": init,
                            "budget": budget,
                            "metric": metric,
                            **summarize(group[metric].to_numpy(float)),
                            "ci_low": low,
                            "ci_high": high,
                        }
                    )
    summary = pd.DataFrame(rows)
    summary["init"] = pd.Categorical(summary["init"], order)
    summary = summary.sort_values(["protocol", "test set", "init", "metric", "budget"])
    doc.heading("Label efficiency")
    for (protocol, test_set), part in summary.groupby(["protocol", "test set"], sort=False):
        path = out / "figures" / f"label_efficiency_{protocol}_{test_set}.png"
        plot_label_efficiency(part, path, title=f"{protocol}, {test_set}", unit=_per(results))
        doc.image(
            path,
            f"{protocol}, {test_set}: accuracy and balanced accuracy vs labelled images {_per(results)} (mean, 95% CI band)",
        )
    doc.table(
        summary.assign(
            mean=summary["mean"].map(_fmt),
            ci=[f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(summary["ci_low"], summary["ci_high"])],
        )[["protocol", "test set", "init", "budget", "metric", "n", "mean", "ci"]]
    )


def write_report(out: Path, inits: dict[str, str] | None = None) -> Path:
    """Write ``results.csv``, ``report.md``, ``report.html`` and ``figures/`` for the finished runs."""
    out = Path(out)
    results, full, stale = collect_runs(out)
    if results.empty:
        raise LesionSSLError(
            f"no finished runs with their run records under {ExperimentFolder(out).runs} (an experiment of an earlier lesionssl: run its `lesionssl compare` again, which records them and skips finished runs)"
        )
    experiment = read_experiment(out)
    inits = inits or ({i.name: i.init for i in experiment.initialisations} if experiment else {})
    present = list(dict.fromkeys(results["init"]))
    # a selection study's arms are (initialisation, strategy): each takes its initialisation's kind
    inits = {
        **(inits or {}),
        **{
            label: (inits or {}).get(name)
            for label, name in zip(results["init"], results["initialisation"])
            if label != name
        },
    }
    order = [i for i in (inits or {}) if i in present] + sorted(set(present) - set(inits or {}))
    budgets = sorted(b for b in results["budget"].dropna().unique())
    (out / "figures").mkdir(exist_ok=True)
    write_csv(
        ExperimentFolder(out).results,
        results[
            [*RESULT_COLUMNS, "budget", "macro_auroc", "lr", "protocol", *[c for c in results.columns if ":" in c]]
        ],
    )

    main_budget = budgets[-1] if budgets else None
    protocols = [p for p in PROTOCOL_TITLES if p in set(results["protocol"])]
    main_protocol = protocols[0] if "finetune" not in protocols else "finetune"
    main = results[
        (results["protocol"] == main_protocol)
        & ((results["budget"] == main_budget) if main_budget is not None else True)
    ]
    main_full = [
        m for m in full if m["protocol"] == main_protocol and (main_budget is None or m["budget"] == main_budget)
    ]
    main_order = [
        i for i in order if i in set(main["init"])
    ]  # an unfinished experiment may lack an initialisation here
    doc = Document("lesionssl comparison report")
    doc.paragraph(
        "Test-set results of every finished run, recomputed from the runs' `predictions.csv`. Nothing was selected on the test set: "
        "each run trains a fixed protocol (or selects on the validation split) and is evaluated once."
        + (
            f" The seed study's tables below are for the largest label budget, {main_budget} images {_per(results)}."
            if len(budgets) > 1
            else ""
        )
        + (
            f" They show the {main_protocol} protocol; every protocol, budget and test set follows in its own tables."
            if len(protocols) > 1 or len(budgets) > 1
            else ""
        )
    )
    if stale:
        doc.paragraph(
            f"{len(stale)} finished run(s) from an earlier configuration of this experiment are left out: "
            + ", ".join(f"`{s}`" for s in stale)
            + "."
        )
    intervals = Intervals(out)
    _methods(doc, out, experiment, results, order)
    doc.heading("Model fine-tuning results")
    doc.table(summary_table(main, main_order, intervals))
    if experiment is not None and experiment.reference == "seed-isic2019":
        doc.heading("Published numbers (Haggerty & Chandra 2023) next to ours", 3)
        doc.table(published_table(main, main_order))
    doc.paragraph(
        "Standard deviation is the sample standard deviation (n - 1) over runs; the 95% CI is a percentile bootstrap interval of the mean that resamples both the seeds and the test images (1,000 replicates; 200 for AUROC), so it never leaves [0, 1]."
    )
    doc.heading("Combined classification report (mean ± std over runs)")
    doc.table(classification_report_table(main_full, main_order))
    if main_full and support_note(main_full[0]["per_class"]):
        doc.paragraph(support_note(main_full[0]["per_class"]))
    doc.heading("Every metric with 95% confidence intervals")
    doc.table(metric_table(main, main_order, PAIRWISE_METRICS, intervals))
    doc.heading("Sensitivity and specificity per class (one class against the rest)")
    doc.paragraph("Mean ± sample std over runs; melanoma first, as clinicians ask first.")
    doc.table(sensitivity_table(main_full, main_order))
    doc.heading("Pairwise comparisons")
    pairs = pairwise_frame(main, main_order, PAIRWISE_METRICS)
    if pairs.empty:
        doc.paragraph("Only one initialisation: nothing to compare.")
    else:
        doc.paragraph(
            "Difference of means (first minus second) with Welch's 95% CI and t-test; paired t-test over the seeds both share; Hedges' g effect size."
        )
        doc.table(pairs)
    for name in sorted({c.split(":")[0] for c in results.columns if ":" in c}):
        doc.heading(f"External test set: {name} (domain shift)")
        doc.table(summary_table(main, main_order, intervals, name))
        doc.table(
            metric_table(test_set_view(main, name), main_order, ("balanced_accuracy", "macro_auroc"), intervals, name)
        )
    if len(protocols) > 1 or len(budgets) > 1:
        _study(doc, results, order, intervals)
    if len(budgets) > 1:
        _label_efficiency(doc, out, results, order, intervals)
        if len(order) > 1 and results["strategy"].isna().all():  # labels saved counts labels per class
            _labels_saved(doc, out, results, order)
    if results["strategy"].notna().any():
        selection_section(doc, out, results, full[0]["result"].classes, intervals)
    _deployment(doc, out, main_full, main_order)
    _figures(doc, out, main_full, main, main_order, experiment, intervals)
    doc.heading("Unlabelled data used for pretraining")
    pools = results.dropna(subset=["pretraining_pool"]).groupby("init")["pretraining_pool"].first().to_dict()
    names = dict(zip(results["init"], results["initialisation"]))
    for init in order:
        pool = pools.get(init)
        if pool in ("inductive", "transductive"):
            meaning = (
                "test images were seen, without labels, during pretraining"
                if pool == "transductive"
                else "no test image was seen during pretraining"
            )
            words = _pretraining_words(out, names.get(init, init)) if (inits or {}).get(init) == "pretrain" else ""
            doc.paragraph(f"**{init}**: {pool} ({meaning}).{words}")
        else:
            doc.paragraph(f"**{init}**: {pool or 'not pretrained by lesionssl'}.")
    doc.heading("Class imbalance and prior shift")
    for init in order:
        for handling in sorted(set(results.loc[results["init"] == init, "handling"])):
            doc.paragraph(f"**{init}**: {handling}.")
    doc.heading("Runs")
    runs = results[
        ["protocol", "init", "budget", "seed", "accuracy", "balanced_accuracy", "macro_f1", "lr", "run_dir"]
    ].copy()
    runs["lr"] = runs["lr"].map(lambda v: "-" if pd.isna(v) else f"{v:.3g}")
    doc.table(runs.round(4))
    folder = ExperimentFolder(out)
    write_text(folder.report, doc.to_markdown(out))
    write_text(folder.report_html, doc.to_html())
    return folder.report
