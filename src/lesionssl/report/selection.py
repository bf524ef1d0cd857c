"""The label-selection section of the comparison report: scores by strategy and total labels,
each strategy against random selection paired over seeds, and which classes each strategy found.

Rare classes matter most to a clinic, so the coverage table counts, per class, the images each
strategy had labelled at each budget (mean over seeds), read from the simulated expert's files
(``selection/<initialisation>/<strategy>/seed<k>/b<budget>-labelled.csv``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from lesionssl.report.document import Document
from lesionssl.report.statistics import compare_pair

#: The classes a dermatology clinic sees least (ISIC 2019): listed first in the coverage table.
RARE_CLASSES = ("DF", "VASC", "AK")
BASELINE = "random"


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def coverage_frame(out: Path) -> pd.DataFrame:
    """One row per (initialisation, strategy, budget, seed): labelled images per class."""
    rows = []
    for file in sorted((Path(out) / "selection").glob("*/*/seed*/b*-labelled.csv")):
        seed_dir = file.parent
        counts = pd.read_csv(file, dtype=str, keep_default_na=False)["label"].value_counts()
        rows.append(
            {
                "initialisation": seed_dir.parent.parent.name,
                "strategy": seed_dir.parent.name,
                "seed": int(seed_dir.name.removeprefix("seed")),
                "budget": int(file.name.split("-")[0].removeprefix("b")),
                **counts.to_dict(),
            }
        )
    return pd.DataFrame(rows)


def coverage_table(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Mean labelled images per class (rare classes first) and the mean number of classes found."""
    ordered = [c for c in RARE_CLASSES if c in classes] + [c for c in classes if c not in RARE_CLASSES]
    frame = frame.reindex(columns=[*frame.columns, *[c for c in ordered if c not in frame]]).fillna(
        {c: 0 for c in ordered}
    )
    frame["classes found"] = (frame[ordered] > 0).sum(axis=1)
    table = (
        frame.groupby(["initialisation", "strategy", "budget"])[[*ordered, "classes found"]]
        .mean()
        .round(1)
        .reset_index()
    )
    return table.sort_values(["initialisation", "budget", "strategy"])


def selection_section(
    doc: Document,
    out: Path,
    results: pd.DataFrame,
    classes: list[str],
    interval: Callable[[pd.DataFrame, str, str], tuple[float, float]],
) -> None:
    """Scores per (protocol, test set, initialisation, strategy, total labels); differences to random; class coverage."""
    doc.heading("Label selection")
    doc.paragraph(
        "Each strategy picked the images to label on the features of the initialisation it is listed under, in rounds up to each total budget "
        "(earlier picks kept); the manifest's labels played the expert. Balanced accuracy, mean over seeds with its 95% bootstrap interval "
        "(seeds and test images resampled). The validation labels, the same for every strategy, are not counted in the budget."
    )
    frame = results.dropna(subset=["strategy"])
    test_sets = ["test", *sorted({c.split(":")[0] for c in frame.columns if ":" in c})]
    for protocol in sorted(set(frame["protocol"])):
        for test_set in test_sets:
            column = "balanced_accuracy" if test_set == "test" else f"{test_set}:balanced_accuracy"
            view = frame[frame["protocol"] == protocol].dropna(subset=[column])
            if view.empty:
                continue
            rows, differences = [], []
            for (initialisation, strategy), arm in view.groupby(["initialisation", "strategy"], sort=False):
                row = {"initialisation": initialisation, "strategy": strategy}
                for budget, runs in arm.groupby("budget"):
                    low, high = interval(runs, "balanced_accuracy", test_set)
                    row[f"{int(budget)} labels"] = f"{_fmt(runs[column].mean())} [{_fmt(low)}, {_fmt(high)}]"
                    baseline = view[
                        (view["initialisation"] == initialisation)
                        & (view["strategy"] == BASELINE)
                        & (view["budget"] == budget)
                    ]
                    if strategy != BASELINE and not baseline.empty:
                        c = compare_pair(
                            runs.rename(columns={column: "score"}), baseline.rename(columns={column: "score"}), "score"
                        )
                        differences.append(
                            {
                                "initialisation": initialisation,
                                "strategy": strategy,
                                "labels": int(budget),
                                "difference to random": _fmt(c.get("paired_difference", c["difference"])),
                                "paired 95% CI": f"[{_fmt(c.get('paired_ci_low', float('nan')))}, {_fmt(c.get('paired_ci_high', float('nan')))}]",
                                "paired p": _fmt(c.get("paired_p", float("nan")), 4),
                                "seeds": c["n_paired"],
                            }
                        )
                rows.append(row)
            doc.heading(f"{protocol} · {test_set}: balanced accuracy by total labels", 3)
            doc.table(pd.DataFrame(rows))
            if differences:
                doc.paragraph(
                    "Each strategy minus random selection on the same initialisation's features, paired over seeds (t-interval)."
                )
                doc.table(pd.DataFrame(differences))
    coverage = coverage_frame(out)
    if not coverage.empty:
        doc.heading("Classes found by each strategy", 3)
        doc.paragraph(
            f"Labelled images per class at each total budget, mean over seeds; the rare classes ({', '.join(RARE_CLASSES)}) first. 'classes found': classes with at least one labelled image."
        )
        doc.table(coverage_table(coverage, classes))
