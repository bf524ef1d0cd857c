"""The comparison report from run folders alone (no training): partial experiments included."""

import json

import numpy as np
import pandas as pd

from lesionssl.evaluate.metrics import predictions_frame
from lesionssl.records import RunRecord
from lesionssl.report.compare import write_report

CLASSES = ["MEL", "NV", "BCC"]


def _run(out, name, protocol, budget, seed, skill):
    """A finished run whose predictions are right with probability ``skill``."""
    folder = out / "runs" / name / f"{protocol}-b{budget}-seed{seed}"
    folder.mkdir(parents=True)
    RunRecord(name=name, protocol=protocol, seed=seed, init="pretrain" if name == "ssl" else "random", budget=budget).write(folder)
    (folder / "metrics.json").write_text(json.dumps({"seed": seed, "classes": CLASSES, "protocol": protocol, "budget_per_class": budget}))
    rng = np.random.default_rng(seed * 100 + budget)
    labels = np.repeat(np.arange(3), 20)
    right = rng.random(len(labels)) < skill
    predicted = np.where(right, labels, (labels + 1) % 3)
    probs = np.full((len(labels), 3), 0.1)
    probs[np.arange(len(labels)), predicted] = 0.8
    predictions_frame([f"img{i}.jpg" for i in range(len(labels))], labels, probs, CLASSES).to_csv(folder / "predictions.csv", index=False)


def test_report_of_an_unfinished_experiment(tmp_path):
    """One initialisation has not reached the main protocol and budget yet: the report is still
    written, its main tables hold the initialisation that has, and the others' tables hold both."""
    out = tmp_path / "study"
    for seed in range(3):
        for budget in (10, 50):
            _run(out, "random", "linear", budget, seed, 0.5)
            _run(out, "ssl", "linear", budget, seed, 0.7)
            _run(out, "random", "finetune", budget, seed, 0.6)
    write_report(out)
    report = (out / "report.md").read_text()
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 18
    main = report[report.index("## Model fine-tuning results") : report.index("## Combined classification report")]
    assert "random" in main and "ssl" not in main
    finetune = report[report.index("#### finetune · test · 50 labels per class") : report.index("### Linear probe")]
    assert "ssl" not in finetune  # no empty rows for an initialisation without runs there
    linear = report[report.index("#### linear · test · 50 labels per class") :]
    assert "| ssl | 3 |" in linear and "ssl - random" in linear
