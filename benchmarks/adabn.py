"""Does AdaBN help on a held-out site? Each fine-tuned run of a compare experiment predicts the
manifest's ``external`` images twice, as trained and with ``predict --adapt-bn`` (BatchNorm
statistics re-estimated on those images), and the balanced accuracies are paired over runs.

    python benchmarks/adabn.py runs/shared-imagenet-probes --init imagenet --budget 25 [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
from scipy import stats

from lesionssl.data.split import read_manifest
from lesionssl.deploy.predict import predict_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--init", default="imagenet")
    parser.add_argument("--budget", type=int, default=25)
    parser.add_argument("--results", type=Path, help="a copy of the experiment's results.csv (default: its own)")
    args = parser.parse_args()
    results = pd.read_csv(args.results or args.experiment / "results.csv")
    runs = results[
        (results["init"] == args.init) & (results["protocol"] == "finetune") & (results["budget"] == args.budget)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs.itertuples():
            manifest = read_manifest(args.experiment / f"manifest-b{args.budget}-s{run.seed}.csv").table
            external = manifest[manifest["split"] == "external"][["path", "label"]]
            listing = Path(scratch) / "external.csv"
            external.to_csv(listing, index=False)
            scores = {}
            for adapt in (False, True):
                result = predict_images(
                    args.experiment / run.run_dir, [str(listing)], Path(scratch) / f"p-{adapt}.csv", adapt_bn=adapt
                )
                scores[adapt] = result.metrics["balanced_accuracy"]
            rows.append({"seed": run.seed, "as trained": scores[False], "AdaBN": scores[True]})
            print(json.dumps(rows[-1]))
    table = pd.DataFrame(rows)
    difference = table["AdaBN"] - table["as trained"]
    print(table.to_string(index=False))
    print(
        f"AdaBN - as trained: {difference.mean():+.3f} (sd {difference.std(ddof=1):.3f}), paired t-test p = {stats.ttest_rel(table['AdaBN'], table['as trained']).pvalue:.3f}, {len(table)} runs; as trained {table['as trained'].mean():.3f}, AdaBN {table['AdaBN'].mean():.3f}"
    )


if __name__ == "__main__":
    main()
