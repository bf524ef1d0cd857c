"""AdaBN: BatchNorm statistics re-estimated on a site's images, weights untouched; predict --adapt-bn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lesionssl.augment.batch import EvalView
from lesionssl.augment.views import IMAGENET
from lesionssl.evaluate.adabn import PRIOR_SHIFT_WARNING, adapt_batchnorm, prior_shift, prior_warning
from lesionssl.finetuning.module import ClassifierModule

from conftest import lesionssl


def test_adapted_statistics_are_the_sites_and_nothing_else_changes():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    backbone = nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    module = ClassifierModule(backbone, 4, 2, eval_view=EvalView(12, IMAGENET))
    images = np.random.default_rng(0).integers(0, 255, (12, 14, 14, 3), dtype=np.uint8)
    table = pd.DataFrame({"row": np.arange(12), "label": [""] * 12})
    weights = {k: v.clone() for k, v in module.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert adapt_batchnorm(module, images, table, ["a", "b"], batch_size=4) == 1  # three batches of 4
    with torch.no_grad():
        inputs = conv(module.eval_view(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()))
    bn = backbone[1]
    # the average over batches of each batch's statistics (fvcore's "precise BN")
    torch.testing.assert_close(bn.running_mean, inputs.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    batch_vars = torch.stack([inputs[i : i + 4].var(dim=(0, 2, 3), unbiased=True) for i in range(0, 12, 4)])
    torch.testing.assert_close(bn.running_var, batch_vars.mean(dim=0), rtol=1e-4, atol=1e-5)
    assert not module.training and not bn.training and bn.momentum == 0.1
    assert all(torch.equal(module.state_dict()[k], v) for k, v in weights.items())


def test_prior_shift_is_the_total_variation_to_the_training_prior():
    train = np.array([0.5, 0.5])
    probs = np.tile([0.9, 0.1], (50, 1))
    estimated, distance = prior_shift(probs, train)
    assert estimated[0] > 0.9 and distance == pytest.approx(abs(estimated[0] - 0.5), abs=1e-9)
    assert prior_shift(np.tile([0.5, 0.5], (50, 1)), train)[1] == pytest.approx(0.0, abs=1e-6)
    # the warning `predict --adapt-bn` and compare's adapt_bn print: only past PRIOR_SHIFT_WARNING
    warning = prior_warning(probs, train, ["MEL", "NV"])
    assert warning.startswith("warning: AdaBN assumes the site's class mix is training's")
    assert f"total variation {distance:.2f}" in warning and f"MEL {estimated[0]:.2f} (training 0.50)" in warning
    near = np.array([[0.9, 0.1]] * 27 + [[0.1, 0.9]] * 23)  # a mix a little off training's
    assert prior_shift(near, train)[1] < PRIOR_SHIFT_WARNING and prior_warning(near, train, ["MEL", "NV"]) is None


def test_predict_adapt_bn_changes_the_probabilities_and_says_so(fine_tuned, synthetic, tmp_path):
    # a folder of its own: other tests count the image stores that predicting the unlabelled pool makes
    plain = lesionssl(
        "predict", "--model", fine_tuned / "ft", "--data", synthetic / "labelled" / "NV", "--out", tmp_path / "p.csv"
    )
    adapted = lesionssl(
        "predict",
        "--model",
        fine_tuned / "ft",
        "--data",
        synthetic / "labelled" / "NV",
        "--out",
        tmp_path / "a.csv",
        "--adapt-bn",
    )
    assert plain.returncode == 0 and adapted.returncode == 0, adapted.stderr
    assert "AdaBN: the statistics of" in adapted.stdout + adapted.stderr
    columns = [c for c in pd.read_csv(tmp_path / "p.csv").columns if c.startswith("p_")]
    assert not np.allclose(pd.read_csv(tmp_path / "p.csv")[columns], pd.read_csv(tmp_path / "a.csv")[columns])
