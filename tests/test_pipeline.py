"""The real chain on small data: pretrain -> finetune -> compare -> report."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score, f1_score

from lesionssl.config import CompareConfig, FinetuneConfig, PretrainConfig, validate
from lesionssl.data import datasets
from lesionssl.data.split import read_manifest
from lesionssl.errors import LesionSSLError
from lesionssl.experiment import finetune as finetune_run
from lesionssl.experiment.compare import compare
from lesionssl.pretraining.methods import build_method
from lesionssl.pretraining.run import pretrain
from lesionssl.report.compare import write_report

# timm's 2-layer test ResNet at 16 px and no trackers: the chain, not the backbone, is under test here.
NO_TRACKING = {"tensorboard": False, "mlflow": False}
TINY_PRETRAIN = {
    "backbone": "timm:test_resnet",
    "image_size": 16,
    "epochs": 1,
    "batch_size": 32,
    "projector": [64, 64],
    "lr": 1e-3,
    "projector_warmup_epochs": 1,
    "tracking": NO_TRACKING,
}
TINY_FINETUNE = {
    "backbone": "timm:test_resnet",
    "image_size": 16,
    "epochs": 1,
    "batch_size": 16,
    "lr": "find",
    "tracking": NO_TRACKING,
    "figures": False,
}


def check_report_against_predictions(out):
    """Every number of results.csv / report.md recomputed independently from predictions.csv."""
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns)[:7] == [
        "init",
        "seed",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "weighted_f1",
        "run_dir",
    ]
    for row in results.itertuples():
        predictions = pd.read_csv(out / row.run_dir / "predictions.csv", keep_default_na=False)
        probability_columns = [c for c in predictions.columns if c.startswith("p_")]
        argmax = predictions[probability_columns].to_numpy().argmax(axis=1)
        assert (predictions["prediction"] == [probability_columns[i][2:] for i in argmax]).all()
        assert row.accuracy == pytest.approx((predictions["label"] == predictions["prediction"]).mean())
        assert row.balanced_accuracy == pytest.approx(
            balanced_accuracy_score(predictions["label"], predictions["prediction"])
        )
        assert row.macro_f1 == pytest.approx(f1_score(predictions["label"], predictions["prediction"], average="macro"))
    report = (out / "report.md").read_text()
    main = results[results["protocol"] == "finetune"] if "finetune" in set(results["protocol"]) else results
    main = (
        main[main["budget"] == main["budget"].max()] if main["budget"].nunique() > 1 else main
    )  # the seed study's tables
    for _init, runs in main.groupby("init"):
        assert f"{runs['accuracy'].mean():.3f}" in report
        assert f"{runs['accuracy'].std(ddof=1):.4f}" in report
        assert f"{runs['balanced_accuracy'].mean():.3f}" in report
    return results


def test_pretrain_writes_backbone_history_and_provenance(synthetic_manifest, tmp_path):
    config = validate(
        PretrainConfig, {**TINY_PRETRAIN, "manifest": str(synthetic_manifest), "out": str(tmp_path / "bt")}
    )
    path = pretrain(config)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["pool"] == "inductive" and meta["architecture"] == "timm:test_resnet"
    assert meta["pool_images"] == len(read_manifest(synthetic_manifest).pretrain_rows())
    history = pd.read_csv(tmp_path / "bt" / "history.csv")
    assert list(history["stage"]) == ["warmup", "pretrain"] and np.isfinite(history["loss"]).all()
    assert (history["invariance"] > 0).all()
    written = (tmp_path / "bt" / "config.yaml").read_text()
    assert (
        "recipe: small-data" in written and "lambd: 0.0051" in written and "crop_scale:\n    - 0.25" in written
    )  # the recipe's settings, resolved
    seed = validate(PretrainConfig, {"recipe": "seed", "projector": [64, 64]})
    assert (
        build_method(seed).settings.lambd is None
        and build_method(seed).lambd == 1 / 64
        and seed.lr == "find"
        and seed.resolved_projector_warmup_epochs == 1
    )


def test_a_run_without_figures_keeps_its_csvs_its_card_and_its_folder(synthetic, tmp_path):
    """``figures: false`` leaves out the run's PNG/SVG figures, not what they are drawn from; the
    card links no missing image; the run's hash (its folder in compare) is that of a run with figures."""
    from lesionssl.config import config_hash

    from conftest import lesionssl

    assert (
        lesionssl(
            "split", "--data", synthetic / "labelled", "--per-class", 8, "--val", 6, "--out", tmp_path / "split.csv"
        ).returncode
        == 0
    )
    config = validate(
        FinetuneConfig,
        {
            **TINY_FINETUNE,
            "manifest": str(tmp_path / "split.csv"),
            "out": str(tmp_path / "ft"),
            "init": "random",
            "figures": False,
        },
    )
    finetune_run.finetune(config)
    out = tmp_path / "ft"
    assert not list(out.glob("*.png")) and not list(out.glob("*.svg"))
    assert (out / "lr_finder.csv").is_file() and (out / "schedule.csv").is_file() and (out / "metrics.json").is_file()
    card = (out / "MODEL_CARD.md").read_text()
    assert ".png" not in card and "Temperature" in card
    assert config_hash(config) == config_hash(config.model_copy(update={"figures": True}))


def test_recipes_set_their_keys_and_explicit_keys_win():
    default = validate(PretrainConfig, {})
    assert (default.recipe, default.optimizer, default.lr, build_method(default).lambd, default.augmentation) == (
        "small-data",
        "adam",
        1e-3,
        0.0051,
        "small-data",
    )
    assert default.resolved_projector_warmup_epochs == 0  # a fresh projector on random weights needs no warm-up
    assert validate(PretrainConfig, {"init": "some/backbone.safetensors"}).resolved_projector_warmup_epochs == 1
    official = validate(PretrainConfig, {"recipe": "official", "lambd": 0.01})
    assert (
        official.optimizer == "lars"
        and build_method(official).lambd == 0.01
        and build_method(official).settings.projector == [8192, 8192, 8192]
    )
    changed = validate(PretrainConfig, {"augment": {"crop_scale": [0.08, 1.0], "solarize_p": [0.0, 0.2]}})
    assert changed.augmentation_parameters.crop_scale == (0.08, 1.0) and changed.augmentation_parameters.solarize_p == (
        0.0,
        0.2,
    )
    assert changed.augmentation_parameters.rotate90_p == 0.75  # the rest of the preset is kept
    with pytest.raises(LesionSSLError, match="crop_scal"):
        validate(PretrainConfig, {"augment": {"crop_scal": [0.1, 1.0]}})


def test_test_split_is_never_read_before_training_ends(synthetic_manifest, tmp_path, monkeypatch):
    manifest = read_manifest(synthetic_manifest).table
    test_rows = set(np.flatnonzero(manifest["split"] == "test"))
    seen_during_training, training = set(), {"on": True}
    from lesionssl.finetuning import run as stage

    original_batch, original_predict = datasets.StoreBatches.__getitem__, stage.predict

    def spy_batch(self, positions):
        if training["on"]:
            seen_during_training.update(int(r) for r in self.rows[positions])
        return original_batch(self, positions)

    def spy_predict(*args, **kwargs):
        training["on"] = False
        return original_predict(*args, **kwargs)

    monkeypatch.setattr(datasets.StoreBatches, "__getitem__", spy_batch)
    monkeypatch.setattr(stage, "predict", spy_predict)
    config = validate(
        FinetuneConfig,
        {
            **TINY_FINETUNE,
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "ft"),
            "init": "random",
            "tta": 1,
            "figures": True,
        },
    )
    metrics = finetune_run.finetune(config)
    assert seen_during_training and not (seen_during_training & test_rows)
    assert metrics["test_images"] == len(test_rows)
    for name in (
        "metrics.json",
        "predictions.csv",
        "config.yaml",
        "lr_finder.png",
        "schedule.csv",
        "confusion.png",
        "history.csv",
    ):
        assert (tmp_path / "ft" / name).is_file(), name
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert set(saved["per_class"]["MEL"]) >= {"precision", "recall", "f1", "support"}
    assert saved["seed"] == 0 and saved["lr"] > 0
    assert "lr: " in (tmp_path / "ft" / "config.yaml").read_text()


@pytest.fixture(scope="module")
def compared(synthetic, tmp_path_factory):
    """A finished 2 initialisations x 2 seeds experiment (shared by the tests below)."""
    tmp_path = tmp_path_factory.mktemp("compare")
    values = {
        "data": [str(synthetic / "labelled"), str(synthetic / "unlabelled")],
        "split": {"per_class": 8, "seed": 0},
        "out": str(tmp_path / "cmp"),
        "initialisations": [{"name": "random", "init": "random"}, {"name": "bt", "init": "pretrain"}],
        "seeds": [0, 1],
        "pretrain": TINY_PRETRAIN,
        "finetune": {**TINY_FINETUNE, "tracking": {}, "figures": True},  # the trackers and figures are asserted below
    }
    config = validate(CompareConfig, values)
    compare(config)
    return config, tmp_path / "cmp"


def test_compare_resumes_and_report_matches_predictions(compared):
    config, out = compared
    results = check_report_against_predictions(out)
    assert sorted(zip(results["init"], results["seed"])) == [("bt", 0), ("bt", 1), ("random", 0), ("random", 1)]
    assert "inductive" in (out / "report.md").read_text()
    assert all(list((out / r / "tensorboard").glob("events.out.tfevents.*")) for r in results["run_dir"])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cmp"])
    assert len(runs) >= 5 and runs["metrics.test_balanced_accuracy"].notna().sum() == 4  # 4 fine-tunes + pretraining

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

    # a finished run left by an earlier configuration is named in the report, not merged
    shutil.copytree(out / results["run_dir"].iloc[0], out / "runs" / "random" / "seed0-0000000000")
    write_report(out)
    assert len(pd.read_csv(out / "results.csv")) == 4
    assert "seed0-0000000000" in (out / "report.md").read_text()
    shutil.rmtree(out / "runs" / "random" / "seed0-0000000000")


def test_report_is_fit_for_a_paper(compared):
    """Bootstrap intervals inside [0, 1], per-class sensitivity and specificity with melanoma first,
    ROC curves, SVG + 300-dpi figures, a methods paragraph from the configuration, and an
    experiment.yaml whose paths are where the outputs went."""
    import re
    from pathlib import Path

    import yaml
    from PIL import Image

    config, out = compared
    report = (out / "report.md").read_text()
    intervals = [
        (float(a), float(b))
        for a, b in re.findall(r"\[(-?\d+\.\d+), (-?\d+\.\d+)\]", report.split("## Pairwise comparisons")[0])
    ]
    assert intervals and all(0.0 <= a <= b <= 1.0 for a, b in intervals)
    sensitivity = report.split("## Sensitivity and specificity per class")[1].split("\n## ")[0]
    rows = [line for line in sensitivity.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| Melanoma") and "sensitivity (bt)" in rows[0] and "specificity (random)" in rows[0]
    methods = report.split("## Methods")[1].split("\n## ")[0]
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert "an LR finder (fastai's lr_find, its valley suggestion)" in methods  # this experiment's runs chose their LR
    assert (
        "2 seeds (0, 1)" in methods
        and f"{len(manifest)} images" in methods
        and f"{int(manifest['pretrain'].sum())} images formed the pretraining pool" in methods
    )
    for init in ("bt", "random"):
        assert (out / "figures" / f"roc_{init}.png").is_file() and (
            out / "figures" / f"roc_{init}.svg"
        ).read_text().lstrip().startswith("<?xml")
        assert f"figures/roc_{init}.png" in report
    width = Image.open(out / "figures" / "roc_bt.png").size[0]
    assert width >= 4.8 * 300 * 0.9  # 300 dpi
    experiment = yaml.safe_load((out / "experiment.yaml").read_text())
    assert Path(experiment["manifest"]) == out / "manifest.csv"
    assert (Path(experiment["pretrain"]["out"]) / "backbone.safetensors").is_file()
    assert list(Path(experiment["finetune"]["out"]).glob("*/*/metrics.json"))


def test_collapse_is_named_in_the_report():
    from lesionssl.report.compare import collapse_note

    healthy = pd.DataFrame({"effective_rank": [40.0, 90.0, 120.0]})
    collapsed = pd.DataFrame({"effective_rank": [179.0, 60.0, 6.0]})
    assert collapse_note(healthy) == "" and collapse_note(pd.DataFrame({"loss": [1.0]})) == ""
    assert "179" in collapse_note(collapsed) and "6.0" in collapse_note(collapsed)


def test_official_recipe_uses_lars_with_scaled_lrs(synthetic_manifest, tmp_path):
    config = validate(
        PretrainConfig,
        {
            **TINY_PRETRAIN,
            "recipe": "official",
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "bt"),
            "epochs": 2,
        },
    )
    pretrain(config)
    resolved = __import__("yaml").safe_load((tmp_path / "bt" / "config.yaml").read_text())["resolved"]
    assert resolved["optimizer"] == "LARS" and resolved["weight_decay"] == 1.5e-6
    assert resolved["lr_weights_scaled"] == pytest.approx(0.2 * 32 / 256) and resolved[
        "lr_biases_scaled"
    ] == pytest.approx(0.0048 * 32 / 256)
    assert resolved["projector_warmup_epochs"] == 0 and resolved["warmup_epochs"] == 1
    state = __import__("torch").load(tmp_path / "bt" / "checkpoints" / "last.ckpt", weights_only=True)
    groups = state["optimizer_states"][0]["param_groups"]
    assert [g["exclude"] for g in groups] == [False, True]


@pytest.mark.slow  # a browser
def test_report_html_is_self_contained_and_renders_in_chromium(compared, tmp_path):
    _, out = compared
    html = (out / "report.html").read_text()
    assert "<img" in html and 'src="data:image/png;base64,' in html and "http" not in html.split("<body>")[1]
    images = html.count("<img")
    assert images >= 5  # per-class F1, 2 confusion matrices, LR finder, pretraining, augmentations
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        (out / "report.html").as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    assert f'data-images-loaded="{images}"' in dom and f'data-images-total="{images}"' in dom
    assert "Model fine-tuning results" in dom


def test_budget_sweep_external_set_shards_and_jobs(synthetic, tmp_path):
    from lesionssl.data.synthetic import make_synthetic_dataset

    external = make_synthetic_dataset(tmp_path / "external", n_labelled=40, n_unlabelled=0, size=(40, 30), seed=9)
    values = {
        "data": [str(synthetic / "labelled")],
        "split": {"per_class": 8, "seed": 0},
        "budgets": [4, 8],
        "out": str(tmp_path / "sweep"),
        "initialisations": [{"name": "random", "init": "random"}],
        "seeds": [0, 1],
        "finetune": {
            **TINY_FINETUNE,
            "lr": 1e-3,
            "external": [{"name": "other-clinic", "data": [str(external / "labelled")]}],
            "adapt_bn": True,
        },
    }
    config = validate(CompareConfig, values)
    compare(config.model_copy(update={"shard": "1/2"}))
    assert len(list((tmp_path / "sweep" / "runs").glob("*/*/metrics.json"))) == 2
    compare(config.model_copy(update={"jobs": 2, "shard": "2/2"}))
    out = tmp_path / "sweep"
    results = pd.read_csv(out / "results.csv")
    assert sorted(zip(results["budget"], results["seed"])) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    test_sets = {
        (b, seed): set(pd.read_csv(out / f"manifest-b{b}-s{seed}.csv").query("split == 'test'")["image"])
        for b in (4, 8)
        for seed in (0, 1)
    }
    assert len({frozenset(s) for s in test_sets.values()}) == 1  # one test set for every budget and seed
    report = (out / "report.md").read_text()
    assert "Label efficiency" in report and (out / "figures" / "label_efficiency_finetune_test.png").is_file()
    assert "External test set: other-clinic" in report
    run = out / results["run_dir"][0]
    external_predictions = pd.read_csv(run / "external" / "other-clinic" / "predictions.csv")
    assert len(external_predictions) == 40
    # the same model with the clinic's own BatchNorm statistics (AdaBN), reported as a set of its own
    adapted = pd.read_csv(run / "external" / "other-clinic-adabn" / "predictions.csv")
    columns = [c for c in adapted.columns if c.startswith("p_")]
    assert adapted["image"].tolist() == external_predictions["image"].tolist()
    assert not np.allclose(adapted[columns], external_predictions[columns])
    assert results["other-clinic-adabn:balanced_accuracy"].between(0, 1).all()
    assert "External test set: other-clinic-adabn" in report
    assert "BatchNorm statistics re-estimated on that set's images (AdaBN" in report.replace("\n", " ")
    environment = json.loads((run / "environment.json").read_text())
    assert environment["seeds"]["run"] in (0, 1) and environment["packages"]["torch"]


def _three_sites(synthetic, path):
    """The labelled synthetic images as a CSV source whose ``site`` column deals them to A, B and C."""
    files = sorted((synthetic / "labelled").rglob("*.png"))
    sites = pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "label": [f.parent.name for f in files],
            "site": [["A", "B", "C"][i % 3] for i in range(len(files))],
        }
    )
    sites.to_csv(path, index=False)
    return sites


def test_study_protocols_held_out_site_budgets_and_labels_saved(synthetic, tmp_path):
    """The evidence design end to end on the synthetic set: test_fraction split with a held-out
    site, three protocols, nested budgets per seed, paired tables and labels saved."""
    sites = _three_sites(synthetic, tmp_path / "sites.csv")
    values = {
        "data": [str(tmp_path / "sites.csv"), str(synthetic / "unlabelled")],
        "split": {"test_fraction": 0.3, "per_class": 4, "val": 2, "hold_out": {"site": ["C"]}, "seed": 0},
        "out": str(tmp_path / "study"),
        "initialisations": [{"name": "random", "init": "random"}, {"name": "bt", "init": "pretrain"}],
        "seeds": [0, 1],
        "budgets": [2, 4],
        "protocols": ["linear", "knn", "finetune"],
        "pretrain": TINY_PRETRAIN,
        "finetune": {**TINY_FINETUNE, "lr": 1e-3, "figures": True},  # the report shows a run's examples
    }
    compare(validate(CompareConfig, values))
    out = tmp_path / "study"
    results = check_report_against_predictions(out)
    assert sorted(results.groupby(["protocol", "init"]).size().items()) == [
        ((p, i), 4) for p in ("finetune", "knn", "linear") for i in ("bt", "random")
    ]
    manifest = read_manifest(out / "manifest.csv").table
    held_out = set(sites.loc[sites["site"] == "C", "path"])
    assert set(manifest.loc[manifest["split"] == "external", "path"]) == held_out
    assert not manifest.loc[manifest["path"].isin(held_out), "pretrain"].any()
    pool = json.loads((out / "pretrain" / "backbone.json").read_text())["pool_images"]
    assert pool == int(manifest["pretrain"].sum())
    for run in results["run_dir"]:  # every protocol evaluates the held-out site once
        assert len(pd.read_csv(out / run / "external" / "external" / "predictions.csv")) == len(held_out)
    linear = json.loads(
        (out / results.loc[results["protocol"] == "linear", "run_dir"].iloc[0] / "metrics.json").read_text()
    )
    assert linear["probe"]["C_selected_on"] == "val"
    # frozen-feature runs measure how far the site is from the internal test; fine-tuning runs do not
    frozen = results["protocol"].isin(["linear", "knn"])
    assert results.loc[frozen, "external:domain_auroc"].between(0, 1).all()
    assert results.loc[~frozen, "external:domain_auroc"].isna().all()
    report = (out / "report.md").read_text()
    assert "domain auroc (site vs internal test)" in report.lower()
    for heading in (
        "linear · test · 2 labels per class",
        "knn · external · 4 labels per class",
        "finetune · test · 4 labels per class",
        "Labels saved",
        "paired 95% CI",
    ):
        assert heading in report, heading
    saved = pd.read_csv(out / "labels_saved.csv")
    assert set(saved["protocol"]) == {"linear", "knn", "finetune"} and set(saved["test set"]) == {"test", "external"}
    assert (out / "figures" / "label_efficiency_knn_external.png").is_file()

    # calibration and operating point of the main protocol and budget, from every run's own record
    from lesionssl.report.compare import collect_runs, deployment_table

    main = [m for m in collect_runs(out)[1] if m["protocol"] == "finetune" and m["budget"] == 4]
    table = deployment_table(main, ["random", "bt"]).set_index("init")
    for init in ("random", "bt"):
        runs = [
            json.loads((out / r / "metrics.json").read_text())
            for r in results.query("protocol == 'finetune' and budget == 4 and init == @init")["run_dir"]
        ]
        assert table.loc[init, "runs"] == 2 == len(runs)
        assert table.loc[init, "ECE after"].startswith(
            f"{np.mean([r['calibration']['test']['ece_after'] for r in runs]):.3f} ["
        )
        assert table.loc[init, "external specificity"].startswith(
            f"{np.mean([r['external']['external']['operating_point']['specificity']['value'] for r in runs]):.3f}"
        )
        seed0 = results.query("protocol == 'finetune' and budget == 4 and init == @init and seed == 0")["run_dir"].iloc[
            0
        ]
        assert f"![{init}, seed 0 (the lowest seed, not a chosen run)" in report and f"({seed0}/examples.png)" in report
    assert "Using the model: calibration and operating point" in report
    assert "a fixed LR of 0.001 (no LR finder)" in report.split("## Methods")[1].split("\n## ")[0]
    assert all(
        (out / "figures" / f"reliability_{init}.png").is_file() and f"(figures/reliability_{init}.png)" in report
        for init in ("random", "bt")
    )


def test_new_site_arms_share_one_split_with_or_without_the_site_and_colour_constancy(synthetic, tmp_path):
    """The new-site design in one experiment: the site's pool half pretrains one arm and not the
    other (same split, same test), and an arm's own finetune keys decode its images with colour
    constancy, as its pretraining did."""
    _three_sites(synthetic, tmp_path / "sites.csv")
    cc = {"colour_constancy": "shades-of-gray"}
    values = {
        "data": [str(tmp_path / "sites.csv")],
        "split": {
            "test_fraction": 0.3,
            "per_class": 4,
            "val": 2,
            "hold_out": {"site": ["C"]},
            "hold_out_pool": 0.5,
            "seed": 0,
        },
        "out": str(tmp_path / "site"),
        "initialisations": [
            {"name": "source", "init": "pretrain", "pretrain": {"site_pool": "exclude"}},
            {"name": "with-site", "init": "pretrain"},
            {"name": "with-site-cc", "init": "pretrain", "pretrain": cc, "finetune": cc},
        ],
        "seeds": [0],
        "protocols": ["linear"],
        "pretrain": {**TINY_PRETRAIN, "batch_size": 8},
        "finetune": TINY_FINETUNE,
    }
    config = validate(CompareConfig, values)
    compare(config)
    out = tmp_path / "site"
    manifest = read_manifest(out / "manifest.csv").table
    site = int((manifest["split"] == "site-pool").sum())
    assert site > 0
    folders = {"source": "pretrain-source", "with-site": "pretrain", "with-site-cc": "pretrain-with-site-cc"}
    backbones = {name: json.loads((out / folder / "backbone.json").read_text()) for name, folder in folders.items()}
    assert (backbones["source"]["pool_images"], backbones["source"]["site_images"]) == (
        int(manifest["pretrain"].sum()) - site,
        0,
    )
    assert (backbones["with-site"]["pool_images"], backbones["with-site"]["site_images"]) == (
        int(manifest["pretrain"].sum()),
        site,
    )
    assert [b["colour_constancy"] for b in backbones.values()] == ["none", "none", "shades-of-gray"]
    pool = int(manifest["pretrain"].sum())
    results = pd.read_csv(out / "results.csv")
    decoded = {
        row.init: yaml.safe_load((out / row.run_dir / "config.yaml").read_text())["colour_constancy"]
        for row in results.itertuples()
    }
    assert decoded == {"source": "none", "with-site": "none", "with-site-cc": "shades-of-gray"}
    assert len(set(results["run_dir"])) == 3  # an arm's own keys give its runs their own folders
    methods = (out / "report.md").read_text().split("## Methods")[1].split("\n## ")[0]
    assert (
        f"with-site: barlow_twins (recipe small-data) for 1 epochs at 16 px from random weights on {pool} images, {site} of them the held-out site's"
        in methods.replace("\n", " ")
    )
    assert "Runs with their own settings: with-site-cc (colour_constancy shades-of-gray)" in methods.replace("\n", " ")
    compare(config)  # a second call finds every pretraining finished with its own pool, and trains nothing
    assert pd.read_csv(out / "results.csv")["run_dir"].tolist() == results["run_dir"].tolist()
    # an arm pretrained on colour-corrected images is never fine-tuned on uncorrected ones
    values["initialisations"][2] = {"name": "with-site-cc", "init": "pretrain", "pretrain": cc}
    with pytest.raises(
        LesionSSLError, match="pretrained with colour constancy shades-of-gray but fine-tuned with none"
    ):
        validate(CompareConfig, values)
    # keys compare sets itself in every run or pretraining are not an initialisation's to change
    values["initialisations"][2] = {"name": "with-site-cc", "init": "pretrain", "finetune": {"seed": 3, "init": "x"}}
    with pytest.raises(LesionSSLError, match="compare sets init, seed of every finetune itself"):
        validate(CompareConfig, values)
