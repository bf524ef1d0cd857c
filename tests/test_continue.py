"""Continuing from trained weights (the seed's pre-pretraining): L2-SP against the paper, a slower
encoder, frozen BatchNorm statistics, and the `continue` recipe chosen for trained weights."""

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from lesionssl.config import PretrainConfig, validate
from lesionssl.optim.l2sp import StartingPoint
from lesionssl.optim.one_cycle import set_hyperparameters
from lesionssl.pretraining.methods import get_method
from lesionssl.pretraining.module import SelfSupervisedModule
from lesionssl.pretraining.run import pretrain
from tests.test_pipeline import TINY_PRETRAIN


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5))


def _module(**kwargs) -> SelfSupervisedModule:
    method = get_method("barlow_twins", {"projector": [8], "lambd": 0.1})
    return SelfSupervisedModule(_encoder(), method, views=nn.Identity(), in_dim=5, **kwargs)


def test_l2sp_is_the_papers_penalty_and_its_gradient():
    encoder = _encoder()
    start = [p.detach().clone() for p in encoder.parameters()]
    anchor = StartingPoint(encoder, alpha=0.3)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))
    penalty = anchor(encoder)
    # Li et al. 2018, eq. 2, element by element: alpha / 2 * sum (w - w0)^2.
    expected = (
        0.3
        / 2
        * sum(
            float((a - b) ** 2)
            for p, s in zip(encoder.parameters(), start, strict=True)
            for a, b in zip(p.detach().flatten(), s.flatten(), strict=True)
        )
    )
    assert float(penalty) == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    for p, s in zip(encoder.parameters(), start, strict=True):
        torch.testing.assert_close(p.grad, 0.3 * (p.detach() - s))
    # The anchor is module state: it travels with a checkpoint, so a resumed run pulls toward the same start.
    assert len([k for k in anchor.state_dict() if k.startswith("w")]) == len(start)


def test_encoder_lr_scale_gives_the_encoder_a_share_of_the_projectors_lr():
    module = _module(encoder_lr_scale=0.1)
    optimizer = module.persistent_optimizer()
    set_hyperparameters(optimizer, 1e-3, 0.9)
    encoder, projector = optimizer.param_groups
    assert encoder["lr"] == pytest.approx(1e-4) and projector["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in encoder["params"]} == {id(p) for p in module.backbone.parameters()}
    assert len(encoder["params"]) + len(projector["params"]) == len(list(module.parameters()))


def test_frozen_bn_statistics_survive_training_steps_and_affine_parameters_still_learn():
    def steps(module):
        optimizer = module.persistent_optimizer()
        for _ in range(3):
            module.train()  # as Lightning leaves it, and as the monitors restore it
            optimizer.zero_grad()
            module.training_step((torch.randn(16, 4), torch.randn(16, 4)), 0).backward()
            optimizer.step()

    module = _module(frozen_bn_statistics=True, l2sp=1.0)
    bn = module.backbone[1]
    mean, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    steps(module)
    assert torch.equal(bn.running_mean, mean) and not torch.equal(bn.weight.detach(), weight)
    assert not bn.training and module.method.projector.training
    default = _module()
    steps(default)
    assert not torch.equal(default.backbone[1].running_mean, mean)  # by default the statistics update


@pytest.mark.parametrize(
    ("given", "recipe"),
    [
        ({}, "small-data"),
        ({"init": "random"}, "small-data"),
        ({"init": "imagenet"}, "continue"),
        ({"init": "runs/pretrain/backbone.safetensors"}, "continue"),
        ({"init": "imagenet", "recipe": "small-data"}, "small-data"),
    ],
)
def test_trained_weights_default_to_the_continue_recipe(given, recipe):
    config = validate(PretrainConfig, given)
    assert config.recipe == recipe
    if recipe == "continue":
        assert config.encoder_lr_scale < 1 and config.resolved_projector_warmup_epochs >= 1
        assert config.bn_statistics == "frozen" and config.l2sp > 0
    else:
        assert (config.encoder_lr_scale, config.bn_statistics, config.l2sp) == (1.0, "update", 0.0)


def test_explicit_keys_override_the_continue_recipe():
    config = validate(
        PretrainConfig, {"init": "imagenet", "encoder_lr_scale": 1.0, "bn_statistics": "update", "epochs": 3}
    )
    assert (config.recipe, config.encoder_lr_scale, config.bn_statistics, config.epochs) == (
        "continue",
        1.0,
        "update",
        3,
    )
    with pytest.raises(Exception, match="encoder_lr_scale"):
        validate(PretrainConfig, {"recipe": "official", "encoder_lr_scale": 0.5})


def test_pretraining_with_frozen_statistics_and_l2sp_keeps_the_running_statistics(synthetic_manifest, tmp_path):
    config = validate(
        PretrainConfig,
        {
            **TINY_PRETRAIN,
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "bt"),
            "bn_statistics": "frozen",
            "l2sp": 0.5,
            "encoder_lr_scale": 0.5,
        },
    )
    state = load_file(pretrain(config))
    statistics = {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}
    assert statistics and all(
        torch.equal(v, torch.zeros_like(v) if k.endswith("mean") else torch.ones_like(v)) for k, v in statistics.items()
    )
    resolved = yaml.safe_load((tmp_path / "bt" / "config.yaml").read_text())["resolved"]
    assert (resolved["encoder_lr"], resolved["bn_statistics"], resolved["l2sp"]) == (
        pytest.approx(0.5 * resolved["lr"]),
        "frozen",
        0.5,
    )
    assert "l2sp" in (tmp_path / "bt" / "history.csv").read_text().splitlines()[0]


def test_continuing_records_the_starting_points_knn_accuracy_first(synthetic, tmp_path):
    """The probe against steps starts at step 0: history.csv's first row is the kNN accuracy of the
    weights the run starts from, on the validation split, the same measure as every epoch's."""
    import pandas as pd

    from conftest import lesionssl

    assert (
        lesionssl(
            "split",
            "--data",
            synthetic / "labelled",
            "--data",
            synthetic / "unlabelled",
            "--per-class",
            8,
            "--val",
            4,
            "--out",
            tmp_path / "split.csv",
        ).returncode
        == 0
    )
    first = validate(
        PretrainConfig, {**TINY_PRETRAIN, "manifest": str(tmp_path / "split.csv"), "out": str(tmp_path / "a")}
    )
    start_file = pretrain(first)
    end_of_first = pd.read_csv(tmp_path / "a" / "history.csv").query("stage == 'pretrain'")["knn_accuracy"].iloc[-1]
    second = validate(
        PretrainConfig,
        {
            **TINY_PRETRAIN,
            "manifest": str(tmp_path / "split.csv"),
            "out": str(tmp_path / "b"),
            "init": str(start_file),
            "backbone": "timm:test_resnet",
        },
    )
    assert second.recipe == "continue"
    pretrain(second)
    history = pd.read_csv(tmp_path / "b" / "history.csv")
    assert list(history["stage"])[:2] == ["start", "warmup"]
    # the first run's last epoch measured the same weights the same way
    assert history["knn_accuracy"].iloc[0] == pytest.approx(end_of_first)
