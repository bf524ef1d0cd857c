"""Label selection: the strategies on features with known clusters, ``select``, ``split --labels``,
and compare's simulated selection study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lesionssl.config import CompareConfig, SelectConfig, validate
from lesionssl.data.split import read_manifest
from lesionssl.experiment.compare import compare
from lesionssl.selection.select import select
from lesionssl.selection.strategies import STRATEGIES, Pool, kcenter, probcover, purity_delta, typiclust

from conftest import lesionssl

TINY_FINETUNE = {"image_size": 32, "epochs": 1, "batch_size": 16, "lr": 1e-3}


def clustered(
    n_clusters: int = 6, per_cluster: int = 40, outliers: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Dense, well separated Gaussian clusters (one axis each) plus sparse outliers (cluster -1)
    scattered over the other axes."""
    rng = np.random.default_rng(seed)
    centres = np.eye(32)[:n_clusters] * 3
    scattered = (
        np.concatenate([np.zeros((outliers, n_clusters)), rng.normal(size=(outliers, 32 - n_clusters))], axis=1) * 3
    )
    features = np.concatenate([c + rng.normal(size=(per_cluster, 32)) * 0.3 for c in centres] + [scattered])
    truth = np.r_[np.repeat(np.arange(n_clusters), per_cluster), np.full(outliers, -1)]
    return features, truth


def open_pool(features: np.ndarray, groups: np.ndarray | None = None, labelled: np.ndarray | None = None) -> Pool:
    n = len(features)
    return Pool(
        features,
        np.ones(n, bool),
        np.zeros(n, bool) if labelled is None else labelled,
        np.arange(n).astype(str) if groups is None else groups,
    )


@pytest.mark.parametrize("strategy", ["typiclust", "probcover"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_typical_strategies_take_every_dense_cluster_before_a_second_image_of_any(strategy, seed):
    features, truth = clustered(seed=seed)
    options = {"clusters": 6} if strategy == "probcover" else {}
    picked = truth[STRATEGIES[strategy](open_pool(features), 12, seed, **options).picked]
    assert sorted(picked[:6]) == list(range(6))  # one image of each dense cluster first, no outlier
    assert len(picked) == 12 and len(set(STRATEGIES[strategy](open_pool(features), 12, seed, **options).picked)) == 12


def test_typiclust_picks_the_most_typical_image_of_a_cluster():
    features, truth = clustered(n_clusters=1, per_cluster=60, outliers=0)
    first = typiclust(open_pool(features), 1, 0).picked[0]
    centre = features.mean(axis=0)
    distances = np.linalg.norm(features - centre, axis=1)
    assert distances[first] <= np.quantile(distances, 0.1)  # near the dense core, not on the rim


def test_probcover_delta_keeps_balls_pure_and_grows_with_separation():
    tight, _ = clustered(seed=3)
    delta = purity_delta(
        Pool(tight, np.ones(len(tight), bool), np.zeros(len(tight), bool), np.arange(len(tight)).astype(str)).features,
        6,
        0,
    )
    assert 0.05 <= delta < 1.41
    selection = probcover(open_pool(tight), 6, 0, clusters=6)
    assert selection.settings["delta"] == delta
    assert selection.scores == sorted(selection.scores, reverse=True)  # greedy: each ball covers no more than the last


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kcenter_radius_never_increases(seed):
    features = np.random.default_rng(seed).normal(size=(300, 16))
    labelled = np.zeros(300, bool)
    labelled[:3] = True
    for pool in (open_pool(features), open_pool(features, labelled=labelled)):
        radii = kcenter(pool, 40, seed).scores
        finite = [r for r in radii if np.isfinite(r)]
        assert len(finite) >= 39 and all(b <= a + 1e-6 for a, b in zip(finite, finite[1:]))


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_no_labelled_image_or_second_image_of_a_group_is_picked_and_a_seed_repeats(strategy):
    features, _ = clustered()
    n = len(features)
    groups = (np.arange(n) // 3).astype(str)  # lesions of three images each
    labelled = np.zeros(n, bool)
    labelled[[0, 40, 80]] = True
    candidates = np.ones(n, bool)
    candidates[200:] = False  # e.g. validation or test images
    pool = Pool(features, candidates, labelled, groups)
    options = {"clusters": 6} if strategy == "probcover" else {}
    picked = STRATEGIES[strategy](pool, 30, 5, **options).picked
    assert len(picked) == 30 and picked == STRATEGIES[strategy](pool, 30, 5, **options).picked
    assert all(i < 200 for i in picked)
    assert not set(groups[picked]) & set(groups[labelled])
    assert len(set(groups[picked])) == len(picked)


@pytest.fixture(scope="module")
def pool_manifest(synthetic, tmp_path_factory):
    """A test_fraction split of the synthetic set: labelled train, val, test, a held-out site
    (external) and an unlabelled pool."""
    folder = tmp_path_factory.mktemp("select")
    files = sorted((synthetic / "labelled").rglob("*.png"))
    sites = pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "label": [f.parent.name for f in files],
            "site": [["A", "B", "C"][i % 3] for i in range(len(files))],
        }
    )
    sites.to_csv(folder / "sites.csv", index=False)
    result = lesionssl(
        "split",
        "--data",
        folder / "sites.csv",
        "--data",
        synthetic / "unlabelled",
        "--test-fraction",
        0.3,
        "--per-class",
        3,
        "--val",
        2,
        "--hold-out",
        "site=C",
        "--out",
        folder / "split.csv",
    )
    assert result.returncode == 0, result.stderr
    return folder / "split.csv"


def test_select_writes_a_csv_to_fill_and_a_page_and_split_labels_reads_it_back(pool_manifest, tmp_path):
    manifest = read_manifest(pool_manifest).table.set_index("image")
    out = tmp_path / "to_label.csv"
    result = lesionssl(
        "select", "--manifest", pool_manifest, "--budget", 10, "--strategy", "kcenter", "--image-size", 32, "--out", out
    )
    assert result.returncode == 0, result.stderr
    request = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(request["order"]) == [str(i) for i in range(1, 11)] and set(request["label"]) == {""}
    assert set(manifest.loc[request["image"], "split"]) == {"unlabelled"}
    assert request["group"].is_unique
    page = out.with_suffix(".html").read_text()
    assert page.count('<img src="data:image/jpeg;base64,') == 10 and all(name in page for name in request["image"])
    assert "download the filled-in CSV" in page
    record = json.loads(out.with_suffix(".json").read_text())
    assert (
        record["strategy"] == "kcenter"
        and record["picked"] == 10
        and record["manifest"] == str(pool_manifest.resolve())
    )
    assert (pool_manifest.parent / "features").is_dir()  # cached beside the manifest, where compare's probes look

    # the expert labels seven, leaves three blank; the next manifest trains on them
    classes = read_manifest(pool_manifest).classes
    request.loc[:6, "label"] = [classes[i % len(classes)] for i in range(7)]
    request.to_csv(out, index=False)
    nxt = lesionssl("split", "--labels", out, "--out", tmp_path / "next.csv")
    assert nxt.returncode == 0, nxt.stderr
    assert "7 labels added to the training set; 3 rows had no label" in nxt.stderr
    after = read_manifest(tmp_path / "next.csv").table.set_index("image")
    filled = request.iloc[:7]
    assert (after.loc[filled["image"], "split"] == "train").all() and list(after.loc[filled["image"], "label"]) == list(
        filled["label"]
    )
    assert (after.loc[request["image"].iloc[7:], "split"] == "unlabelled").all()
    before_train = set(manifest.index[manifest["split"] == "train"])
    assert set(after.index[after["split"] == "train"]) == before_train | set(filled["image"])
    assert (
        after.loc[after["split"] != "train", "split"] == manifest.loc[after.index[after["split"] != "train"], "split"]
    ).all()

    # the next round leaves out what was sent before, and no image of its lesions
    second = select(
        SelectConfig(
            manifest=tmp_path / "next.csv",
            budget=10,
            strategy="typiclust",
            image_size=32,
            exclude=[out],
            out=tmp_path / "second.csv",
        )
    )
    assert not set(second.table["image"]) & set(request["image"])
    assert not set(second.table["group"]) & set(request["group"])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_no_test_external_validation_or_labelled_image_is_selected(pool_manifest, tmp_path, strategy):
    table = read_manifest(pool_manifest).table.set_index("image")
    assert {"test", "external", "val", "train"} <= set(table["split"])
    labelled = table.index[table["split"] == "unlabelled"][:5]
    pd.DataFrame({"image": labelled}).to_csv(tmp_path / "done.csv", index=False)
    request = select(
        SelectConfig(
            manifest=pool_manifest,
            budget=200,
            strategy=strategy,
            image_size=32,
            exclude=[tmp_path / "done.csv"],
            out=tmp_path / "all.csv",
        )
    )
    picked = table.loc[request.table["image"]]
    assert set(picked["split"]) == {"unlabelled"}  # never test, external, validation or training images
    assert not set(request.table["image"]) & set(labelled)
    assert (
        len(request.table) == request.candidates == int((table["split"] == "unlabelled").sum()) - 5
    )  # the budget exceeds the pool: every candidate once


def test_select_is_deterministic_for_a_seed(pool_manifest, tmp_path):
    picks = [
        select(
            SelectConfig(
                manifest=pool_manifest,
                budget=8,
                strategy=s,
                image_size=32,
                seed=seed,
                out=tmp_path / f"{s}{seed}{k}.csv",
            )
        )
        .table["image"]
        .tolist()
        for s in ("typiclust", "probcover")
        for seed in (0, 1)
        for k in (0, 1)
    ]
    assert picks[0] == picks[1] and picks[2] == picks[3] and picks[4] == picks[5] and picks[6] == picks[7]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--budget", 5, "--backbone", "runs/bt/backbone.safetensors"],
            "weights go in init: --init runs/bt/backbone.safetensors",
        ),
        (["--budget", 0], "budget"),
        (["--budget", 5, "--strategy", "typiclst"], "strategy"),
        (["--budget", 5, "--exclude", "missing.csv"], "--exclude missing.csv: no such file"),
    ],
)
def test_select_refuses_bad_input_in_one_line(pool_manifest, tmp_path, args, message):
    result = lesionssl(
        "select", "--manifest", pool_manifest, "--image-size", 32, "--out", tmp_path / "x.csv", *args, cwd=tmp_path
    )
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_split_labels_refuses_test_images_and_unknown_classes(pool_manifest, tmp_path):
    table = read_manifest(pool_manifest).table
    test_image = table.loc[table["split"] == "test", "image"].iloc[0]
    pool_image = table.loc[table["split"] == "unlabelled", "image"].iloc[0]
    for rows, message in (
        ([(test_image, "MEL")], "is a test image"),
        ([(pool_image, "melanoma")], "unknown label(s) ['melanoma']"),
        ([("nope.png", "MEL")], "not in"),
    ):
        pd.DataFrame(rows, columns=["image", "label"]).to_csv(tmp_path / "filled.csv", index=False)
        result = lesionssl(
            "split", "--labels", tmp_path / "filled.csv", "--manifest", pool_manifest, "--out", tmp_path / "next.csv"
        )
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "next.csv").exists()


def test_compare_runs_a_simulated_selection_study(synthetic, tmp_path):
    values = {
        "data": [str(synthetic / "labelled"), str(synthetic / "unlabelled")],
        "split": {"test_fraction": 0.3, "per_class": 3, "val": 2, "seed": 0},
        "out": str(tmp_path / "study"),
        "initialisations": [{"name": "random", "init": "random"}],
        "seeds": [0, 1],
        "selection": {"strategies": ["typiclust", "random"], "budgets": [6, 12]},
        "protocols": ["linear", "finetune"],
        "finetune": TINY_FINETUNE,
    }
    compare(validate(CompareConfig, values))
    out = tmp_path / "study"
    results = pd.read_csv(out / "results.csv")
    assert sorted(results.groupby(["protocol", "init", "budget"]).size().items()) == [
        ((p, f"random · {s}", b), 2) for p in ("finetune", "linear") for s in ("random", "typiclust") for b in (6, 12)
    ]
    manifest = read_manifest(out / "manifest.csv").table.set_index("image")
    for seed in (0, 1):
        small = pd.read_csv(
            out / "selection" / "random" / "typiclust" / f"seed{seed}" / "b6-labelled.csv",
            dtype=str,
            keep_default_na=False,
        )
        large = pd.read_csv(
            out / "selection" / "random" / "typiclust" / f"seed{seed}" / "b12-labelled.csv",
            dtype=str,
            keep_default_na=False,
        )
        assert (
            len(small) == 6 and len(large) == 12 and list(large["image"][:6]) == list(small["image"])
        )  # rounds keep earlier picks
        assert set(manifest.loc[large["image"], "split"]) <= {"train", "unlabelled"}  # pool images only
        assert (
            manifest.loc[large["image"], "label"].to_numpy() == large["label"].to_numpy()
        ).all()  # the simulated expert
        trained = read_manifest(out / "selection" / "random" / "typiclust" / f"seed{seed}" / "b12.csv").table
        assert set(trained.loc[trained["split"] == "train", "image"]) == set(large["image"])
        assert (
            trained.loc[trained["split"].isin(["val", "test"]), "image"]
            == manifest.index[manifest["split"].isin(["val", "test"])]
        ).all()
    report = (out / "report.md").read_text()
    for text in (
        "Label selection",
        "linear · test: balanced accuracy by total labels",
        "difference to random",
        "Classes found by each strategy",
        "12 labels in total",
    ):
        assert text in report, text
