"""Exact resume: a pretraining run killed mid-way and resumed ends with the same weights."""

import math
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from lesionssl.config import PretrainConfig, validate
from lesionssl.engine import callbacks
from lesionssl.engine.modules import PersistentAdamModule
from lesionssl.engine.stages import Stages
from lesionssl.errors import LesionSSLError
from lesionssl.pretraining import run as pretrain_run
from lesionssl.pretraining.monitor import effective_rank, knn_accuracy, normalised_std

from conftest import lesionssl

# timm's test_resnet (0.4 M parameters) keeps every process quick.
CONFIG = "backbone: timm:test_resnet\nimage_size: 16\nepochs: 4\nbatch_size: 16\nprojector: [32, 32]\nlr: 0.001\nprojector_warmup_epochs: 1\nseed: 3\ntracking: {mlflow: false, tensorboard: false}\n"


def _pretrain(config_file, out, *extra):
    return ["pretrain", "--config", str(config_file), "--manifest", str(pytest.manifest), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs, one per distinct configuration, each trained once for the module."""
    made: dict[str, object] = {}

    def reference(settings: dict):
        text = yaml.safe_dump(settings)
        if text not in made:
            folder = tmp_path_factory.mktemp("reference")
            (folder / "bt.yaml").write_text(text)
            result = lesionssl(*_pretrain(folder / "bt.yaml", folder / "out"))
            assert result.returncode == 0, result.stderr
            made[text] = folder / "out"
        return made[text]

    return reference


@pytest.fixture
def config_file(tmp_path, synthetic_manifest):
    pytest.manifest = synthetic_manifest
    path = tmp_path / "bt.yaml"
    path.write_text(CONFIG)
    return path


def _rows(out, stage):
    history = out / "history.csv"
    try:
        return int((pd.read_csv(history)["stage"] == stage).sum())
    except (FileNotFoundError, pd.errors.EmptyDataError, KeyError):
        return 0


def _in_warmup(out):
    """One of two projector-only epochs is done."""
    return _rows(out, "warmup") >= 1


def _in_lr_finder(out):
    """The warm-up is saved, the LR not yet: the finder is running."""
    return (out / "checkpoints" / "stages.json").is_file()


def _in_main_stage(out):
    """The first epoch's checkpoint is written (its history row comes just before it)."""
    return _rows(out, "pretrain") >= 1 and (out / "checkpoints" / "last.ckpt").is_file()


def _after_last_epoch(out):
    """Every epoch is logged: the last checkpoint, the plot and the export follow."""
    return _rows(out, "pretrain") >= 4


MOMENTS = {
    "warm-up": (_in_warmup, {"projector_warmup_epochs": 2}),
    "lr-finder": (_in_lr_finder, {"lr": "find", "epochs": 2}),
    "main-stage": (_in_main_stage, {}),
    "last-epoch-and-export": (_after_last_epoch, {}),
}


@pytest.mark.slow  # a real process, killed
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_and_resumed_run_equals_uninterrupted_run(config_file, references, tmp_path, moment):
    """SIGKILL at each stage of pretraining (an earlier lesionssl found another LR after a kill
    in the LR finder, lost every epoch after a kill in the main stage, and started the first
    resumed epoch with the previous epoch's batch order). The killed run is a real process; the
    uninterrupted reference and the resumed run need none."""
    moment, changes = MOMENTS[moment]
    settings = {**yaml.safe_load(CONFIG), **changes}
    config_file.write_text(yaml.safe_dump(settings))
    reference = references(settings)

    out = tmp_path / "b"
    process = subprocess.Popen(
        [sys.executable, "-m", "lesionssl", *_pretrain(config_file, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while time.time() < deadline and not moment(out):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "backbone.safetensors").exists(), "the run finished before it could be killed"

    resumed = lesionssl(*_pretrain(config_file, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert (
        yaml.safe_load((out / "config.yaml").read_text())["resolved"]["lr"]
        == yaml.safe_load((reference / "config.yaml").read_text())["resolved"]["lr"]
    )
    a, b = load_file(str(reference / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)
    history = pd.read_csv(out / "history.csv")
    assert list(history.loc[history["stage"] == "pretrain", "epoch"]) == list(
        range(settings["epochs"])
    )  # no duplicated epochs
    assert {"embedding_std", "effective_rank"} <= set(history.columns)


def test_rerun_without_resume_is_refused(config_file, tmp_path):
    (tmp_path / "c" / "checkpoints").mkdir(parents=True)
    (tmp_path / "c" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    config = validate(PretrainConfig, {"manifest": str(pytest.manifest), "out": str(tmp_path / "c")})
    with pytest.raises(LesionSSLError, match="--resume"):
        pretrain_run.pretrain(config)


def test_non_finite_loss_stops_with_a_clear_message(config_file, tmp_path):
    config = validate(
        PretrainConfig,
        {
            "manifest": str(pytest.manifest),
            "out": str(tmp_path / "d"),
            "image_size": 32,
            "epochs": 1,
            "batch_size": 32,
            "projector": [16],
            "lr": 1e30,
            "projector_warmup_epochs": 0,
        },
    )
    with pytest.raises(LesionSSLError, match="the loss became"):
        pretrain_run.pretrain(config)
    assert not (tmp_path / "d" / "backbone.safetensors").exists()


def test_collapse_indicators():
    torch.manual_seed(0)
    healthy = torch.randn(256, 32)
    collapsed = torch.randn(256, 1) * torch.ones(1, 32) + 1e-4 * torch.randn(256, 32)
    assert normalised_std(healthy) > 0.9 and normalised_std(torch.ones(256, 32)) < 1e-6
    assert effective_rank(healthy) > 25 and effective_rank(collapsed) < 2.0
    assert math.isclose(effective_rank(torch.eye(8).repeat(4, 1) - 0.125), 7.0, rel_tol=1e-3)


def test_knn_accuracy_on_separable_clusters():
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 5
    train_labels, query_labels = torch.arange(60) % 3, torch.arange(30) % 3
    train = centres[train_labels] + torch.randn(60, 16)
    query = centres[query_labels] + torch.randn(30, 16)
    assert knn_accuracy(train, train_labels, query, query_labels, k=5) == 1.0
    assert knn_accuracy(train, train_labels, query, (query_labels + 1) % 3, k=5) == 0.0


def test_checkpoints_from_before_methods_owned_their_heads_still_load():
    """Older checkpoints name the projector ``projector.*``; it now lives in the method."""
    from lesionssl.models.backbones import build_backbone
    from lesionssl.pretraining.methods import get_method
    from lesionssl.pretraining.module import SelfSupervisedModule

    def module():
        backbone, _ = build_backbone("timm:test_resnet", "random")
        return SelfSupervisedModule(backbone, get_method("barlow_twins", {"projector": [16, 8]}))

    torch.manual_seed(3)
    old = {k.removeprefix("method."): v for k, v in module().state_dict().items()}
    assert "projector.0.weight" in old
    fresh = module()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.method.projector[0].weight, old["projector.0.weight"])


def test_a_resumed_runs_seconds_add_the_time_its_earlier_processes_kept(tmp_path, monkeypatch):
    """``seconds`` in backbone.json and model.json once counted only the last process of a
    resumed run. On a fake clock: the first process keeps 30 s in stages.json and 100 s in its
    epoch checkpoint, then loses 50 s to a kill; the second runs 40 s more."""
    now = [1000.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now[0])
    module = PersistentAdamModule()
    module.layer = torch.nn.Linear(2, 2)

    first = Stages(tmp_path, resume=False)
    now[0] += 30
    first.save(module, head_done=True)
    now[0] += 70
    checkpoint = first.stopwatch.state_dict()  # what Lightning writes in last.ckpt
    now[0] += 50  # killed before the next checkpoint: this work is redone

    now[0] = 5000.0
    second = Stages(tmp_path, resume=True)
    assert second.stopwatch.seconds == 30  # resumed after the stages, before any epoch checkpoint
    second.stopwatch.load_state_dict(checkpoint)  # Lightning restores the epoch checkpoint
    now[0] += 40
    assert second.stopwatch.seconds == 140

    fresh = Stages(tmp_path, resume=False)  # a new run starts from zero whatever the folder holds
    now[0] += 5
    assert fresh.stopwatch.seconds == 5
