"""fastai semantics of the LR finder and 1cycle, checked against hand-worked values."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lesionssl.config import RuntimeConfig
from lesionssl.data.loaders import EpochBatchSampler
from lesionssl.engine.trainer import make_trainer
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.optim.lr_finder import LRFinderResult, SweepSampler, minimum, run_lr_finder, slide, steep, valley
from lesionssl.optim.one_cycle import OneCycle, OneCycleCallback

# Hand-worked: the longest strictly decreasing subsequence of LOSSES is 4,3,2,1,0.5 ... found by
# fastai's DP as start=1, end=7 -> sections = 2 -> index 1 + 2 + 1 = 4.
LOSSES = np.array([5, 4, 6, 3, 2, 2.5, 1, 0.5, 3, 8], dtype=float)
LRS = 1e-5 * 10.0 ** np.arange(10)


def test_valley_hand_worked():
    assert valley(LRS, LOSSES) == (LRS[4], 4)


def test_minimum_is_a_tenth_of_the_lr_at_lowest_loss():
    assert minimum(LRS, LOSSES)[0] == pytest.approx(LRS[7] / 10)


def test_steep_is_the_steepest_descent_in_log_lr():
    # loss differences: -1, 2, -3, -1, 0.5, -1.5, -0.5, 2.5, 5 -> steepest at index 2
    assert steep(LRS, LOSSES) == (LRS[2], 2)


def test_slide_stops_at_once_on_a_straight_line():
    lrs = 10.0 ** np.linspace(-6, 0, 40)
    losses = np.linspace(3.0, 1.0, 40)  # constant gradient: the first comparison already passes
    assert slide(lrs, losses) == (lrs[40 - 16], 40 - 16)


def test_slide_walks_left_while_the_gradient_keeps_changing():
    lrs = 10.0 ** np.linspace(-6, 0, 40)
    losses = np.r_[np.full(20, 1.0), 1.0 + 0.05 * np.arange(1, 21) ** 2]  # flat, then curving up
    suggestion, index = slide(lrs, losses)
    gradient = np.gradient(losses)
    # the walk stops at the first pair (k, k + 15), from the right, whose gradients agree
    k = max(k for k in range(25) if abs(gradient[k + 15] - gradient[k]) <= 0.005)
    assert index == k + 1 and suggestion == lrs[k + 1]


def test_suggestions_use_trimmed_curve_and_stop_at_nan():
    lrs = list(10.0 ** np.linspace(-7, 1, 100))
    losses = [10.0] * 10 + list(np.linspace(9, 1, 60)) + [float("nan")] * 30
    result = LRFinderResult.from_curve(lrs, losses, num_it=100)
    trimmed_lrs, trimmed_losses = result.trimmed()
    assert len(trimmed_losses) == 60 and not np.isnan(trimmed_losses).any()
    assert trimmed_lrs[0] == lrs[10]
    # one strictly decreasing run over the whole trimmed curve: start -1, end 59
    sections = (59 - (-1)) / 3
    assert result.suggestions["valley"] == trimmed_lrs[-1 + int(sections) + int(sections / 2)]


def _closed_form(lo, hi, p):
    return lo + (hi - lo) * (1 - math.cos(math.pi * p)) / 2


@pytest.mark.parametrize("step", [0, 12, 25, 60, 99])
def test_one_cycle_closed_form(step):
    schedule = OneCycle(lr_max=0.5, total_steps=100)
    pos = step / 100
    if pos < 0.25:
        lr, mom = _closed_form(0.5 / 25, 0.5, pos / 0.25), _closed_form(0.95, 0.85, pos / 0.25)
    else:
        p = (pos - 0.25) / 0.75
        lr, mom = _closed_form(0.5, 0.5 / 1e5, p), _closed_form(0.85, 0.95, p)
    assert schedule.lr(step) == pytest.approx(lr, rel=1e-12)
    assert schedule.momentum(step) == pytest.approx(mom, rel=1e-12)


def test_one_cycle_endpoints():
    schedule = OneCycle(lr_max=1.0, total_steps=1000)
    assert schedule.lr(0) == pytest.approx(1 / 25) and schedule.momentum(0) == pytest.approx(0.95)
    assert schedule.lr(250) == pytest.approx(1.0) and schedule.momentum(250) == pytest.approx(0.85)
    # like fastai, the last iteration sits at pos (T-1)/T, just above lr_max / 1e5
    assert 1e-5 < schedule.lr(999) < 2e-5 and schedule.momentum(999) == pytest.approx(0.95, abs=1e-5)


def _tiny_module():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ClassifierModule(backbone, 4, 3)


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, 8, 8, generator=generator)
    y = torch.randint(0, 3, (24,), generator=generator)
    return DataLoader(TensorDataset(x, y, torch.arange(24)), batch_size=8)


class _Batches(torch.utils.data.Dataset):
    """Whole batches of ``_data``'s tensors, for lesionssl's batch samplers."""

    def __init__(self) -> None:
        self.x, self.y = next(iter(DataLoader(_data().dataset, batch_size=24)))[:2]

    def __getitem__(self, positions):
        return self.x[positions], self.y[positions], torch.as_tensor(positions)


def _batched_data():
    """``_data`` through a shuffled ``EpochBatchSampler`` (3 batches per epoch, a new order each epoch)."""
    return DataLoader(_Batches(), batch_size=None, sampler=EpochBatchSampler(24, 8, seed=0))


def test_one_cycle_callback_drives_adam_beta1():
    module, data = _tiny_module(), _data()
    callback = OneCycleCallback(OneCycle(1e-2, 2 * len(data)))
    make_trainer(RuntimeConfig(accelerator="cpu"), 2, [callback]).fit(module, data)
    applied = [(h["lr"], h["momentum"]) for h in callback.history]
    assert applied == [(callback.schedule.lr(i), callback.schedule.momentum(i)) for i in range(6)]
    group = module.persistent_optimizer().param_groups[0]
    assert group["betas"][0] == pytest.approx(callback.schedule.momentum(5))


def test_lr_finder_sweeps_exponentially_in_one_pass_and_restores_state():
    module, data = _tiny_module(), _data()
    optimizer = module.persistent_optimizer()
    make_trainer(RuntimeConfig(accelerator="cpu"), 1).fit(module, data)  # give Adam some state
    before = {k: v.clone() for k, v in module.state_dict().items()}
    adam_before = {k: v.clone() for k, v in optimizer.state[next(iter(module.head.parameters()))].items()}

    epochs = []

    class Epochs(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            epochs.append(trainer.current_epoch)

    def fit(callbacks, max_epochs, loader):
        make_trainer(RuntimeConfig(accelerator="cpu"), max_epochs, [Epochs(), *callbacks]).fit(module, loader)

    result = run_lr_finder(fit, module, _batched_data(), num_it=20, stop_div=False)
    assert len(result.lrs) == 20 and epochs == [0]  # 20 iterations over 3-batch epochs, in one Lightning epoch
    np.testing.assert_allclose(result.lrs, [1e-7 * (10 / 1e-7) ** (i / 20) for i in range(20)], rtol=1e-9)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)  # weights and BN running stats
    for key, value in optimizer.state[next(iter(module.head.parameters()))].items():
        torch.testing.assert_close(value, adam_before[key])


def test_lr_finder_smoothing_is_debiased_ema():
    module = _tiny_module()
    recorded = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            recorded.append(float(outputs["loss"]))

    def fit(callbacks, epochs, loader):
        make_trainer(RuntimeConfig(accelerator="cpu"), epochs, [Spy(), *callbacks]).fit(module, loader)

    result = run_lr_finder(fit, module, _batched_data(), num_it=6, stop_div=False)
    average, expected = 0.0, []
    for i, loss in enumerate(recorded[:6], start=1):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98**i))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-6)


def _official_lars_step(params, grads, lr, wd, momentum, eta, exclude, buffers):
    """A plain transcription of the official step for one group, as an oracle."""
    for i, (p, g) in enumerate(zip(params, grads)):
        d = g.clone()
        if not exclude:
            d = d + wd * p
            pn, dn = p.norm(), d.norm()
            d = d * (eta * pn / dn if pn > 0 and dn > 0 else 1.0)
        buffers[i] = momentum * buffers[i] + d
        p -= lr * buffers[i]


def test_lars_matches_the_official_update_and_excludes_1d_parameters():
    from lesionssl.optim.lars import LARS, lars_param_groups

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = lars_param_groups(model, lr_weights=0.2, lr_biases=0.0048)
    assert (
        all(p.ndim > 1 for p in groups[0]["params"])
        and all(p.ndim == 1 for p in groups[1]["params"])
        and groups[1]["exclude"]
    )
    optimizer = LARS(groups, lr=0.2, weight_decay=1e-2, momentum=0.9, eta=0.001)
    reference = [[p.detach().clone() for p in g["params"]] for g in groups]
    buffers = [[torch.zeros_like(p) for p in g] for g in reference]
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 5)).pow(2).sum().backward()
        for g, ref, buf in zip(optimizer.param_groups, reference, buffers):
            _official_lars_step(ref, [p.grad for p in g["params"]], g["lr"], 1e-2, 0.9, 0.001, g["exclude"], buf)
        optimizer.step()
        for g, ref in zip(optimizer.param_groups, reference):
            for p, r in zip(g["params"], ref):
                torch.testing.assert_close(p.detach(), r)


def test_warmup_cosine_official_shape():
    from lesionssl.optim.one_cycle import WarmupCosine

    schedule = WarmupCosine(total_steps=110, warmup_steps=10)
    assert (
        schedule.factor(0) == 0
        and schedule.factor(5) == pytest.approx(0.5)
        and schedule.factor(10) == pytest.approx(1.0)
    )
    assert schedule.factor(60) == pytest.approx(0.5 + 0.001 * 0.5)
    assert schedule.factor(110) == pytest.approx(0.001)


def test_sweep_reads_the_loaders_epochs_in_order_without_moving_its_epoch():
    sampler = EpochBatchSampler(10, 4, seed=3, drop_last=True)
    sampler.set_epoch(7)
    expected = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        expected += list(sampler)
    sampler.set_epoch(7)
    assert list(SweepSampler(sampler, 7)) == expected[:7] and len(SweepSampler(sampler, 7)) == 7
    assert sampler.epoch == 7


#: The finder's suggestion on a fixed tiny run, recorded with the epoch-by-epoch sweep it replaced
#: (commit dc21820): timm's test ResNet at 16 px, 8 labels per class, seed 0, and 100 iterations
#: that span 100 one-batch epochs (batch 64) or 25 four-batch epochs stopped by divergence (batch 16).
RECORDED_FINDER = {
    64: (0.001737800828749376, 100, 1.4359824657440186, 0.9961806866552193),
    16: (0.001737800828749376, 97, 1.3847875595092773, 6.166778173424587),
}


@pytest.fixture
def two_threads():
    """The recording's 2 threads (a CI machine's cores), whatever the environment sets: float sums
    split across threads round differently, and a diverging sweep amplifies that into another LR."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("batch_size", sorted(RECORDED_FINDER))
def test_lr_finder_suggestion_is_unchanged_on_a_fixed_tiny_run(synthetic_manifest, tmp_path, batch_size, two_threads):
    import pandas as pd

    from lesionssl.config import FinetuneConfig, validate
    from lesionssl.experiment.finetune import finetune

    lr, points, first, last = RECORDED_FINDER[batch_size]
    config = validate(
        FinetuneConfig,
        {
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "ft"),
            "backbone": "timm:test_resnet",
            "image_size": 16,
            "batch_size": batch_size,
            "epochs": 1,
            "init": "random",
            "lr": "find",
            "tracking": {"tensorboard": False, "mlflow": False},
        },
    )
    assert finetune(config)["lr"] == pytest.approx(lr, rel=1e-9)
    curve = pd.read_csv(tmp_path / "ft" / "lr_finder.csv")
    assert len(curve) == points
    assert curve["smoothed_loss"].iloc[0] == pytest.approx(first, rel=1e-5) and curve["smoothed_loss"].iloc[
        -1
    ] == pytest.approx(last, rel=1e-5)


def test_the_terminal_progress_bar_counts_epochs_from_1_and_shows_the_logged_metrics(tmp_path):
    """Once the bar showed no loss or metric at all and counted epochs from 0."""
    from lesionssl.engine.callbacks import EpochLine, EpochProgressBar
    from lesionssl.progress import LOG_FILE, run_log

    module, data = _tiny_module(), _data()
    bar = EpochProgressBar()
    with run_log(tmp_path):  # a terminal: the bar on screen, the epoch lines in log.txt only
        L.Trainer(
            max_epochs=2,
            callbacks=[bar, EpochLine(on_screen=False)],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            accelerator="cpu",
        ).fit(module, data)
    assert bar.train_progress_bar.desc.startswith("epoch 2/2")
    shown = bar.get_metrics(bar.trainer, module)
    assert "train_loss" in shown and float(shown["train_loss"]) == pytest.approx(
        float(bar.trainer.callback_metrics["train_loss"]), rel=1e-3
    )
    logged = (tmp_path / LOG_FILE).read_text().splitlines()
    assert logged[0].startswith("--- ") and [line.split()[1] for line in logged[1:]] == ["1/2", "2/2"]
    assert all("train_loss" in line for line in logged[1:])


def test_lr_auto_is_a_fixed_lr_on_small_training_sets_and_the_finder_above(synthetic_manifest, tmp_path):
    """Measured on 25 labels per class (EVIDENCE.md): a fixed 1e-3 beat the finder by +0.05."""
    import json

    from lesionssl.config import SMALL_DATA_LR, SMALL_TRAINING_SET, FinetuneConfig, describe_lr, resolve_lr, validate
    from lesionssl.experiment.finetune import finetune

    assert validate(FinetuneConfig, {}).lr == "auto"
    assert (
        resolve_lr("auto", SMALL_TRAINING_SET) == SMALL_DATA_LR and resolve_lr("auto", SMALL_TRAINING_SET + 1) == "find"
    )
    assert resolve_lr("find", 10) == "find" and resolve_lr(0.01, 10) == 0.01
    assert "lr auto" in describe_lr("auto")
    config = validate(
        FinetuneConfig,
        {
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "ft"),
            "backbone": "timm:test_resnet",
            "image_size": 16,
            "epochs": 1,
            "init": "random",
            "figures": False,
            "tracking": {"tensorboard": False, "mlflow": False},
        },
    )
    metrics = finetune(config)
    assert (
        metrics["lr"] == SMALL_DATA_LR
        and metrics["lr_setting"] == SMALL_DATA_LR
        and not (tmp_path / "ft" / "lr_finder.csv").exists()
    )
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["lr_setting"] == SMALL_DATA_LR
    assert f"a fixed LR of {SMALL_DATA_LR:g} (no LR finder)" in (tmp_path / "ft" / "MODEL_CARD.md").read_text()
