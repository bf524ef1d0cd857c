"""The contract every registered method keeps, parametrised over the registry (a new method gets
these tests for free): a finite loss, gradients on every learnable parameter and on no target,
DDP equal to one process on the combined batch, settings that round-trip through the backbone
record, and exact resume after a kill."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file
from torch import nn

from lesionssl.pretraining.methods import METHODS, get_method
from lesionssl.pretraining.module import SelfSupervisedModule
from lesionssl.records import BackboneRecord

from conftest import lesionssl

SMALL = {"projector": [16, 8]}
#: Hyperparameters that make each method small; a method whose heads have other widths adds its own.
SMALL_KWARGS = {"byol": {"projector": [16, 8], "predictor": [16, 8]}}


def small(name: str):
    return get_method(name, SMALL_KWARGS.get(name, SMALL))


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 6))


def _views(n: int = 16, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 10, generator=generator) for _ in range(2)]


@pytest.mark.parametrize("name", list(METHODS))
def test_loss_is_finite_and_its_terms_are_logged_scalars(name):
    method = small(name)
    module = SelfSupervisedModule(_encoder(), method, in_dim=6)
    result = method.training_loss(module.backbone, _views())
    assert result.loss.ndim == 0 and torch.isfinite(result.loss)
    assert all(value.ndim == 0 and torch.isfinite(value) for value in result.terms.values())


@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_reach_every_learnable_parameter_and_no_target(name):
    method = small(name)
    module = SelfSupervisedModule(_encoder(), method, in_dim=6)
    method.training_loss(module.backbone, _views()).loss.backward()
    learnable = [p for group in module.param_groups() for p in group["params"]]
    assert {id(p) for p in learnable} == {
        id(p) for p in module.parameters() if p.requires_grad
    }  # the optimiser sees them all
    for p in learnable:
        assert p.grad is not None and p.grad.abs().sum() > 0
    targets = [p for _, target in method.momentum_pairs(module.backbone) for p in target.parameters()]
    assert not {id(p) for p in targets} & {id(p) for p in learnable}
    for p in targets:
        assert p.grad is None and not p.requires_grad


@pytest.mark.parametrize("name", list(METHODS))
def test_targets_follow_their_online_modules_by_the_methods_momentum(name):
    method = small(name)
    module = SelfSupervisedModule(_encoder(), method, in_dim=6)
    pairs = method.momentum_pairs(module.backbone)
    with torch.no_grad():
        for online, _ in pairs:
            for p in online.parameters():
                p.add_(1.0)
    before = [[p.clone() for p in target.parameters()] for _, target in pairs]
    everything = {k: v.clone() for k, v in module.state_dict().items()}
    method.update_momentum(module.backbone, 0.3)
    tau = method.momentum(0.3)
    if not pairs:  # a method without targets: the update changes nothing
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, everything[key])
    for (online, target), old in zip(pairs, before, strict=True):
        for p_online, p_target, p_old in zip(online.parameters(), target.parameters(), old, strict=True):
            torch.testing.assert_close(p_target, tau * p_old + (1 - tau) * p_online)


@pytest.mark.parametrize("name", list(METHODS))
def test_resolved_settings_round_trip_through_the_backbone_record(name, tmp_path):
    method = small(name)
    record = BackboneRecord(
        architecture="resnet18",
        image_size=16,
        normalize="auto",
        preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"},
        pool="inductive",
        pool_images=10,
        init={"init": "random"},
        epochs=1,
        recipe="small-data",
        method=name,
        method_kwargs=method.resolved(),
    )
    record.write(tmp_path / "backbone.json")
    read = BackboneRecord.read(tmp_path / "backbone.json")
    assert read == record and get_method(read.method, read.method_kwargs).resolved() == method.resolved()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Step(nn.Module):
    """One training step's loss as a forward, so DDP reduces the gradients of every trained part."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.backbone, self.method = _encoder(), small(name)
        self.method.setup(self.backbone, 6)
        torch.manual_seed(7)  # the heads' weights, identical in every process
        for p in self.method.learnable_params():
            p.data.normal_(0, 0.3)
        self.method.update_momentum(self.backbone, 0.0, tau=0.0)
        self.eval()  # BatchNorm with running statistics: DDP without SyncBN equals one process only then

    def forward(self, view_a, view_b):
        return self.method.training_loss(self.backbone, [view_a, view_b]).loss


def _worker(rank, world, port, name, views, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    step = _Step(name)
    model = nn.parallel.DistributedDataParallel(step)
    part = slice(rank * len(views[0]) // world, (rank + 1) * len(views[0]) // world)
    loss = model(views[0][part], views[1][part])
    loss.backward()
    if rank == 0:  # numpy arrays pickle by value
        queue.put((loss.item(), [p.grad.numpy().copy() for p in step.parameters() if p.requires_grad]))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("name", list(METHODS))
def test_two_process_ddp_equals_one_process_on_the_combined_batch(name):
    views = _views()
    step = _Step(name)
    reference = step(*views)
    reference.backward()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, name, views, queue)) for r in range(2)]
    for p in procs:
        p.start()
    loss, grads = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    assert loss == pytest.approx(reference.item(), rel=1e-5)
    want = [p.grad for p in step.parameters() if p.requires_grad]
    assert len(grads) == len(want)
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-5, rtol=1e-4)


# timm's test_resnet keeps each process quick; 3 epochs so the kill lands in the main stage.
RESUME = {
    "backbone": "timm:test_resnet",
    "image_size": 16,
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.001,
    "projector_warmup_epochs": 1,
    "seed": 5,
    "tracking": {"mlflow": False, "tensorboard": False},
}


@pytest.mark.slow  # real processes, one killed
@pytest.mark.parametrize(
    "name", [n for n in METHODS if n != "barlow_twins"]
)  # Barlow Twins: test_resume.py, at every stage
def test_killed_and_resumed_run_equals_uninterrupted_run(name, synthetic_manifest, tmp_path):
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({**RESUME, "method": name, "method_kwargs": SMALL_KWARGS.get(name, {"projector": [32, 32]})})
    )

    def command(out, *extra):
        return [
            "pretrain",
            "--config",
            str(tmp_path / "run.yaml"),
            "--manifest",
            str(synthetic_manifest),
            "--out",
            str(out),
            *extra,
        ]

    reference = lesionssl(*command(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "lesionssl", *command(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "backbone.safetensors").exists(), "the run finished before it could be killed"
    resumed = lesionssl(*command(out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(str(tmp_path / "reference" / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)


def test_the_cli_knows_every_registered_method_without_importing_torch():
    from lesionssl.pretraining import method_names

    assert set(method_names()) == set(METHODS)  # one file per method, named as its registry entry
    result = lesionssl("pretrain", "--help")
    assert result.returncode == 0 and all(name in result.stdout for name in METHODS)
