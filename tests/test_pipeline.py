"""The real chain on small data: pretrain -> finetune -> compare -> report."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from lesionssl.config import CompareConfig, FinetuneConfig, PretrainConfig, validate
from lesionssl.data import datasets
from lesionssl.data.split import read_manifest
from lesionssl.experiment.compare import compare
from lesionssl.finetune import run as finetune_run
from lesionssl.pretrain.run import pretrain
from lesionssl.report.compare import write_report

TINY_PRETRAIN = {"image_size": 32, "epochs": 1, "batch_size": 32, "projector": [64, 64], "lr": 1e-3, "projector_warmup_epochs": 1}
TINY_FINETUNE = {"image_size": 32, "epochs": 1, "batch_size": 16}


def check_report_against_predictions(out):
    """Every number of results.csv / report.md recomputed independently from predictions.csv."""
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["init", "seed", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "run_dir"]
    for row in results.itertuples():
        predictions = pd.read_csv(out / row.run_dir / "predictions.csv", keep_default_na=False)
        probability_columns = [c for c in predictions.columns if c.startswith("p_")]
        argmax = predictions[probability_columns].to_numpy().argmax(axis=1)
        assert (predictions["prediction"] == [probability_columns[i][2:] for i in argmax]).all()
        assert row.accuracy == pytest.approx((predictions["label"] == predictions["prediction"]).mean())
        assert row.balanced_accuracy == pytest.approx(balanced_accuracy_score(predictions["label"], predictions["prediction"]))
        assert row.macro_f1 == pytest.approx(f1_score(predictions["label"], predictions["prediction"], average="macro"))
    report = (out / "report.md").read_text()
    for init, runs in results.groupby("init"):
        assert f"{runs['accuracy'].mean():.3f}" in report
        assert f"{runs['accuracy'].std(ddof=1):.4f}" in report
        assert f"{runs['balanced_accuracy'].mean():.3f}" in report
    return results


def test_pretrain_writes_backbone_history_and_provenance(synthetic_manifest, tmp_path):
    config = validate(PretrainConfig, {**TINY_PRETRAIN, "manifest": str(synthetic_manifest), "out": str(tmp_path / "bt")})
    path = pretrain(config)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["pool"] == "inductive" and meta["architecture"] == "resnet18"
    assert meta["pool_images"] == len(read_manifest(synthetic_manifest).pretrain_rows())
    history = pd.read_csv(tmp_path / "bt" / "history.csv")
    assert list(history["stage"]) == ["warmup", "bt"] and np.isfinite(history["loss"]).all()
    assert (history["invariance"] > 0).all()
    assert "lambd: null" in (tmp_path / "bt" / "config.yaml").read_text()
    assert "lambd: 0.015625" in (tmp_path / "bt" / "config.yaml").read_text()  # resolved 1/d


def test_test_split_is_never_read_before_training_ends(synthetic_manifest, tmp_path, monkeypatch):
    manifest = read_manifest(synthetic_manifest).table
    test_rows = set(np.flatnonzero(manifest["split"] == "test"))
    seen_during_training, training = set(), {"on": True}
    original_get, original_predict = datasets.LabelledDataset.__getitem__, finetune_run.predict

    def spy_get(self, index):
        if training["on"]:
            seen_during_training.add(int(self.rows[index]))
        return original_get(self, index)

    def spy_predict(*args, **kwargs):
        training["on"] = False
        return original_predict(*args, **kwargs)

    monkeypatch.setattr(datasets.LabelledDataset, "__getitem__", spy_get)
    monkeypatch.setattr(finetune_run, "predict", spy_predict)
    config = validate(FinetuneConfig, {**TINY_FINETUNE, "manifest": str(synthetic_manifest), "out": str(tmp_path / "ft"), "init": "random", "tta": 1})
    metrics = finetune_run.finetune(config)
    assert seen_during_training and not (seen_during_training & test_rows)
    assert metrics["test_images"] == len(test_rows)
    for name in ("metrics.json", "predictions.csv", "config.yaml", "lr_finder.png", "schedule.csv", "confusion.png", "history.csv"):
        assert (tmp_path / "ft" / name).is_file(), name
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert set(saved["per_class"]["MEL"]) >= {"precision", "recall", "f1", "support"}
    assert saved["seed"] == 0 and saved["lr"] > 0
    assert "lr: " in (tmp_path / "ft" / "config.yaml").read_text()


def test_compare_resumes_and_report_matches_predictions(synthetic, tmp_path):
    values = {
        "data": [str(synthetic / "labelled"), str(synthetic / "unlabelled")],
        "split": {"per_class": 8, "seed": 0},
        "out": str(tmp_path / "cmp"),
        "initialisations": [{"name": "random", "init": "random"}, {"name": "bt", "init": "pretrain"}],
        "seeds": [0, 1],
        "pretrain": TINY_PRETRAIN,
        "finetune": TINY_FINETUNE,
    }
    config = validate(CompareConfig, values)
    compare(config)
    out = tmp_path / "cmp"
    results = check_report_against_predictions(out)
    assert sorted(zip(results["init"], results["seed"])) == [("bt", 0), ("bt", 1), ("random", 0), ("random", 1)]
    assert "inductive" in (out / "report.md").read_text()

    # interrupted experiment: one run lost its results -> only that run is redone
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    lost = sorted(stamps)[0]
    lost.unlink()
    compare(config)
    for path, stamp in stamps.items():
        if path != lost:
            assert path.stat().st_mtime_ns == stamp
    assert lost.is_file()
    (out / "results.csv").unlink()
    write_report(out)
    check_report_against_predictions(out)


def test_official_recipe_uses_lars_with_scaled_lrs(synthetic_manifest, tmp_path):
    config = validate(PretrainConfig, {**TINY_PRETRAIN, "recipe": "official", "manifest": str(synthetic_manifest), "out": str(tmp_path / "bt"), "epochs": 2})
    pretrain(config)
    resolved = __import__("yaml").safe_load((tmp_path / "bt" / "config.yaml").read_text())["resolved"]
    assert resolved["optimizer"] == "LARS" and resolved["weight_decay"] == 1.5e-6
    assert resolved["lr_weights_scaled"] == pytest.approx(0.2 * 32 / 256) and resolved["lr_biases_scaled"] == pytest.approx(0.0048 * 32 / 256)
    assert resolved["projector_warmup_epochs"] == 0 and resolved["warmup_epochs"] == 1
    state = __import__("torch").load(tmp_path / "bt" / "checkpoints" / "last.ckpt", weights_only=True)
    groups = state["optimizer_states"][0]["param_groups"]
    assert [g["exclude"] for g in groups] == [False, True]
