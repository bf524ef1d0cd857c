"""Frozen-feature protocols (linear probe, kNN) and the near-duplicate detector."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionssl.config import FinetuneConfig, validate
from lesionssl.data.duplicates import clusters, dihedral_hashes, near_duplicates, thumbnail_features
from lesionssl.evaluate.probe import knn_probs, linear_probe


def _blobs(n_per_class: int, classes: int = 4, dim: int = 32, spread: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dim)), labels


def test_linear_probe_separates_separable_classes_and_picks_c_on_val():
    train_x, train_y = _blobs(10, seed=1)
    val_x, val_y = _blobs(10, seed=1)[0] + 0.05, _blobs(10, seed=1)[1]
    test_x, test_y = _blobs(50, seed=1)
    probe = linear_probe(train_x, train_y, val_x, val_y, 4)
    assert probe.selected_on == "val" and probe.selection_score == 1.0
    assert (probe.predict_proba(test_x).argmax(1) == test_y).mean() > 0.97
    no_val = linear_probe(train_x, train_y, None, None, 4)
    assert no_val.selected_on.startswith("3-fold CV")


def test_probe_fills_zero_probability_for_a_class_missing_from_training():
    x, y = _blobs(8, classes=3)
    probs = linear_probe(x, y, x, y, 5).predict_proba(x)
    assert probs.shape == (24, 5) and np.allclose(probs[:, 3:], 0) and np.allclose(probs.sum(1), 1)


def test_knn_votes_for_the_nearest_cluster():
    train_x, train_y = _blobs(20)
    query_x, query_y = _blobs(5, seed=0)
    probs = knn_probs(train_x, train_y, query_x + 0.01, 4, k=5)
    assert (probs.argmax(1) == query_y).all() and np.allclose(probs.sum(1), 1)


def test_probe_run_never_reads_test_labels_to_choose_c(synthetic_manifest, tmp_path):
    """Spy test: poisoning every test label changes the test score but not the chosen C."""
    from lesionssl.data.split import read_manifest
    from lesionssl.experiment.probes import probe_run

    manifest = read_manifest(synthetic_manifest).table
    val = manifest[manifest["split"] == "train"].groupby("label").head(2).index
    manifest.loc[val, "split"] = "val"  # a validation split to choose C on
    clean = tmp_path / "clean.csv"
    manifest.to_csv(clean, index=False)
    poisoned = manifest.copy()
    test = poisoned["split"] == "test"
    poisoned.loc[test, "label"] = np.roll(poisoned.loc[test, "label"].to_numpy(), 1)
    poisoned_path = tmp_path / "poisoned.csv"
    poisoned.to_csv(poisoned_path, index=False)
    settings = {"image_size": 32, "batch_size": 16, "init": "random"}
    results = [
        probe_run(
            validate(FinetuneConfig, {**settings, "manifest": str(path), "out": str(tmp_path / path.stem)}),
            "linear",
            tmp_path / "features",
            20,
        )
        for path in (clean, poisoned_path)
    ]
    assert results[0]["probe"]["C"] == results[1]["probe"]["C"] and results[0]["probe"]["C_selected_on"] == "val"
    assert results[0]["accuracy"] != results[1]["accuracy"]
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1  # one backbone, features extracted once
    predictions = pd.read_csv(tmp_path / "clean" / "predictions.csv")
    assert len(predictions) == test.sum()


def _photo(seed: int, size: int = 80) -> np.ndarray:
    """A lesion-like image: a dark blob with texture on skin, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    centre = rng.uniform(0.3, 0.7, 2)
    blob = np.exp(-(((x - centre[0]) / rng.uniform(0.1, 0.3)) ** 2 + ((y - centre[1]) / rng.uniform(0.1, 0.3)) ** 2))
    texture = rng.normal(0, 1, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
    image = np.stack([200 - 120 * blob + 15 * texture + rng.normal(0, 3, (size, size)) for _ in range(3)], axis=-1)
    return image.clip(0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_near_duplicates_are_found_through_recompression_and_flips_but_not_between_lesions():
    originals = [_photo(seed) for seed in range(12)]
    copies = [_jpeg(originals[0], 70), np.ascontiguousarray(originals[1][:, ::-1]), np.rot90(originals[2]).copy()]
    images = np.stack(originals + copies)
    pairs = near_duplicates(dihedral_hashes(images), thumbnail_features(images))
    assert {(p.a, p.b) for p in pairs} == {(0, 12), (1, 13), (2, 14)}
    assert all(p.hamming <= 4 and p.cosine >= 0.98 for p in pairs)


def test_clusters_are_connected_components():
    assert clusters(6, [(0, 3), (3, 5), (1, 2)]).tolist() == [0, 1, 1, 0, 4, 0]
    assert clusters(3, []).tolist() == [0, 1, 2]


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_hash_of_a_turned_copy_matches(turns):
    image = _photo(3)
    images = np.stack([image, np.rot90(image, turns).copy(), _photo(4)])
    pairs = near_duplicates(dihedral_hashes(images), thumbnail_features(images))
    assert [(p.a, p.b) for p in pairs] == [(0, 1)]


def _labelled_photos(tmp_path, count, twin_name, twin):
    """``count`` distinct photographs ``img<seed>.png`` labelled NV / MEL in turn, and ``twin``
    (another NV image of img0, saved as ``twin_name``), read as one image source."""
    from lesionssl.data.sources import read_sources

    images = [(f"img{seed}.png", _photo(seed), ["NV", "MEL"][seed % 2]) for seed in range(count)]
    rows = []
    for name, image, label in [*images, (twin_name, twin, "NV")]:
        path = tmp_path / "images" / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path, quality=90)  # quality: JPEG only
        rows.append({"path": str(path), "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return read_sources([tmp_path / "labels.csv"])


def test_audit_lists_a_duplicate_across_train_and_test_and_split_dedup_merges_it(tmp_path):
    from lesionssl.config import SplitConfig
    from lesionssl.data.audit import audit
    from lesionssl.data.split import build_split, write_manifest

    mirror = _jpeg(_photo(0), 80)[:, ::-1].copy()  # a re-encoded mirror image of img0
    table = _labelled_photos(tmp_path, 24, "copy_of_img0.jpg", mirror)
    for dedup in (False, True):
        spec = SplitConfig(per_class=3, seed=1, dedup=dedup)
        manifest, duplicates = build_split(table, spec)
        if not dedup:  # force the leak the audit must find: original in train, copy in test
            manifest.loc[manifest["image"].str.endswith("img0.png"), "split"] = "train"
            manifest.loc[manifest["image"].str.endswith("copy_of_img0.jpg"), ["split", "pretrain"]] = ["test", 0]
        write_manifest(manifest, tmp_path / f"split-{dedup}.csv", spec, ["MEL", "NV"], ["x"], duplicates)
        result = audit(tmp_path / f"split-{dedup}.csv", tmp_path / f"audit-{dedup}")
        assert len(result.pairs) == 1 and result.pairs["cosine"].iloc[0] >= 0.98
        assert len(result.leaking) == (0 if dedup else 1)
        assert "data:image/png;base64," in (tmp_path / f"audit-{dedup}" / "index.html").read_text() or dedup
    merged = manifest.set_index("image")
    assert (
        merged.filter(like="img0.png", axis=0)["group"].iloc[0]
        == merged.filter(like="copy_of_img0", axis=0)["group"].iloc[0]
    )
    assert len(pd.read_csv(tmp_path / "split-True-duplicates.csv")) == 1


def test_audit_of_a_split_without_near_duplicates_says_so(synthetic_manifest, tmp_path):
    """The usual case (no near-duplicates) once ended in ``KeyError: 'leaks'``."""
    import json

    from conftest import lesionssl

    result = lesionssl(
        "audit",
        "--manifest",
        synthetic_manifest,
        "--out",
        tmp_path / "audit",
        "--hash-threshold",
        0,
        "--cosine-threshold",
        1.0,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "no near-duplicates" in result.stderr
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["pairs"] == 0 and summary["leaking_pairs"] == 0 and (tmp_path / "audit" / "index.html").is_file()


def test_split_colour_constancy_links_one_lesion_under_two_lights_and_audit_searches_as_the_split_did(tmp_path):
    """Two photographs of one lesion under different lights (a strong colour cast) are one lesion:
    ``split --dedup --colour-constancy shades-of-gray`` links them, the search without it does not,
    and ``audit`` of that manifest applies what its split recorded."""
    import json

    from lesionssl.config import SplitConfig
    from lesionssl.data.audit import audit
    from lesionssl.data.split import build_split, write_manifest

    warm = (_photo(0) * np.array([1.0, 0.6, 0.35])).astype(np.uint8)  # img0 under a warm light
    table = _labelled_photos(tmp_path, 12, "img0_warm_light.png", warm)
    linked, audited = {}, {}
    for colour in ("none", "shades-of-gray"):
        spec = SplitConfig(per_class=3, seed=1, dedup=True, colour_constancy=colour)
        manifest, duplicates = build_split(table, spec)
        write_manifest(manifest, tmp_path / f"split-{colour}.csv", spec, ["MEL", "NV"], ["x"], duplicates)
        linked[colour] = sorted(duplicates[["image_a", "image_b"]].itertuples(index=False, name=None))
        audited[colour] = len(audit(tmp_path / f"split-{colour}.csv", tmp_path / f"audit-{colour}").pairs)
        detector = json.loads((tmp_path / f"audit-{colour}" / "summary.json").read_text())["detector"]
        assert detector["colour_constancy"] == {"none": "none", "shades-of-gray": "shades-of-gray-p6"}[colour]
    assert linked["none"] == [] and audited["none"] == 0
    assert [{Path(a).name, Path(b).name} for a, b in linked["shades-of-gray"]] == [{"img0.png", "img0_warm_light.png"}]
    assert audited["shades-of-gray"] == 1


def test_split_colour_constancy_without_dedup_is_refused():
    from lesionssl.config import SplitConfig

    with pytest.raises(ValueError, match="colour_constancy needs dedup"):
        SplitConfig(per_class=3, colour_constancy="shades-of-gray")
