"""examples/oral-cancer.md, run as written on a few of the real oral photographs (12 per class),
with sizes and epochs shrunk by flags appended to each command (a later flag wins)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_docs import documented_commands

from conftest import REPO, SHARED_DATA, lesionssl

ORAL = SHARED_DATA / "oral-lesions"
EXAMPLE = REPO / "examples" / "oral-cancer.md"
#: Flags appended to each command of the example: the same commands, on a few images, in seconds.
SHRINK = {
    "split": ["--per-class", 6, "--val", 2],
    "finetune": [
        "--image-size",
        32,
        "--epochs",
        1,
        "--lr",
        "0.001",
        "--tracking.mlflow",
        "false",
        "--tracking.tensorboard",
        "false",
    ],
    "compare": [
        "--seeds",
        0,
        "--budgets",
        6,
        "--split.per-class",
        6,
        "--split.val",
        2,
        "--finetune.image-size",
        32,
        "--finetune.epochs",
        1,
        "--finetune.lr",
        "0.001",
        "--pretrain.image-size",
        32,
        "--pretrain.epochs",
        1,
        "--pretrain.batch-size",
        8,
        "--finetune.tracking.mlflow",
        "false",
        "--pretrain.tracking.mlflow",
        "false",
    ],
}


@pytest.mark.shared_data
def test_the_oral_cancer_example_runs_as_written_on_a_few_photographs(tmp_path):
    if not (ORAL / "benign").is_dir():
        pytest.skip(f"needs {ORAL}")
    few = pd.DataFrame(
        [
            {"path": str(f), "label": label}
            for label in ("benign", "malignant")
            for f in sorted((ORAL / label).glob("*.jpg"))[:12]
        ]
    )
    few.to_csv(tmp_path / "few.csv", index=False)  # the images stay where they are: only their paths are listed
    config = tmp_path / "oral-cancer.yaml"
    config.write_text(
        (REPO / "examples" / "oral-cancer.yaml")
        .read_text()
        .replace("../shared/data/oral-lesions", str(tmp_path / "few.csv"))
        .replace("runs/oral", str(tmp_path / "study"))
    )
    commands = documented_commands(EXAMPLE)
    assert [c[0] for c in commands] == ["split", "finetune", "predict", "explain", "compare"]
    for args in commands:
        args = [
            str(tmp_path / "few.csv")
            if a == "../shared/data/oral-lesions"
            else str(config)
            if a == "examples/oral-cancer.yaml"
            else a
            for a in args
        ]
        result = lesionssl(*args, *SHRINK.get(args[0], []), cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr[-2000:])
    record = json.loads((tmp_path / "runs" / "oral-ft" / "model.json").read_text())
    assert (
        record["classes"] == ["benign", "malignant"]
        and record["malignant_classes"] == ["malignant"]
        and record["threshold"] is not None
    )
    predicted = pd.read_csv(tmp_path / "oral-predictions.csv", keep_default_na=False)
    assert len(predicted) == 24 and {"p_malignant", "malignant", "model_split"} <= set(predicted.columns)
    assert (tmp_path / "oral-explained" / "index.html").is_file()
    results = pd.read_csv(tmp_path / "study" / "results.csv")
    assert set(results["init"]) == {"imagenet", "imagenet-barlow-twins"} and set(results["protocol"]) == {
        "linear",
        "finetune",
    }
