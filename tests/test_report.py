"""The comparison report from run folders alone (no training): partial experiments included."""

import numpy as np
import pandas as pd

from lesionssl.evaluate.metrics import compute_metrics, predictions_frame
from lesionssl.records import Metrics, RunRecord, RunResult
from lesionssl.report.compare import write_report

CLASSES = ["MEL", "NV", "BCC"]


def _run(out, name, protocol, budget, seed, skill, strategy=None):
    """A finished run whose predictions are right with probability ``skill``."""
    folder = out / "runs" / name / f"{protocol}-{strategy or ''}b{budget}-seed{seed}"
    folder.mkdir(parents=True)
    RunRecord(
        name=name,
        protocol=protocol,
        seed=seed,
        init="pretrain" if name == "ssl" else "random",
        budget=budget,
        strategy=strategy,
    ).write(folder)
    rng = np.random.default_rng(seed * 100 + budget)
    labels = np.repeat(np.arange(3), 20)
    right = rng.random(len(labels)) < skill
    predicted = np.where(right, labels, (labels + 1) % 3)
    probs = np.full((len(labels), 3), 0.1)
    probs[np.arange(len(labels)), predicted] = 0.8
    predictions_frame([f"img{i}.jpg" for i in range(len(labels))], labels, probs, CLASSES).to_csv(
        folder / "predictions.csv", index=False
    )
    RunResult(
        metrics=Metrics.from_dict(compute_metrics(labels, probs, CLASSES)),
        seed=seed,
        protocol=protocol,
        budget_per_class=budget,
    ).write(folder)


def test_report_of_an_unfinished_experiment(tmp_path):
    """One initialisation has not reached the main protocol and budget yet: the report is still
    written, its main tables hold the initialisation that has, and the others' tables hold both."""
    out = tmp_path / "study"
    for seed in range(3):
        for budget in (10, 50):
            _run(out, "random", "linear", budget, seed, 0.5)
            _run(out, "ssl", "linear", budget, seed, 0.7)
            _run(out, "random", "finetune", budget, seed, 0.6)
    # a pretraining still in its projector warm-up: no pretraining epoch to plot yet
    (out / "pretrain-ssl").mkdir()
    pd.DataFrame({"stage": ["start", "warmup"], "epoch": [0, 0], "knn_accuracy": [0.4, np.nan]}).to_csv(
        out / "pretrain-ssl" / "history.csv", index=False
    )
    write_report(out)
    report = (out / "report.md").read_text()
    assert "pretrain-ssl/ has not finished an epoch yet" in report
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 18
    main = report[report.index("## Model fine-tuning results") : report.index("## Combined classification report")]
    assert "random" in main and "ssl" not in main
    finetune = report[report.index("#### finetune · test · 50 labels per class") : report.index("### Linear probe")]
    assert "ssl" not in finetune  # no empty rows for an initialisation without runs there
    linear = report[report.index("#### linear · test · 50 labels per class") :]
    assert "| ssl | 3 |" in linear and "ssl - random" in linear


def test_selection_report_pairs_strategies_with_random_and_counts_classes_found(tmp_path):
    """Strategy arms are (initialisation, strategy); each strategy is paired with random selection
    over seeds on the same features, and the coverage table counts the revealed labels."""
    out = tmp_path / "selection-study"
    for seed in range(3):
        for budget in (6, 12):
            _run(out, "ssl", "linear", budget, seed, 0.8, "typiclust")
            _run(out, "ssl", "linear", budget, seed, 0.5, "random")
            for strategy, labels in (("typiclust", ["MEL", "NV", "BCC"]), ("random", ["NV", "NV", "MEL"])):
                folder = out / "selection" / "ssl" / strategy / f"seed{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(
                    {"image": [f"s{seed}-{i}.jpg" for i in range(budget)], "label": (labels * budget)[:budget]}
                ).to_csv(folder / f"b{budget}-labelled.csv", index=False)
    write_report(out)
    results = pd.read_csv(out / "results.csv").assign(strategy=lambda f: f["init"].str.split(" · ").str[1])
    assert set(results["init"]) == {"ssl · typiclust", "ssl · random"}
    report = (out / "report.md").read_text()
    section = report[report.index("## Label selection") :]
    assert "#### linear · test · 12 labels in total" in report and "Labels saved" not in report
    for budget in (6, 12):
        runs = results[results["budget"] == budget].pivot(index="seed", columns="strategy", values="balanced_accuracy")
        difference = (runs["typiclust"] - runs["random"]).mean()
        assert f"| ssl | typiclust | {budget} | {difference:.3f} |" in section
        assert difference > 0.1
    # typiclust found MEL, NV and BCC (3 classes); random found NV and MEL (2); 12 labels: 4 MEL under typiclust
    coverage = section[section.index("### Classes found by each strategy") :]
    assert "| ssl | typiclust | 12 | 4.0 | 4.0 | 4.0 | 3.0 |" in coverage
    assert "| ssl | random | 12 | 4.0 | 8.0 | 0.0 | 2.0 |" in coverage


def test_a_class_without_test_images_shows_n_a_and_is_named_not_recall_zero():
    """Once a class with no test images showed recall 0.000, and nothing said the macro averages
    left it out."""
    from lesionssl.deploy.card import _class_row
    from lesionssl.evaluate.metrics import compute_metrics, support_note, without_support
    from lesionssl.report.compare import classification_report_table, sensitivity_table

    classes = ["MEL", "NV", "DF"]
    labels = np.array([0, 0, 1, 1, 1])  # no DF in this test set
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    metrics = compute_metrics(labels, probs, classes)
    assert without_support(metrics["per_class"]) == ["DF"]
    assert support_note(metrics["per_class"]).startswith("DF has no images here: n/a")
    per_class = Metrics.from_dict(metrics).per_class
    assert _class_row("DF", per_class["DF"]) == "| DF | n/a | n/a | n/a | n/a | 0 |"
    assert "0.000" not in _class_row("DF", per_class["DF"]) and "| 0.500 |" in _class_row("MEL", per_class["MEL"])
    full = [{**metrics, "init": "imagenet"}, {**metrics, "init": "imagenet"}]
    report = classification_report_table(full, ["imagenet"]).set_index("Lesion type")
    assert report.loc["Dermatofibroma", "f1 (imagenet)"] == "n/a" and report.loc["Dermatofibroma", "Support"] == 0
    assert report.loc["Melanoma", "f1 (imagenet)"] != "n/a"
    sensitivity = sensitivity_table(full, ["imagenet"]).set_index("class")
    assert (
        sensitivity.loc["Dermatofibroma", "sensitivity (imagenet)"] == "n/a"
        and sensitivity.loc["Dermatofibroma", "specificity (imagenet)"] != "n/a"
    )


def test_a_test_set_only_some_runs_scored_is_viewed_on_those_runs():
    from lesionssl.report.compare import test_set_names, test_set_view

    results = pd.DataFrame(
        {
            "run_dir": ["linear", "finetune"],
            "protocol": ["linear", "finetune"],
            "balanced_accuracy": [0.4, 0.5],
            "site:balanced_accuracy": [0.2, 0.3],
            "site-adabn:balanced_accuracy": [np.nan, 0.25],  # AdaBN scores fine-tuned models only
        }
    )
    assert test_set_names(results) == ["test", "site", "site-adabn"]
    adapted = test_set_view(results, "site-adabn")
    assert adapted["run_dir"].tolist() == ["finetune"] and adapted["balanced_accuracy"].tolist() == [0.25]
    assert test_set_view(results, "site")["balanced_accuracy"].tolist() == [0.2, 0.3]
