"""Faults with real processes: SIGKILL at several moments of the store build, ``finetune`` and
``compare`` (alone, ``--jobs 2``, two shards at once), SIGTERM, and concurrent processes. Each
ends, after the command is run again, with what an uninterrupted run gives.

Pretraining kills (warm-up, LR finder, epochs) are in test_resume.py. The runs use timm's
``test_resnet`` (0.4 M parameters) at 16 px, so every process is quick. The process under test
is a real one; the uninterrupted references and the runs that finish the work afterwards (what
a user does by running the command again) run in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from lesionssl.engine.callbacks import Stopwatch
from lesionssl.layout import BACKBONE_RECORD
from lesionssl.records import BackboneRecord, RunResult

from conftest import CliResult, lesionssl

pytestmark = pytest.mark.slow  # real processes killed at chosen moments

TINY = {
    "backbone": "timm:test_resnet",
    "image_size": 16,
    "batch_size": 16,
    "tracking": {"mlflow": False, "tensorboard": False},
}


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lesionssl", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(*args) -> CliResult:
    result = lesionssl(*args)
    assert result.returncode == 0, result.stderr
    return result


def kill_when(process: subprocess.Popen, moment, signum: int = signal.SIGKILL, timeout: float = 300) -> tuple[str, str]:
    """Send ``signum`` as soon as ``moment()`` holds; return the process's output."""
    deadline = time.time() + timeout
    while not moment():
        assert process.poll() is None, f"the process ended before the moment: {process.communicate()}"
        assert time.time() < deadline, "the moment never came"
        time.sleep(0.01)
    process.send_signal(signum)
    return process.communicate(timeout=120)


def _history_rows(path: Path, stage: str) -> int:
    try:
        return int((pd.read_csv(path)["stage"] == stage).sum())
    except (FileNotFoundError, pd.errors.EmptyDataError, KeyError):
        return 0


# The store ---------------------------------------------------------------------------------------


def test_store_build_killed_midway_is_rebuilt_whole(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    cache = Path(os.environ["LESIONSSL_CACHE"])
    before = set(cache.glob("*.npy"))
    args = (
        "pretrain",
        "--data",
        folder,
        "--backbone",
        "timm:test_resnet",
        "--image-size",
        64,
        "--epochs",
        1,
        "--batch-size",
        64,
        "--lr",
        "0.001",
        "--projector",
        8,
        "--tracking.mlflow",
        "false",
        "--tracking.tensorboard",
        "false",
    )
    kill_when(start(*args, "--out", tmp_path / "a"), lambda: any(cache.glob("*.partial")))
    assert set(cache.glob("*.npy")) == before, "a killed build must not leave a store that looks finished"
    finish(*args, "--out", tmp_path / "a", "--resume")
    (store,) = set(cache.glob("*.npy")) - before
    assert not list(cache.glob("*.partial"))  # the killed build's partial file was deleted
    from lesionssl.data.store import decode_for_store

    stored = np.load(store)
    for i in (0, 150, 299):  # every row holds its decoded image, also those after the kill
        np.testing.assert_array_equal(stored[i], decode_for_store(str(folder / f"{i:03d}.png"), stored.shape[1]))


# finetune ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetune_reference(synthetic_manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    config = folder / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY, "init": "random", "epochs": 4, "lr": "find", "seed": 5}))
    finish("finetune", "--config", config, "--manifest", synthetic_manifest, "--out", folder / "ref")
    return config, folder / "ref"


FINETUNE_MOMENTS = {
    "lr-finder": lambda out: (
        out / "checkpoints" / "stages.json"
    ).is_file(),  # the head epoch is saved, the finder runs
    "one-cycle-epoch": lambda out: _history_rows(out / "history.csv", "one_cycle") >= 2,
    "evaluation": lambda out: _history_rows(out / "history.csv", "one_cycle") >= 4,  # trained: the test evaluation runs
    "writing-outputs": lambda out: (out / "config.yaml").is_file(),  # the first output written
}


@pytest.mark.parametrize("moment", list(FINETUNE_MOMENTS))
def test_finetune_killed_and_run_again_equals_uninterrupted(finetune_reference, synthetic_manifest, tmp_path, moment):
    config, reference = finetune_reference
    out = tmp_path / "ft"
    args = ("finetune", "--config", config, "--manifest", synthetic_manifest, "--out", out)
    kill_when(start(*args), lambda: FINETUNE_MOMENTS[moment](out))
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    again = finish(*args)
    assert "resuming the interrupted run" in again.stderr
    assert not (out / "checkpoints").exists()  # the training state goes once the model is saved
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), pd.read_csv(reference / "predictions.csv"))
    history, expected = pd.read_csv(out / "history.csv"), pd.read_csv(reference / "history.csv")
    pd.testing.assert_frame_equal(history[["stage", "epoch", "train_loss"]], expected[["stage", "epoch", "train_loss"]])


# compare -----------------------------------------------------------------------------------------


def _experiment(folder: Path, manifest: Path, name: str) -> Path:
    config = folder / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "manifest": str(manifest),
                "out": str(folder / name),
                "initialisations": [{"name": "random", "init": "random"}, {"name": "ssl", "init": "pretrain"}],
                "seeds": [0, 1, 2],
                "pretrain": {"image_size": 16, "epochs": 2, "batch_size": 16, "projector": [16], "lr": 0.001},
                "finetune": {**TINY, "epochs": 2, "lr": 0.002, "figures": False},
            }
        )
    )
    return config


def _results(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "results.csv")
    return table.drop(columns=["run_dir"]).sort_values(["init", "seed"]).reset_index(drop=True)


def _trained(*outputs: str) -> list[str]:
    """The runs each process reports it trained (``<init> <protocol> seed <k>: accuracy ...``)."""
    return sorted(
        line.split(":")[0].strip() for output in outputs for line in output.splitlines() if "balanced accuracy" in line
    )


@pytest.fixture(scope="module")
def compare_reference(synthetic_manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    finish("compare", "--config", _experiment(folder, synthetic_manifest, "ref"))
    return _results(folder / "ref")


def _finished_runs(out: Path) -> int:
    return len(list((out / "runs").glob("*/*/metrics.json")))


@pytest.mark.parametrize("jobs", [1, 2])
def test_compare_killed_and_run_again_equals_uninterrupted(compare_reference, synthetic_manifest, tmp_path, jobs):
    config = _experiment(tmp_path, synthetic_manifest, "cmp")
    out = tmp_path / "cmp"
    kill_when(start("compare", "--config", config, "--jobs", jobs), lambda: _finished_runs(out) >= 2)
    assert _finished_runs(out) < 6
    again = finish("compare", "--config", config, "--jobs", jobs)
    assert "finished earlier: skipped" in again.stderr
    pd.testing.assert_frame_equal(_results(out), compare_reference)


def test_two_shards_at_once_share_the_pretraining_and_train_every_run_once(
    compare_reference, synthetic_manifest, tmp_path
):
    """Two shards started together, one of them killed mid-way and started again, then two
    unsharded processes at once on what is left: every run is trained once, the pretraining once."""
    config = _experiment(tmp_path, synthetic_manifest, "cmp")
    out = tmp_path / "cmp"
    first, second = (
        start("compare", "--config", config, "--shard", "1/2"),
        start("compare", "--config", config, "--shard", "2/2"),
    )
    killed = kill_when(second, lambda: _finished_runs(out) >= 2)
    # the runs finished when the kill came: none may be trained again (the killed shard may have
    # finished one without printing its line: a kill between its metrics.json and the print)
    finished = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/*/metrics.json")}
    outputs = [*first.communicate(timeout=600), *killed]
    assert first.returncode == 0, outputs[1]
    trained_before = _trained(*outputs)
    both = [start("compare", "--config", config), start("compare", "--config", config)]
    outputs += [text for process in both for text in process.communicate(timeout=600)]
    assert all(process.returncode == 0 for process in both), outputs
    pretrainings = sum(text.count("pretraining (") for text in outputs)
    assert pretrainings == 1, outputs
    trained = _trained(*outputs)
    assert len(trained) == len(set(trained)), f"a run trained twice: {trained}"
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in finished.items()), "a finished run was trained again"
    assert _finished_runs(out) == 6 and len(trained) >= 6 - 1, f"every run trained once: {trained}"
    assert set(trained_before) < set(trained)
    pd.testing.assert_frame_equal(_results(out), compare_reference)


# Stopping on purpose -----------------------------------------------------------------------------


def test_sigterm_during_pretraining_prints_the_resume_command_that_finishes_it(synthetic_manifest, tmp_path):
    config = tmp_path / "bt.yaml"
    config.write_text(yaml.safe_dump({**TINY, "epochs": 4, "projector": [16], "lr": 0.001}))
    args = ("pretrain", "--config", config, "--manifest", synthetic_manifest)
    finish(*args, "--out", tmp_path / "ref")
    out = tmp_path / "bt"
    process = start(*args, "--out", out)
    _, err = kill_when(process, lambda: _history_rows(out / "history.csv", "pretrain") >= 1, signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("lesionssl pretrain") and command.endswith("--resume")
    kept = _kept_seconds(out)
    finish(*command.split()[1:])
    from safetensors.torch import load_file

    # backbone.json's seconds count the stopped process's kept time, not only the resumed one's
    assert BackboneRecord.read(out / BACKBONE_RECORD).seconds >= kept > 0

    resumed, reference = (
        load_file(str(out / "backbone.safetensors")),
        load_file(str(tmp_path / "ref" / "backbone.safetensors")),
    )
    assert all(np.array_equal(resumed[k].numpy(), reference[k].numpy()) for k in reference)


def test_ctrl_c_during_finetune_prints_the_command_that_resumes_it(finetune_reference, synthetic_manifest, tmp_path):
    config, reference = finetune_reference
    out = tmp_path / "ft"
    process = start("finetune", "--config", config, "--manifest", synthetic_manifest, "--out", out)
    _, err = kill_when(process, lambda: (out / "checkpoints" / "last.ckpt").is_file(), signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("lesionssl finetune --config")
    assert (out / "checkpoints" / "last.ckpt").is_file()  # a resumable checkpoint is left
    kept = _kept_seconds(out)
    finish(*command.split()[1:])
    assert RunResult.read(out).seconds >= kept > 0  # metrics.json counts the stopped process's kept time
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), pd.read_csv(reference / "predictions.csv"))


def _kept_seconds(out: Path) -> float:
    """The seconds a stopped run carries to the process that resumes it: in its epoch checkpoint,
    or, when it stopped before the first one, after its last finished stage."""
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        return torch.load(last, map_location="cpu", weights_only=True)["callbacks"][Stopwatch.__qualname__]["seconds"]
    return json.loads((out / "checkpoints" / "stages.json").read_text())["seconds"]


def test_sigterm_stops_compare_with_jobs_and_its_workers(synthetic_manifest, tmp_path):
    config = _experiment(tmp_path, synthetic_manifest, "cmp")
    out = tmp_path / "cmp"
    process = start("compare", "--config", config, "--jobs", 2)
    started = time.time()
    _, err = kill_when(process, lambda: _finished_runs(out) >= 1, signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM and time.time() - started < 300, err
    assert "Traceback" not in err and "lesionssl compare --config" in err
    time.sleep(1)
    workers = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout.split()
    assert not [pid for pid in workers if _parent(int(pid)) == process.pid], "workers outlived the stopped compare"
    finish("compare", "--config", config, "--jobs", 2)
    assert _finished_runs(out) == 6


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
