"""Barlow Twins loss against a straightforward reading of the paper, and under DDP."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lesionssl.pretraining.methods.barlow_twins import barlow_twins_loss


def paper_loss(z_a, z_b, lambd, eps=1e-5):
    """Zbontar et al. Eq. 1-2 written out element by element in float64."""
    z_a, z_b = z_a.double(), z_b.double()
    n, d = z_a.shape
    norm = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)  # noqa: E731
    a, b = norm(z_a), norm(z_b)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return loss


def test_matches_paper_formula():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(12, 6), torch.randn(12, 6) * 3 + 1
    terms = barlow_twins_loss(z_a, z_b, lambd=0.0051)
    assert terms.loss.item() == pytest.approx(paper_loss(z_a, z_b, 0.0051).item(), abs=1e-5)
    assert (terms.terms["invariance"] + 0.0051 * terms.terms["redundancy"]).item() == pytest.approx(terms.loss.item(), rel=1e-6)


def test_autocast_does_not_lower_the_precision_of_the_loss():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(64, 256), torch.randn(64, 256)
    z_b = z_a + 0.1 * z_b  # correlated views: a small loss, where bf16 rounding would show
    exact = barlow_twins_loss(z_a, z_b, lambd=1 / 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = barlow_twins_loss(z_a, z_b, lambd=1 / 256)
    assert mixed.loss.dtype == torch.float32
    assert mixed.loss.item() == pytest.approx(exact.loss.item(), rel=1e-5)
    assert mixed.terms["redundancy"].item() == pytest.approx(exact.terms["redundancy"].item(), rel=1e-5)


def test_invariant_to_per_feature_affine_change():
    torch.manual_seed(1)
    z_a, z_b = torch.randn(32, 16), torch.randn(32, 16)
    scale, shift = torch.rand(16) * 5 + 0.5, torch.randn(16) * 10
    base = barlow_twins_loss(z_a, z_b, 1 / 16).loss
    moved = barlow_twins_loss(z_a * scale + shift, z_b, 1 / 16).loss
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)


def test_views_are_standardised_separately():
    # Joint standardisation (lightly's bug before PR #1806) would see view b's offset.
    torch.manual_seed(2)
    z = torch.randn(64, 8)
    assert barlow_twins_loss(z, z + 100.0, 0.01).terms["invariance"].item() == pytest.approx(0.0, abs=1e-3)


def test_constant_feature_gives_finite_loss_and_gradient():
    z_a = torch.randn(8, 4, requires_grad=True)
    z_b = torch.randn(8, 4)
    z_b[:, 2] = 3.0
    terms = barlow_twins_loss(z_a, z_b, 0.1)
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and torch.isfinite(z_a.grad).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))


def _worker(rank, world, port, x_a, x_b, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    part = slice(rank * len(x_a) // world, (rank + 1) * len(x_a) // world)
    loss = barlow_twins_loss(model(x_a[part]), model(x_b[part]), 0.02).loss
    loss.backward()
    if rank == 0:
        # numpy arrays pickle by value; torch tensors would be shared through a file descriptor
        # that dies with this process
        queue.put((loss.item(), [p.grad.numpy().copy() for p in model.parameters()]))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_ddp_equals_one_process_on_the_combined_batch():
    torch.manual_seed(5)
    x_a, x_b = torch.randn(16, 10), torch.randn(16, 10)
    model = _model()
    reference = barlow_twins_loss(model(x_a), model(x_b), 0.02).loss
    reference.backward()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, x_a, x_b, queue)) for r in range(2)]
    for p in procs:
        p.start()
    loss, grads = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    assert loss == pytest.approx(reference.item(), abs=1e-4)
    for got, want in zip(grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=1e-4)
