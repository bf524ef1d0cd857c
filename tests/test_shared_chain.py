"""The real chain on real dermoscopy: a small subset of ../shared/data/skin-lesions (the tiny
backbone and size of test_pipeline: the real images, not the model, are under test here)."""

import pandas as pd
import pytest

from lesionssl.config import CompareConfig, validate
from lesionssl.experiment.compare import compare

from conftest import SKIN_LESIONS
from test_pipeline import TINY_FINETUNE, TINY_PRETRAIN, check_report_against_predictions


@pytest.mark.shared_data
def test_real_chain_on_shared_subset(tmp_path):
    labels = pd.read_csv(SKIN_LESIONS / "labels.csv", keep_default_na=False)
    labelled = labels[labels["label"] != ""].groupby("label").sample(30, random_state=0)
    unlabelled = labels[labels["label"] == ""].sample(80, random_state=0)
    subset = pd.concat([labelled, unlabelled])
    subset = pd.DataFrame(
        {"path": [str(SKIN_LESIONS / "images" / i) for i in subset["image"]], "label": subset["label"]}
    )
    subset.to_csv(tmp_path / "subset.csv", index=False)
    config = validate(
        CompareConfig,
        {
            "data": [str(tmp_path / "subset.csv")],
            "split": {"per_class": 10, "seed": 0},
            "out": str(tmp_path / "cmp"),
            "initialisations": [{"name": "random", "init": "random"}, {"name": "barlow-twins", "init": "pretrain"}],
            "seeds": [0, 1],
            "pretrain": TINY_PRETRAIN,
            "finetune": TINY_FINETUNE,
        },
    )
    compare(config)
    results = check_report_against_predictions(tmp_path / "cmp")
    assert len(results) == 4
    predictions = pd.read_csv(tmp_path / "cmp" / results["run_dir"][0] / "predictions.csv")
    assert len(predictions) == 8 * 20 and set(predictions["label"]) == {
        "MEL",
        "NV",
        "BCC",
        "AK",
        "BKL",
        "DF",
        "VASC",
        "SCC",
    }
