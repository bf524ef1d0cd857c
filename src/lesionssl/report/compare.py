"""The comparison report: the seed study's two tables, recomputed from every run's predictions.

Every number in ``report.md`` and ``results.csv`` comes from the runs' ``predictions.csv`` (not
from cached metrics), so the report can be audited and regenerated with ``lesionssl report``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lesionssl.data.classes import CLASS_NAMES
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.metrics import metrics_from_predictions
from lesionssl.io import atomic_write, write_text
from lesionssl.report.statistics import pairwise_table, summarize

RESULT_COLUMNS = ["init", "seed", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "run_dir"]
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
PAIRWISE_METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "macro_auroc")


def collect_runs(out: Path) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """Finished runs under ``out/runs``: one results row each, plus full metrics per init."""
    rows, per_init = [], {}
    for metrics_file in sorted((out / "runs").glob("*/*/metrics.json")):
        run = metrics_file.parent
        recorded = json.loads(metrics_file.read_text())
        metrics = metrics_from_predictions(run / "predictions.csv", recorded["classes"])
        init = run.parent.name
        rows.append({"init": init, "seed": recorded["seed"], **{k: metrics[k] for k in HEADLINE}, "macro_auroc": metrics["macro_auroc"], "run_dir": str(run.relative_to(out)), "lr": recorded.get("lr"), "pretraining_pool": recorded.get("pretraining_pool"), "handling": _handling(recorded)})
        per_init.setdefault(init, []).append(metrics)
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "macro_auroc", "lr", "pretraining_pool", "handling"]), per_init


def _handling(recorded: dict) -> str:
    """How a run dealt with class imbalance and prior shift, in words."""
    imbalance = recorded.get("imbalance", {})
    adjustment = recorded.get("logit_adjustment", {}).get("target", "none (training prior)")
    return f"sampling {imbalance.get('sampling', 'shuffle')}, loss weights {imbalance.get('loss_weights', 'none')}, logit adjustment {adjustment}"


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *lines])


def summary_table(results: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The seed's first table (mean accuracy, sample std, number of models), plus balanced metrics."""
    table = {"": ["Mean accuracy", "Standard deviation", "95% CI", "Mean balanced accuracy", "Std balanced accuracy", "Mean macro F1", "Number of models"]}
    for init in order:
        runs = results[results["init"] == init]
        accuracy = summarize(runs["accuracy"].to_numpy())
        lo, hi = accuracy["ci_low"], accuracy["ci_high"]
        table[init] = [
            _fmt(runs["accuracy"].mean(), 3),
            _fmt(runs["accuracy"].std(ddof=1)),
            f"[{_fmt(lo, 3)}, {_fmt(hi, 3)}]",
            _fmt(runs["balanced_accuracy"].mean(), 3),
            _fmt(runs["balanced_accuracy"].std(ddof=1)),
            _fmt(runs["macro_f1"].mean(), 3),
            str(len(runs)),
        ]
    return pd.DataFrame(table)


def metric_table(results: pd.DataFrame, order: list[str], metrics: tuple[str, ...]) -> pd.DataFrame:
    """Mean, sample std and 95% CI per initialisation for each metric."""
    rows = []
    for metric in metrics:
        for init in order:
            summary = summarize(results.loc[results["init"] == init, metric].dropna().to_numpy(float))
            rows.append({"metric": metric, "init": init, "n": summary["n"], "mean": _fmt(summary["mean"]), "std": _fmt(summary["std"]), "95% CI": f"[{_fmt(summary['ci_low'])}, {_fmt(summary['ci_high'])}]"})
    return pd.DataFrame(rows)


def _pairwise_markdown(results: pd.DataFrame, order: list[str]) -> str:
    table = pairwise_table(results, order, PAIRWISE_METRICS)
    if table.empty:
        return "Only one initialisation: nothing to compare."
    shown = pd.DataFrame({
        "comparison": table["comparison"], "metric": table["metric"], "difference": table["difference"].map(_fmt),
        "95% CI (Welch)": [f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]" for r in table.to_dict("records")],
        "Welch p": table.get("welch_p", pd.Series(dtype=float)).map(lambda v: _fmt(v, 3)),
        "paired p (n)": [f"{_fmt(r.get('paired_p'), 3)} ({r['n_paired']})" for r in table.to_dict("records")],
        "Hedges g": table["hedges_g"].map(lambda v: _fmt(v, 2)), "note": table["note"],
    })
    return _markdown(shown)


def classification_report_table(per_init: dict[str, list[dict]], order: list[str]) -> pd.DataFrame:
    """The seed's second table: per-class F1 averaged over runs, support, weighted avg, accuracy."""
    classes = per_init[order[0]][0]["classes"]
    rows = []
    for name in classes:
        row = {"Lesion type": CLASS_NAMES.get(name, name)}
        for init in order:
            row[f"f1 ({init})"] = _fmt(np.mean([m["per_class"][name]["f1"] for m in per_init[init]]), 2)
        row["Support"] = per_init[order[0]][0]["per_class"][name]["support"]
        rows.append(row)
    for label, key in (("Weighted avg.", "weighted_f1"), ("Macro avg.", "macro_f1"), ("Accuracy", "accuracy"), ("Balanced accuracy", "balanced_accuracy")):
        row = {"Lesion type": label}
        for init in order:
            row[f"f1 ({init})"] = _fmt(np.mean([m[key] for m in per_init[init]]), 2)
        row["Support"] = per_init[order[0]][0]["n"]
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(out: Path, inits: dict[str, str] | None = None) -> Path:
    """Write ``results.csv`` and ``report.md`` for the finished runs under ``out``."""
    out = Path(out)
    results, per_init = collect_runs(out)
    if results.empty:
        raise LesionSSLError(f"no finished runs under {out / 'runs'}")
    order = [i for i in (inits or {}) if i in per_init] + sorted(set(per_init) - set(inits or {}))
    atomic_write(out / "results.csv", lambda tmp: results[RESULT_COLUMNS].to_csv(tmp, index=False))
    pools = results.dropna(subset=["pretraining_pool"]).groupby("init")["pretraining_pool"].first().to_dict()
    lines = [
        "# lesionssl comparison report",
        "",
        "Test-set results of every finished run, recomputed from the runs' `predictions.csv`. "
        "Nothing was selected on the test set: each run trains a fixed number of epochs and is evaluated once.",
        "",
        "## Model fine-tuning results",
        "",
        _markdown(summary_table(results, order)),
        "",
        "Standard deviation is the sample standard deviation (n - 1); the 95% CI is a t-interval of the mean.",
        "",
        "## Combined classification report (means over runs)",
        "",
        _markdown(classification_report_table(per_init, order)),
        "",
    ]
    lines += [
        "## Every metric with 95% confidence intervals",
        "",
        _markdown(metric_table(results, order, PAIRWISE_METRICS)),
        "",
        "## Pairwise comparisons",
        "",
        "Difference of means (first minus second) with Welch's 95% CI and t-test; paired t-test over the seeds both share; Hedges' g effect size.",
        "",
        _pairwise_markdown(results, order),
        "",
        "## Unlabelled data used for pretraining",
        "",
    ]
    for init in order:
        pool = pools.get(init)
        if pool in ("inductive", "transductive"):
            meaning = "test images were seen, without labels, during pretraining" if pool == "transductive" else "no test image was seen during pretraining"
            lines.append(f"- **{init}**: {pool} ({meaning}).")
        else:
            lines.append(f"- **{init}**: {pool or 'not pretrained by lesionssl'}.")
    lines += ["", "## Class imbalance and prior shift", ""]
    for init in order:
        for handling in sorted(set(results.loc[results["init"] == init, "handling"])):
            lines.append(f"- **{init}**: {handling}.")
    lines += ["", "## Runs", "", _markdown(results.assign(lr=results["lr"].map(lambda v: f"{v:.3g}"))[["init", "seed", "accuracy", "balanced_accuracy", "macro_f1", "lr", "run_dir"]].round(4)), ""]
    report = out / "report.md"
    write_text(report, "\n".join(lines))
    return report
