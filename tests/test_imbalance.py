"""Prior shift and imbalance options, head-stage freezing modes, validation-only selection."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lesionssl.config import FinetuneConfig, SplitConfig, validate
from lesionssl.data.classes import resolve_class_order
from lesionssl.data.loaders import train_loader
from lesionssl.data.sources import read_sources
from lesionssl.data.split import make_split, write_manifest
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.prior import adjust, class_prior, em_prior
from lesionssl.experiment.finetune import finetune
from lesionssl.finetuning.module import ClassifierModule

from test_pipeline import TINY_FINETUNE


def test_adjust_is_bayes_rule():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    adjusted = adjust(probs, np.array([0.5, 0.5]), np.array([0.2, 0.8]))
    np.testing.assert_allclose(adjusted[0], [0.2, 0.8])
    np.testing.assert_allclose(adjusted[1], [0.18 / 0.26, 0.08 / 0.26])


def test_em_recovers_a_shifted_prior():
    rng = np.random.default_rng(0)
    # two Gaussian classes; calibrated posteriors under a balanced training prior
    true_prior = np.array([0.85, 0.15])
    labels = rng.choice(2, 20000, p=true_prior)
    x = rng.normal(labels * 2.0, 1.0)
    like = np.stack([np.exp(-((x - 0) ** 2) / 2), np.exp(-((x - 2) ** 2) / 2)], axis=1)
    posteriors = like / like.sum(axis=1, keepdims=True)
    estimate = em_prior(posteriors, np.array([0.5, 0.5]))
    np.testing.assert_allclose(estimate, true_prior, atol=0.02)


def test_class_balanced_sampler_draws_classes_equally(tmp_path):
    table = pd.DataFrame({"label": ["A"] * 90 + ["B"] * 10, "row": range(100)})
    images = np.zeros((100, 4, 4, 3), dtype=np.uint8)
    data = train_loader(images, table, ["A", "B"], 100, 0, seed=0, class_balanced=True)

    def epoch(k):
        data.sampler.set_epoch(k)
        return torch.cat([batch[1] for batch in data])

    drawn = torch.cat([epoch(k) for k in range(20)]).numpy()
    assert abs((drawn == 1).mean() - 0.5) < 0.05
    # the draw depends on (seed, epoch) only: a resumed run repeats it
    assert torch.equal(epoch(3), epoch(3)) and not torch.equal(epoch(3), epoch(4))


def _bn(module):
    return next(m for m in module.backbone.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("mode", ["fastai", "linear-probe"])
def test_freeze_modes(mode):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    module = ClassifierModule(backbone, 4, 2)
    module.freeze(mode)
    module.train()
    before = _bn(module).running_mean.clone()
    module(torch.randn(8, 3, 8, 8) + 3)
    moved = not torch.equal(before, _bn(module).running_mean)
    assert backbone[0].weight.requires_grad is False and module.head.weight.requires_grad
    if mode == "fastai":  # the seed's learn.freeze(): BN trainable, statistics update
        assert _bn(module).weight.requires_grad and moved
    else:
        assert not _bn(module).weight.requires_grad and not moved
    module.unfreeze()
    module.train()
    assert backbone[0].weight.requires_grad and backbone.training


def test_seed_recipe_and_overrides():
    config = validate(FinetuneConfig, {"recipe": "seed", "epochs": 3})
    assert (config.backbone, config.image_size, config.tta, config.normalize, config.epochs) == (
        "resnet50",
        256,
        3,
        "none",
        3,
    )
    assert (config.head_lr, config.weight_decay, config.batch_size, config.freeze) == (1e-3, 0.0, 64, "fastai")
    with pytest.raises(LesionSSLError, match="recipe"):
        validate(FinetuneConfig, {"recipe": "fastest"})


@pytest.fixture(scope="module")
def manifest_with_val(synthetic, tmp_path_factory):
    sources = [str(synthetic / "labelled"), str(synthetic / "unlabelled")]
    spec = SplitConfig(per_class=6, val=3, seed=0)
    manifest = make_split(read_sources(sources), spec)
    path = tmp_path_factory.mktemp("val") / "split.csv"
    write_manifest(manifest, path, spec, resolve_class_order(manifest["label"]), sources)
    return path


def test_validation_selection_adjustment_and_weights_are_recorded(manifest_with_val, tmp_path):
    config = validate(
        FinetuneConfig,
        {
            **TINY_FINETUNE,
            "epochs": 3,
            "manifest": str(manifest_with_val),
            "out": str(tmp_path / "ft"),
            "init": "random",
            "lr": 1e-3,
            "select_on": "val_loss",
            "early_stopping_patience": 2,
            "sampling": "class-balanced",
            "loss_weights": "balanced",
            "test_prior": "pool",
        },
    )
    metrics = finetune(config)
    assert metrics["selected_epoch"] in (0, 1, 2)
    history = pd.read_csv(tmp_path / "ft" / "history.csv")
    assert {"val_loss", "val_balanced_accuracy"} <= set(history.columns)
    adjustment = json.loads((tmp_path / "ft" / "metrics.json").read_text())["logit_adjustment"]
    assert adjustment["target"].startswith("EM estimate on 60 unlabelled")
    assert sum(adjustment["test_prior"].values()) == pytest.approx(1.0, abs=1e-4)
    assert set(adjustment["unadjusted"]) == {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"}
    assert metrics["imbalance"] == {"sampling": "class-balanced", "loss_weights": "balanced"}


def test_select_on_without_val_split_is_refused(synthetic_manifest, tmp_path):
    config = validate(
        FinetuneConfig,
        {
            **TINY_FINETUNE,
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "ft"),
            "init": "random",
            "select_on": "val_loss",
        },
    )
    with pytest.raises(LesionSSLError, match="validation split"):
        finetune(config)


def test_class_prior():
    np.testing.assert_allclose(class_prior(np.array([0, 0, 1, 2]), 4), [0.5, 0.25, 0.25, 0.0])


def test_batches_are_sharded_across_ddp_processes(monkeypatch):
    from lesionssl.data import loaders

    sampler = loaders.EpochBatchSampler(103, 10, seed=0, drop_last=True)
    single = sampler._batches()
    in_order = loaders.EpochBatchSampler(103, 10, seed=0, shuffle=False, shard=False)
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(loaders.dist, "is_initialized", lambda: True)
        monkeypatch.setattr(loaders.dist, "get_world_size", lambda: 2)
        monkeypatch.setattr(loaders.dist, "get_rank", lambda rank=rank: rank)
        shards.append(sampler._batches())
        assert len(sampler) == 5
        # evaluation loaders are read whole by every process
        assert [i for b in in_order for i in b] == list(range(103)) and len(in_order) == 11
    # equal numbers of full batches per process, no image in two processes, all from the 1-process order
    assert len(shards[0]) == len(shards[1]) == 5 and all(len(b) == 10 for s in shards for b in s)
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen)) and set(seen) <= {i for b in single for i in b}
