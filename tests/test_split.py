from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionssl.config import SplitConfig, validate
from lesionssl.data.sources import read_sources
from lesionssl.data.split import make_split, read_manifest, split_table, write_manifest
from lesionssl.errors import LesionSSLError

from conftest import SKIN_LESIONS


def _table(counts: dict[str, int], groups_of: int = 1, unlabelled: int = 0) -> pd.DataFrame:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append(
                {
                    "image": f"{label}{i}",
                    "path": f"/x/{label}{i}.jpg",
                    "label": label,
                    "lesion_id": f"{label}-L{i // groups_of}",
                    "patient_id": "",
                }
            )
    rows += [
        {"image": f"u{i}", "path": f"/x/u{i}.jpg", "label": "", "lesion_id": "", "patient_id": ""}
        for i in range(unlabelled)
    ]
    return pd.DataFrame(rows)


def _counts(manifest, split):
    return manifest[manifest["split"] == split]["label"].value_counts().to_dict()


def test_per_class_cap_takes_at_most_cap_and_rest_is_test():
    manifest = make_split(_table({"NV": 50, "MEL": 20, "DF": 5}), SplitConfig(per_class_cap=10))
    assert _counts(manifest, "train") == {"NV": 10, "MEL": 10, "DF": 5}
    assert _counts(manifest, "test") == {"NV": 40, "MEL": 10}


def test_per_class_count_and_validation():
    manifest = make_split(_table({"NV": 50, "MEL": 20}), SplitConfig(per_class=6, val=3))
    assert _counts(manifest, "train") == {"NV": 6, "MEL": 6}
    assert _counts(manifest, "val") == {"NV": 3, "MEL": 3}
    assert _counts(manifest, "test") == {"NV": 41, "MEL": 11}


def test_per_class_count_too_large_is_a_clear_error():
    with pytest.raises(LesionSSLError, match="leave test images"):
        make_split(_table({"NV": 50, "MEL": 5}), SplitConfig(per_class=5))


def test_fraction():
    manifest = make_split(_table({"NV": 100, "MEL": 20}), SplitConfig(fraction=0.25))
    assert _counts(manifest, "train") == {"NV": 25, "MEL": 5}


def test_exactly_one_mode():
    with pytest.raises(LesionSSLError, match="exactly one"):
        validate(SplitConfig, {"per_class": 3, "fraction": 0.5})


def test_deterministic_for_a_seed_and_different_across_seeds():
    table = _table({"NV": 60, "MEL": 30})
    a = make_split(table, SplitConfig(per_class=5, seed=3))
    b = make_split(table, SplitConfig(per_class=5, seed=3))
    c = make_split(table, SplitConfig(per_class=5, seed=4))
    assert a.equals(b)
    assert not a["split"].equals(c["split"])


def test_groups_never_span_two_splits():
    table = _table({"NV": 90, "MEL": 42}, groups_of=3)
    manifest = make_split(table, SplitConfig(per_class=10, val=4, group_by="lesion_id", seed=1))
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    assert _counts(manifest, "train") == {"NV": 9, "MEL": 9}  # whole groups of 3 under the target of 10


def test_unknown_group_column():
    with pytest.raises(LesionSSLError, match="no such column"):
        make_split(_table({"NV": 10}), SplitConfig(per_class=2, group_by="nope"))


def test_a_grouping_column_empty_for_most_images_is_refused_and_none_is_on_purpose(capsys):
    table = _table({"NV": 30, "MEL": 30}, groups_of=3)
    sparse = table.assign(
        lesion_id=[g if i < 20 else "" for i, g in enumerate(table["lesion_id"])]
    )  # 20 of 60 have one
    with pytest.raises(LesionSSLError, match="only 20 of 60 images have a lesion_id.*--group-by none"):
        make_split(sparse, SplitConfig(per_class=5, group_by="lesion_id"))
    mostly = table.assign(lesion_id=[g if i < 45 else "" for i, g in enumerate(table["lesion_id"])])
    manifest = make_split(mostly, SplitConfig(per_class=5, group_by="lesion_id"))
    assert "15 of 60 images have no lesion_id" in capsys.readouterr().err
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    by_image = make_split(table, SplitConfig(per_class=5, group_by="none"))
    assert by_image["group"].str.startswith("image:").all() and "on purpose" in capsys.readouterr().err
    make_split(table, SplitConfig(per_class=5))  # ids present, no grouping asked for: a note that names the flag
    note = capsys.readouterr().err
    assert (
        "60 of 60 images have a lesion_id, but no --group-by was given" in note and "Set --group-by lesion_id" in note
    )


def test_pool_is_inductive_by_default_and_transductive_on_request():
    table = _table({"NV": 30, "MEL": 30}, unlabelled=7)
    inductive = make_split(table, SplitConfig(per_class=5))
    assert not inductive.loc[inductive["split"] == "test", "pretrain"].any()
    assert inductive.loc[inductive["split"] != "test", "pretrain"].all()
    transductive = make_split(table, SplitConfig(per_class=5, transductive=True))
    assert transductive["pretrain"].all()


def test_manifest_round_trip_keeps_pool_and_classes(tmp_path):
    table = _table({"NV": 30, "MEL": 30}, unlabelled=4)
    spec = SplitConfig(per_class=5, transductive=True)
    manifest = make_split(table, spec)
    write_manifest(manifest, tmp_path / "m.csv", spec, ["MEL", "NV"], ["x"])
    loaded = read_manifest(tmp_path / "m.csv", data_root=tmp_path)  # the images of /x, moved here
    assert set(loaded.table["path"]) == {str(tmp_path / Path(p).name) for p in table["path"]}
    assert loaded.pool == "transductive" and loaded.classes == ["MEL", "NV"]
    assert len(loaded.rows("unlabelled")) == 4 and len(loaded.pretrain_rows()) == 64
    assert list(split_table(manifest, ["MEL", "NV"]).loc["Total"]) == [10, 50]


def test_bad_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("image,label\na,b\n")
    with pytest.raises(LesionSSLError, match="missing columns"):
        read_manifest(tmp_path / "m.csv")


@pytest.mark.shared_data
def test_seed_style_cap_split_on_shared_data_grouped_by_lesion():
    table = read_sources([SKIN_LESIONS])
    manifest = make_split(table, SplitConfig(per_class_cap=100, group_by="lesion_id", seed=0))
    train = _counts(manifest, "train")
    assert max(train.values()) <= 100 and min(train.values()) >= 90
    lesions = manifest[manifest["group"].str.startswith("HAM_")]
    assert (lesions.groupby("group")["split"].nunique() == 1).all()
    assert (manifest["split"] == "unlabelled").sum() == 2625


def test_budgets_are_nested_subsets_with_one_test_set():
    from lesionssl.data.split import subsample_train

    base = make_split(
        _table({"NV": 80, "MEL": 40}, groups_of=2), SplitConfig(per_class=20, group_by="lesion_id", seed=0)
    )
    small = subsample_train(base, 6, seed=0)
    assert _counts(small, "train") == {"NV": 6, "MEL": 6}
    assert small.loc[small["split"] == "test", "image"].tolist() == base.loc[base["split"] == "test", "image"].tolist()
    assert set(small.loc[small["split"] == "train", "image"]) <= set(base.loc[base["split"] == "train", "image"])
    assert small["pretrain"].equals(base["pretrain"])
    with pytest.raises(LesionSSLError, match="exceeds"):
        subsample_train(base, 30)


@pytest.mark.shared_data
def test_seed_isic2019_split_has_the_seed_counts():
    from lesionssl.data.split import SEED_ISIC2019_TRAIN

    from conftest import LABEL_FORMATS

    gt = pd.read_csv(LABEL_FORMATS / "ISIC_2019_Training_GroundTruth.csv")
    table = pd.DataFrame(
        {
            "image": gt["image"].str.removesuffix("_downsampled"),
            "path": "/isic/" + gt["image"] + ".jpg",
            "label": gt.drop(columns="image").idxmax(axis=1),
            "lesion_id": "",
            "patient_id": "",
        }
    )
    manifest = make_split(table, SplitConfig(seed_isic2019=True, transductive=True))
    counts = manifest["split"].value_counts()
    assert counts["train"] == 2554 and counts["test"] == 19423 and counts["excluded"] == 1280 + 2074
    assert _counts(manifest, "train") == SEED_ISIC2019_TRAIN
    assert _counts(manifest, "test")["NV"] == 10601 and _counts(manifest, "test")["SCC"] == 414
    assert manifest["pretrain"].sum() == 21977  # the seed's pre-pretraining pool: train + test
    inductive = make_split(table, SplitConfig(seed_isic2019=True))
    assert inductive["pretrain"].sum() == 2554


def _study_table(seed: int = 0) -> pd.DataFrame:
    """Labelled lesions of several images each (3 sites), unlabelled images, one site to hold out."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, lesions in {"NV": 60, "MEL": 30, "DF": 14}.items():
        for lesion in range(lesions):
            site = ["A", "B", "C"][lesion % 3]
            for k in range(int(rng.integers(1, 4))):
                rows.append(
                    {
                        "image": f"{label}{lesion}_{k}",
                        "path": f"/x/{label}{lesion}_{k}.jpg",
                        "label": label,
                        "lesion_id": f"{label}-L{lesion}",
                        "patient_id": "",
                        "site": site,
                    }
                )
    rows += [
        {"image": f"u{i}", "path": f"/x/u{i}.jpg", "label": "", "lesion_id": "", "patient_id": "", "site": "A"}
        for i in range(25)
    ]
    return pd.DataFrame(rows)


STUDY = SplitConfig(test_fraction=0.25, per_class=5, val=2, group_by="lesion_id", hold_out={"site": ["C"]}, seed=3)


def test_study_split_invariants():
    table = _study_table()
    manifest = make_split(table, STUDY)
    used = manifest[manifest["split"].isin(["train", "val", "test", "external"])]
    assert (used.groupby("group")["split"].nunique() == 1).all()  # no lesion in two splits
    assert set(manifest.loc[manifest["split"] == "external", "image"]) == set(table.loc[table["site"] == "C", "image"])
    assert not manifest.loc[manifest["split"].isin(["test", "external"]), "pretrain"].any()  # never in the pool
    assert manifest.loc[
        ~manifest["split"].isin(["test", "external", "excluded"]), "pretrain"
    ].all()  # everything else is
    # the test share is drawn per class from the internal labelled images
    internal = manifest[(manifest["label"] != "") & (manifest["split"] != "external")]
    for label, rows in internal.groupby("label"):
        share = (rows["split"] == "test").mean()
        assert 0.15 < share < 0.45, (label, share)
    assert make_split(table, STUDY).equals(manifest)  # deterministic for a seed
    assert not make_split(table, SplitConfig(**{**STUDY.model_dump(), "seed": 4}))["split"].equals(manifest["split"])


def test_hold_out_pool_sends_whole_groups_of_the_site_to_the_pool_without_labels(tmp_path):
    table = _study_table()
    spec = SplitConfig(**{**STUDY.model_dump(), "hold_out_pool": 0.5})
    manifest = make_split(table, spec)
    site = manifest["image"].isin(table.loc[table["site"] == "C", "image"])
    pool, external = manifest[manifest["split"] == "site-pool"], manifest[manifest["split"] == "external"]
    assert set(pool["image"]) | set(external["image"]) == set(manifest.loc[site, "image"])  # the site, split in two
    assert not set(pool["group"]) & set(external["group"])  # no lesion on both sides
    assert pool["pretrain"].all() and not external["pretrain"].any()  # no external image in the pool
    assert (pool["label"] == "").all() and (external["label"] != "").all()  # the pool carries no site label
    assert 0.3 < len(pool) / site.sum() < 0.7
    assert make_split(table, spec).equals(manifest)  # deterministic for a seed
    assert not make_split(table, SplitConfig(**{**spec.model_dump(), "seed": 4}))["split"].equals(manifest["split"])
    # the rest of the split is the one without a site pool
    plain = make_split(table, STUDY)
    assert manifest.loc[~site, "split"].equals(plain.loc[~site, "split"])
    write_manifest(manifest, tmp_path / "m.csv", spec, ["MEL", "NV"], ["x"])
    recorded = pd.read_csv(tmp_path / "m.csv", keep_default_na=False)
    assert (recorded["split"] == "site-pool").sum() == len(pool)  # the manifest says which images went where
    import json

    assert json.loads((tmp_path / "m.json").read_text())["site_pool"] == {
        "images": len(pool),
        "groups": pool["group"].nunique(),
        "fraction": 0.5,
    }
    with pytest.raises(
        LesionSSLError, match="hold_out_pool sends a share of a held-out site to the pool: it needs hold_out"
    ):
        validate(SplitConfig, {"per_class": 5, "hold_out_pool": 0.5})


def test_a_group_touching_the_held_out_site_is_excluded_elsewhere():
    table = _study_table()
    table.loc[table["image"] == "NV0_0", "site"] = (
        "C"  # one image of lesion NV-L0 (site A) appears in the held-out site
    )
    manifest = make_split(table, STUDY).set_index("image")
    lesion = manifest[manifest["group"] == "NV-L0"]
    assert manifest.loc["NV0_0", "split"] == "external"
    assert set(lesion.drop(index="NV0_0")["split"]) <= {"excluded"} and not lesion["pretrain"].any()


def test_near_duplicate_links_merge_groups_across_lesions():
    table = _study_table()
    links = [("NV1_0", "MEL3_0"), ("MEL3_0", "DF4_0")]  # sites B, A, B
    manifest = make_split(table, STUDY, links=links).set_index("image")
    groups = {manifest.loc[image, "group"] for image in ("NV1_0", "MEL3_0", "DF4_0")}
    assert len(groups) == 1
    cluster = manifest[manifest["group"] == groups.pop()]
    assert cluster["split"].nunique() == 1 and len(cluster) >= 3  # whole lesions merged, one split
    # a duplicate of a held-out image takes its whole lesion out of every internal split
    manifest = make_split(table, STUDY, links=[("NV1_0", "MEL2_0")]).set_index(
        "image"
    )  # MEL-L2 is at the held-out site C
    assert set(manifest.loc[manifest["group"] == manifest.loc["NV1_0", "group"], "split"]) == {"external", "excluded"}


def test_held_out_values_and_columns_are_checked():
    with pytest.raises(LesionSSLError, match="values present"):
        make_split(_study_table(), SplitConfig(**{**STUDY.model_dump(), "hold_out": {"site": ["Z"]}}))
    with pytest.raises(LesionSSLError, match="no such column"):
        make_split(_study_table(), SplitConfig(**{**STUDY.model_dump(), "hold_out": {"hospital": ["A"]}}))


def test_budgets_are_nested_per_seed_and_drawn_from_the_labelled_pool():
    from lesionssl.data.split import nested_budgets

    manifest = make_split(_study_table(), SplitConfig(**{**STUDY.model_dump(), "per_class": 2}))
    draws = {seed: nested_budgets(manifest, [2, 4, 6], seed) for seed in (0, 1)}
    for budgets in draws.values():
        trains = {b: set(t.loc[t["split"] == "train", "image"]) for b, t in budgets.items()}
        assert trains[2] <= trains[4] <= trains[6]
        for b, t in budgets.items():
            assert t.loc[t["split"] == "train", "label"].value_counts().max() <= b
            assert (
                t.loc[t["split"] == "test", "image"].tolist()
                == manifest.loc[manifest["split"] == "test", "image"].tolist()
            )
            assert (
                t["pretrain"].equals(manifest["pretrain"])
                and (t["split"] == "val").sum() == (manifest["split"] == "val").sum()
            )
        # budgets larger than the base split's 2 per class come from the labelled pool
        assert budgets[6].loc[budgets[6]["split"] == "train", "label"].value_counts().min() > 2
    assert set(draws[0][4].query("split == 'train'")["image"]) != set(draws[1][4].query("split == 'train'")["image"])


def test_a_hand_edited_manifest_with_a_lesion_in_train_and_test_is_refused(tmp_path):
    manifest = make_split(_study_table(), STUDY)
    spec_path = tmp_path / "m.csv"
    write_manifest(manifest, spec_path, STUDY, ["MEL", "NV", "DF"], ["x"])
    assert read_manifest(spec_path, data_root=tmp_path).pool == "inductive"
    sizes = manifest[manifest["split"] == "test"].groupby("group").size()
    test_group = sizes.index[sizes > 1][0]  # a lesion photographed more than once
    edited = manifest.copy()
    edited.loc[(edited["group"] == test_group).idxmax(), "split"] = "train"
    edited.to_csv(spec_path, index=False)
    with pytest.raises(LesionSSLError, match="leaks"):
        read_manifest(spec_path)


@pytest.mark.parametrize(
    ("flavour", "paths", "root", "relative"),
    [
        (
            "windows",
            [r"C:\Users\ana\ISIC 2019\train\a.jpg", r"C:\Users\ana\ISIC 2019\test\b.JPG"],
            r"C:\Users\ana\ISIC 2019",
            ["train/a.jpg", "test/b.JPG"],
        ),
        (
            "posix",
            ["/Volumes/Lesions Drive/isic/naevus ä.jpg", "/Volumes/Lesions Drive/isic/extra/m.png"],
            "/Volumes/Lesions Drive/isic",
            ["naevus ä.jpg", "extra/m.png"],
        ),
        ("posix", ["/scratch/job/x.png"], "/scratch/job", ["x.png"]),
    ],
)
def test_manifest_paths_are_relative_to_a_root_on_every_system(flavour, paths, root, relative):
    """Windows and macOS paths (drives, spaces, non-ASCII) become a root plus ``/``-separated
    relative paths, which resolve again under any root, written on one system and read on another."""
    from pathlib import PurePosixPath, PureWindowsPath

    from lesionssl.data.split import locate, relative_paths

    kind = PureWindowsPath if flavour == "windows" else PurePosixPath
    found_root, found = relative_paths(paths, kind)
    assert (found_root, found) == (root, relative)
    assert [locate(p, found_root, kind) for p in found] == paths
    # written on Windows, read on Linux below the folder the data moved to (and back)
    assert locate(found[-1], "/scratch/isic", PurePosixPath) == "/scratch/isic/" + relative[-1]
    assert locate("train/a.jpg", r"D:\copy", PureWindowsPath) == r"D:\copy\train\a.jpg"
    assert (
        locate(r"C:\old\absolute.jpg", "/anywhere", PurePosixPath) == r"C:\old\absolute.jpg"
    )  # an older manifest's absolute path stays


def test_images_on_two_windows_drives_keep_absolute_paths():
    from pathlib import PureWindowsPath

    from lesionssl.data.split import relative_paths

    assert relative_paths([r"C:\a\x.jpg", r"D:\b\y.jpg"], PureWindowsPath) == (None, [r"C:\a\x.jpg", r"D:\b\y.jpg"])


def test_a_moved_data_folder_is_found_with_data_root(synthetic, tmp_path):
    """The manifest stores paths below the data's root; after the data moves, reading it names
    --data-root, and with it every image is found."""
    import shutil

    from conftest import lesionssl

    data = tmp_path / "data"
    shutil.copytree(synthetic, data)
    result = lesionssl("split", "--data", data / "labelled", "--per-class", 5, "--out", tmp_path / "m.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "m.csv", keep_default_na=False)
    assert not table["path"].str.startswith("/").any() and "\\" not in "".join(table["path"])
    data.rename(tmp_path / "scratch")
    with pytest.raises(LesionSSLError, match="--data-root"):
        read_manifest(tmp_path / "m.csv")
    moved = read_manifest(tmp_path / "m.csv", data_root=tmp_path / "scratch" / "labelled")
    assert all(__import__("os").path.isfile(p) for p in moved.table["path"])
    refused = lesionssl("finetune", "--manifest", tmp_path / "m.csv", "--out", tmp_path / "ft")
    assert refused.returncode == 2 and "--data-root" in refused.stderr


def test_split_warns_about_every_class_with_few_test_images(synthetic, tmp_path):
    """A cap above the class sizes sends whole classes to train: once silently (the README's first split)."""
    from conftest import lesionssl

    capped = lesionssl("split", "--data", synthetic / "labelled", "--per-class-cap", 100, "--out", tmp_path / "a.csv")
    assert capped.returncode == 0, capped.stderr
    (warning,) = [line for line in capped.stderr.splitlines() if line.startswith("warning:")]
    assert (
        "4 classes have fewer than 5 test images" in warning and "MEL (0)" in warning and "--test-fraction" in warning
    )
    held_out = lesionssl("split", "--data", synthetic / "labelled", "--per-class", 5, "--out", tmp_path / "b.csv")
    assert held_out.returncode == 0 and "warning:" not in held_out.stderr, held_out.stderr
