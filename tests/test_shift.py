"""``lesionssl shift``: the domain classifier tells colour-shifted sites apart and not two halves of
one site, and the report's files hold what they promise."""

import shutil

import numpy as np
import pandas as pd
import pytest

from lesionssl.report.shift import colour_statistics, domain_auroc, evaluated_sets


def _site(n: int, seed: int, red_cast: float = 0.0) -> np.ndarray:
    """Images of one "site": random textures, optionally with a red colour cast."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 200, size=(n, 8, 8, 3)).astype(np.float64)
    images[..., 0] += red_cast
    return np.clip(images, 0, 255).astype(np.uint8)


def _features(images: np.ndarray) -> np.ndarray:
    """Per-image channel means and standard deviations: what any backbone sees of colour."""
    flat = images.reshape(len(images), -1, 3).astype(np.float64) / 255
    return np.concatenate([flat.mean(axis=1), flat.std(axis=1)], axis=1)


def test_the_domain_classifier_separates_sites_that_differ_in_colour_and_not_two_halves_of_one():
    site_a, site_b = _site(200, 0), _site(200, 1, red_cast=30)
    assert domain_auroc(_features(site_a), _features(site_b)) > 0.95
    one_site = _features(_site(400, 2))
    assert 0.35 < domain_auroc(one_site[:200], one_site[200:]) < 0.65
    assert domain_auroc(one_site[:3], one_site[3:6]) is None  # too few to cross-validate


def test_colour_statistics_are_the_channel_moments_in_unit_range():
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[0, ..., 0] = 255  # one image all red, one black
    stats = colour_statistics(images)
    assert stats["mean_r"] == pytest.approx(0.5) and stats["std_r"] == pytest.approx(0.5) and stats["mean_g"] == 0


def test_sets_are_the_test_split_the_sites_pool_share_and_each_external_site():
    table = pd.DataFrame(
        {
            "split": ["train", "test", "external", "external", "external", "site-pool"],
            "dataset": ["x", "x", "A", "B", "A", "A"],
        }
    )
    sets = evaluated_sets(table, "dataset")
    assert list(sets) == ["test", "site-pool", "external:A", "external:B"] and list(sets["external:A"]) == [2, 4]
    assert list(sets["site-pool"]) == [5]
    assert list(evaluated_sets(table.iloc[:5], None)) == ["test", "external"]


def test_shift_writes_its_tables_map_and_page(synthetic_manifest, tmp_path):
    from lesionssl.config import ShiftConfig, validate
    from lesionssl.report.shift import shift

    # a clinic's unlabelled photographs in the pool (split --hold-out-pool): measured, not the reference
    manifest = pd.read_csv(synthetic_manifest, keep_default_na=False)
    clinic = manifest.index[(manifest["split"] == "unlabelled") & (manifest["label"] == "")][:12]
    manifest.loc[clinic, "split"] = "site-pool"
    manifest.to_csv(tmp_path / "m.csv", index=False)
    shutil.copy(synthetic_manifest.with_suffix(".json"), tmp_path / "m.json")
    config = validate(
        ShiftConfig,
        {
            "manifest": str(tmp_path / "m.csv"),
            "backbone": "timm:test_resnet",
            "init": "random",
            "image_size": 16,
            "out": str(tmp_path / "shift"),
        },
    )
    page = shift(config)
    table = pd.read_csv(tmp_path / "shift" / "shift.csv")
    assert (
        list(table["set"]) == ["pool", "test", "site-pool"]
        and 0 <= table.loc[1, "domain_auroc"] <= 1
        and table.loc[1, "images"] > 0
    )
    assert table.loc[0, "images"] == manifest["pretrain"].sum() - 12 and table.loc[2, "images"] == 12
    priors = pd.read_csv(tmp_path / "shift" / "priors.csv").set_index("set")
    assert np.allclose(priors.sum(axis=1), 1.0) and {"train", "test"} <= set(priors.index)
    assert (tmp_path / "shift" / "map.png").is_file() and (tmp_path / "shift" / "recall.csv").is_file()
    text = page.read_text()
    assert "map.png" in text and text.count("data:image/jpeg;base64") >= 2 and "Domain AUROC" in text
