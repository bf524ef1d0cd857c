"""The tables of EVIDENCE.md's ImageNet section, from a ``compare`` experiment's results.csv:
balanced accuracy (mean ± sd over seeds) per protocol, test set, budget and initialisation, with
each initialisation's difference to ``imagenet`` paired over seeds (paired t-test).

    python benchmarks/imagenet_tables.py runs/shared-imagenet-probes/results.csv
    python benchmarks/imagenet_tables.py runs/shared-new-site/results.csv --inits imagenet,imagenet-cc,source,source-cc,site,site-cc \\
        --contrasts site:source,site-cc:source-cc,site-cc:site,source-cc:source,site-cc:imagenet-cc

Every external set a run recorded (``<name>:balanced_accuracy``, AdaBN's ``<name>-adabn`` too)
gets its own tables.
"""

from __future__ import annotations

import argparse

import pandas as pd
from scipy import stats

from lesionssl.evaluate.adabn import ADABN_SUFFIX

TEST_SETS = {"internal test": "balanced_accuracy", "external (ISIC 2017)": "external:balanced_accuracy"}
#: Initialisations shown by default, in this order, when the results hold them.
DEFAULT_INITS = ("random", "imagenet", "imagenet-barlow-twins", "c-epoch-6", "imagenet-bt-continue")


def test_sets(results: pd.DataFrame) -> dict[str, str]:
    """The internal test and every external set the runs recorded: title -> balanced-accuracy column."""
    named = {v: k for k, v in TEST_SETS.items()}
    columns = ["balanced_accuracy"] + [c for c in results.columns if c.endswith(":balanced_accuracy")]
    return {named.get(c, c.split(":")[0]): c for c in columns if results[c].notna().any()}


#: The continuations compared against steps and LR, in the order of the steps table.
CONTINUATIONS = {
    "imagenet": "ImageNet (0 steps)",
    "imagenet-bt-1-epoch": "+BT 81 steps, LR 1e-4",
    "imagenet-barlow-twins": "+BT 162 steps, LR 1e-4",
    "imagenet-bt-lr-1e-5": "+BT 162 steps, LR 1e-5",
    # the recipe search: a 1-epoch projector warm-up, then 6 epochs of 1cycle at LR 1e-3 with the encoder at 1e-4 (x0.1)
    **{f"c-epoch-{e}": f"+BT frozen BN, L2-SP 100: epoch {e} of 6 ({81 * e} steps)" for e in (2, 4, 6)},
    **{f"d-epoch-{e}": f"+BT frozen BN: epoch {e} of 6 ({81 * e} steps)" for e in (2, 4, 6)},
    "imagenet-bt-continue": "+BT recipe continue (frozen BN, L2-SP 100), 486 steps",
}


def _scores(results: pd.DataFrame, init: str, protocol: str, budget: int, column: str) -> pd.Series:
    rows = results[(results["init"] == init) & (results["protocol"] == protocol) & (results["budget"] == budget)]
    return rows.set_index("seed")[column]


def _paired(
    results: pd.DataFrame, init: str, protocol: str, budget: int, column: str, against: str = "imagenet"
) -> str:
    ours, base = (
        _scores(results, init, protocol, budget, column),
        _scores(results, against, protocol, budget, column),
    )
    seeds = ours.index.intersection(base.index)
    return f"{(ours[seeds] - base[seeds]).mean():+.3f} ({stats.ttest_rel(ours[seeds], base[seeds]).pvalue:.3f})"


def budget_tables(results: pd.DataFrame, inits: list[str]) -> str:
    lines = []
    others = [i for i in inits if i != "imagenet"]
    seeds = results["seed"].nunique()
    for protocol in [p for p in ("linear", "knn", "finetune") if p in set(results["protocol"])]:
        for test_set, column in test_sets(results[results["protocol"] == protocol]).items():
            lines += ["", f"**{protocol} · {test_set}** (balanced accuracy, mean ± sd over {seeds} seeds)", ""]
            present = [i for i in inits if ((results["init"] == i) & (results["protocol"] == protocol)).any()]
            if "imagenet" not in present or len(present) < 2:
                lines = lines[:-3]
                continue
            lines.append(
                "| labels per class | "
                + " | ".join(inits)
                + " | "
                + " | ".join(f"{i} - imagenet (paired p)" for i in others)
                + " |"
            )
            lines.append("|" + "---|" * (1 + len(inits) + len(others)))
            for budget in sorted(results["budget"].unique()):
                cells = [
                    f"{s.mean():.3f} ± {s.std(ddof=1):.3f}"
                    for s in (_scores(results, i, protocol, budget, column) for i in inits)
                ]
                lines.append(
                    f"| {budget} | "
                    + " | ".join(cells + [_paired(results, i, protocol, budget, column) for i in others])
                    + " |"
                )
    return "\n".join(lines)


def adabn_tables(results: pd.DataFrame, inits: list[str]) -> str:
    """Per external set scored both ways: AdaBN minus as trained, paired over the same models."""
    lines = []
    runs = results[results["protocol"] == "finetune"]
    for adapted in [c for c in runs.columns if c.endswith(f"{ADABN_SUFFIX}:balanced_accuracy")]:
        plain = adapted.replace(ADABN_SUFFIX, "")
        present = [i for i in inits if runs.loc[runs["init"] == i, adapted].notna().any()]
        if not present or plain not in runs:
            continue
        name = plain.split(":")[0]
        lines += [
            "",
            f"**finetune · {name}: AdaBN against as trained** (balanced accuracy, mean over the same models; AdaBN - as trained, paired p)",
            "",
            "| labels per class | " + " | ".join(present) + " |",
            "|" + "---|" * (1 + len(present)),
        ]
        for budget in sorted(runs["budget"].unique()):
            cells = []
            for init in present:
                both = runs[(runs["init"] == init) & (runs["budget"] == budget)][[plain, adapted]].dropna()
                cells.append(
                    f"{both[plain].mean():.3f} -> {both[adapted].mean():.3f}: {(both[adapted] - both[plain]).mean():+.3f} ({stats.ttest_rel(both[adapted], both[plain]).pvalue:.3f})"
                    if len(both) > 1
                    else ""
                )
            lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contrast_tables(results: pd.DataFrame, contrasts: list[tuple[str, str]]) -> str:
    """Differences between two arms other than ImageNet, paired over seeds: ``a - b (p)`` per budget."""
    budgets = sorted(results["budget"].unique())
    lines = []
    for protocol in [p for p in ("linear", "knn", "finetune") if p in set(results["protocol"])]:
        for test_set, column in test_sets(results[results["protocol"] == protocol]).items():
            lines += [
                "",
                f"**{protocol} · {test_set}: paired differences between arms** (balanced accuracy, p)",
                "",
                "| contrast | " + " | ".join(f"{b} labels per class" for b in budgets) + " |",
                "|" + "---|" * (1 + len(budgets)),
            ]
            for a, b in contrasts:
                cells = [_paired(results, a, protocol, budget, column, against=b) for budget in budgets]
                lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_tables(results: pd.DataFrame, budget: int = 25) -> str:
    lines = []
    arms = [a for a in CONTINUATIONS if a in set(results["init"])]
    for protocol in [p for p in ("linear", "knn", "finetune") if p in set(results["protocol"])]:
        lines += [
            "",
            f"**{protocol}**: balanced accuracy at {budget} labels per class (mean ± sd over 5 seeds; difference to ImageNet paired over seeds, p)",
            "",
        ]
        lines += [
            "| initialisation | internal test | - ImageNet (p) | external (ISIC 2017) | - ImageNet (p) |",
            "|---|---|---|---|---|",
        ]
        for init in arms:
            cells = []
            for column in TEST_SETS.values():
                scores = _scores(results, init, protocol, budget, column)
                cells += [
                    f"{scores.mean():.3f} ± {scores.std(ddof=1):.3f}",
                    "" if init == "imagenet" else _paired(results, init, protocol, budget, column),
                ]
            lines.append(f"| {CONTINUATIONS[init]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--inits", help="comma-separated initialisations, in table order (default: the known ones)")
    parser.add_argument(
        "--contrasts", help="comma-separated pairs a:b of initialisations, each reported as a - b paired over seeds"
    )
    args = parser.parse_args()
    results = pd.read_csv(args.results)
    inits = args.inits.split(",") if args.inits else [i for i in DEFAULT_INITS if i in set(results["init"])]
    if results["budget"].nunique() > 1:
        print(budget_tables(results, inits))
        print(adabn_tables(results, inits))
    if args.contrasts:
        print(contrast_tables(results, [tuple(pair.split(":")) for pair in args.contrasts.split(",")]))
    if (set(CONTINUATIONS) - {"imagenet"}) & set(results["init"]):
        print(steps_tables(results))


if __name__ == "__main__":
    main()
