"""Shades-of-Gray colour constancy against a hand-computed image, applied once in the store and
carried by the model into predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lesionssl.data.colour import ColourConstancy, shades_of_gray
from lesionssl.data.split import read_manifest

from conftest import TINY_CLASSIFIER, lesionssl


def test_shades_of_gray_on_a_hand_computed_image():
    # Two pixels; p = 2: e_R = sqrt((0.4^2 + 0.8^2) / 2) = sqrt(0.4) ... computed by hand per channel.
    image = np.array([[[102, 51, 204], [204, 51, 102]]], dtype=np.uint8)  # 0.4/0.2/0.8 and 0.8/0.2/0.4
    e = np.array([np.sqrt((0.4**2 + 0.8**2) / 2), 0.2, np.sqrt((0.8**2 + 0.4**2) / 2)])
    gains = 1 / (e / np.linalg.norm(e) * np.sqrt(3))
    expected = np.clip(np.rint(np.array([[[0.4, 0.2, 0.8], [0.8, 0.2, 0.4]]]) * gains * 255), 0, 255)
    np.testing.assert_array_equal(shades_of_gray(image, p=2), expected.astype(np.uint8))
    grey = np.full((4, 4, 3), 90, dtype=np.uint8)  # a white illuminant changes nothing
    np.testing.assert_array_equal(shades_of_gray(grey), grey)
    tinted = (grey * np.array([1.0, 0.8, 0.6])).astype(np.uint8)  # a warm cast is removed: channels equal again
    corrected = shades_of_gray(tinted).astype(int)
    assert np.ptp(corrected.reshape(-1, 3).mean(axis=0)) <= 1
    assert ColourConstancy().key() == "" and ColourConstancy("shades-of-gray", 6).key() == "shades-of-gray-p6"
    np.testing.assert_array_equal(ColourConstancy()(tinted), tinted)


def test_colour_constancy_travels_with_the_model_into_predict(synthetic, tmp_path):
    assert (
        lesionssl(
            "split", "--data", synthetic / "labelled", "--per-class", 4, "--val", 2, "--out", tmp_path / "split.csv"
        ).returncode
        == 0
    )
    result = lesionssl(
        "finetune",
        "--manifest",
        tmp_path / "split.csv",
        "--out",
        tmp_path / "ft",
        *TINY_CLASSIFIER,
        "--epochs",
        1,
        "--figures",
        "false",
        "--colour-constancy",
        "shades-of-gray",
        "--colour-constancy-p",
        4,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert (record["colour_constancy"], record["colour_constancy_p"]) == ("shades-of-gray", 4)
    test = read_manifest(tmp_path / "split.csv").rows("test")
    pd.DataFrame({"path": test["path"]}).to_csv(tmp_path / "new.csv", index=False)
    assert (
        lesionssl(
            "predict", "--model", tmp_path / "ft", "--data", tmp_path / "new.csv", "--out", tmp_path / "p.csv"
        ).returncode
        == 0
    )
    columns = [f"p_{c}" for c in record["classes"]]
    own, predicted = pd.read_csv(tmp_path / "ft" / "predictions.csv"), pd.read_csv(tmp_path / "p.csv")
    from lesionssl.evaluate.calibration import apply_temperature

    np.testing.assert_allclose(
        predicted[columns].to_numpy(), apply_temperature(own[columns].to_numpy(), record["temperature"]), atol=1e-5
    )
    # the same model without the correction at predict time gives other probabilities: it was applied
    record["colour_constancy"] = "none"
    (tmp_path / "ft" / "model.json").write_text(json.dumps(record))
    assert (
        lesionssl(
            "predict", "--model", tmp_path / "ft", "--data", tmp_path / "new.csv", "--out", tmp_path / "q.csv"
        ).returncode
        == 0
    )
    assert not np.allclose(
        pd.read_csv(tmp_path / "q.csv")[columns].to_numpy(), predicted[columns].to_numpy(), atol=1e-4
    )


def test_colour_constancy_is_part_of_the_stores_key(synthetic):
    from lesionssl.data.store import build_store

    paths = sorted(str(p) for p in (synthetic / "labelled").rglob("*.png"))[:6]
    plain, corrected = build_store(paths, 20), build_store(paths, 20, colour=ColourConstancy("shades-of-gray"))
    assert plain.filename != corrected.filename and not np.array_equal(plain, corrected)
    np.testing.assert_array_equal(corrected[0], shades_of_gray(np.asarray(plain[0])))
    from lesionssl.config import FinetuneConfig, validate
    from lesionssl.errors import LesionSSLError

    with pytest.raises(LesionSSLError, match="colour_constancy"):
        validate(FinetuneConfig, {"colour_constancy": "grey-world"})


def test_starting_from_a_backbone_pretrained_with_other_colour_constancy_warns():
    from lesionssl.data.colour import mismatch

    pretrained = {"pretraining": {"colour_constancy": "shades-of-gray"}}
    assert mismatch(pretrained, ColourConstancy("shades-of-gray")) is None
    assert "--colour-constancy shades-of-gray matches it" in mismatch(pretrained, ColourConstancy())
    assert mismatch({"source": "torchvision"}, ColourConstancy()) is None  # ImageNet weights: none recorded, none used
