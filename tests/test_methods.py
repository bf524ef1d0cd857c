"""VICReg and SimCLR losses against element-wise readings of their papers, against lightly, under
DDP; the method registry and its validation."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lesionssl.errors import LesionSSLError
from lesionssl.pretraining.methods import METHODS, get_method
from lesionssl.pretraining.methods.simclr import nt_xent_loss
from lesionssl.pretraining.methods.vicreg import vicreg_loss


def vicreg_paper(z_a, z_b, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    """Bardes et al. 2022, Eq. 1-6, element by element in float64."""
    z_a, z_b = z_a.double().tolist(), z_b.double().tolist()
    n, d = len(z_a), len(z_a[0])

    def mean(values):
        return sum(values) / len(values)

    def variance(z):
        out = 0.0
        for j in range(d):
            m = mean([z[i][j] for i in range(n)])
            var = sum((z[i][j] - m) ** 2 for i in range(n)) / (n - 1)
            out += max(0.0, gamma - math.sqrt(var + eps))
        return out / d

    def covariance(z):
        means = [mean([z[i][j] for i in range(n)]) for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    c = sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1)
                    total += c * c
        return total / d

    invariance = sum((z_a[i][j] - z_b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    return lam * invariance + mu * (variance(z_a) + variance(z_b)) / 2 + nu * (covariance(z_a) + covariance(z_b))


def nt_xent_paper(z_a, z_b, tau):
    """Chen et al. 2020, Eq. 1 averaged over all 2N anchors, in float64."""
    z = torch.cat([z_a, z_b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = len(z_a)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator)
    return total / (2 * n)


def test_vicreg_matches_the_paper():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(10, 5) * 0.5, torch.randn(10, 5) * 2 + 1
    result = vicreg_loss(z_a, z_b)
    assert result.loss.item() == pytest.approx(vicreg_paper(z_a, z_b), rel=1e-5)
    terms = result.terms
    assert result.loss.item() == pytest.approx((25 * terms["invariance"] + 25 * terms["variance"] + terms["covariance"]).item(), rel=1e-6)
    assert vicreg_loss(z_a, z_b, 1.0, 2.0, 3.0, 0.5, 1e-3).loss.item() == pytest.approx(vicreg_paper(z_a, z_b, 1.0, 2.0, 3.0, 0.5, 1e-3), rel=1e-5)


def test_nt_xent_matches_the_paper():
    torch.manual_seed(1)
    z_a, z_b = torch.randn(6, 4), torch.randn(6, 4)
    for tau in (0.1, 0.5):
        assert nt_xent_loss(z_a, z_b, tau).loss.item() == pytest.approx(nt_xent_paper(z_a, z_b, tau), rel=1e-5)


def test_losses_agree_with_lightly():
    lightly_loss = pytest.importorskip("lightly.loss")
    torch.manual_seed(2)
    z_a, z_b = torch.randn(32, 16), torch.randn(32, 16)
    vicreg = lightly_loss.VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0, eps=1e-4)
    assert vicreg_loss(z_a, z_b).loss.item() == pytest.approx(vicreg(z_a, z_b).item(), rel=1e-5)
    ntxent = lightly_loss.NTXentLoss(temperature=0.1)
    assert nt_xent_loss(z_a, z_b, 0.1).loss.item() == pytest.approx(ntxent(z_a, z_b).item(), rel=1e-5)
    barlow = lightly_loss.BarlowTwinsLoss(lambda_param=0.0051)
    assert get_method("barlow_twins", {"projector": [16]}).loss(z_a, z_b).loss.item() == pytest.approx(barlow(z_a, z_b).item(), rel=1e-4)


def test_vicreg_keeps_collapsed_embeddings_penalised():
    z = torch.zeros(8, 4)
    result = vicreg_loss(z, z)
    assert result.terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6) and torch.isfinite(result.loss)


def test_losses_stay_float32_under_autocast():
    torch.manual_seed(3)
    z_a, z_b = torch.randn(16, 32), torch.randn(16, 32)
    for name in METHODS:
        method = get_method(name, {"projector": [32]})
        exact = method.loss(z_a, z_b).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = method.loss(z_a.bfloat16(), z_b.bfloat16()).loss
        assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(exact.item(), rel=2e-2), name


def test_registry_validates_hyperparameters_in_one_line():
    assert set(METHODS) == {"barlow_twins", "vicreg", "simclr"}
    assert get_method("simclr").resolved() == {"projector": [2048, 128], "temperature": 0.1}
    assert get_method("vicreg").settings.projector == [8192, 8192, 8192]
    with pytest.raises(LesionSSLError, match=r"unknown method 'byol'; choose from barlow_twins, vicreg, simclr"):
        get_method("byol")
    with pytest.raises(LesionSSLError, match=r"temprature: unknown key \(allowed: projector, temperature\)"):
        get_method("simclr", {"temprature": 0.2})
    with pytest.raises(LesionSSLError, match="temperature"):
        get_method("simclr", {"temperature": -1})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))


def _worker(rank, world, port, name, x_a, x_b, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    part = slice(rank * len(x_a) // world, (rank + 1) * len(x_a) // world)
    loss = get_method(name, {"projector": [8]}).loss(model(x_a[part]), model(x_b[part])).loss
    loss.backward()
    if rank == 0:  # numpy arrays pickle by value (tensors would share a descriptor that dies here)
        queue.put((loss.item(), [p.grad.numpy().copy() for p in model.parameters()]))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["vicreg", "simclr"])
def test_two_process_ddp_equals_one_process_on_the_combined_batch(name):
    torch.manual_seed(5)
    x_a, x_b = torch.randn(16, 10), torch.randn(16, 10)
    model = _model()
    reference = get_method(name, {"projector": [8]}).loss(model(x_a), model(x_b)).loss
    reference.backward()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, name, x_a, x_b, queue)) for r in range(2)]
    for p in procs:
        p.start()
    loss, grads = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    assert loss == pytest.approx(reference.item(), rel=1e-5)
    for got, want in zip(grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4)


def test_lesion_positives_pair_two_images_of_a_lesion_seeded_by_epoch():
    import numpy as np

    from lesionssl.data.loaders import EpochBatchSampler, group_partners

    groups = np.array(["a", "a", "b", "c", "c", "c", "d"])
    sampler = EpochBatchSampler(len(groups), 3, seed=4, partners=group_partners(groups))
    pairs = [pair for batch in sampler for pair in batch]
    assert sorted(p for p, _ in pairs) == list(range(7))
    for anchor, partner in pairs:
        assert groups[anchor] == groups[partner]
        assert (anchor == partner) == (groups[anchor] in ("b", "d"))  # alone: two views of itself
    assert list(sampler) == list(sampler)  # same (seed, epoch), same pairs: exact resume
    epochs = set()
    for epoch in range(8):
        sampler.set_epoch(epoch)
        epochs.add(tuple(sorted(pair for batch in sampler for pair in batch)))
    assert len(epochs) > 1  # partners are drawn anew each epoch


def test_pretraining_with_lesion_positives_records_cross_image_pairs(synthetic_manifest, tmp_path):
    import json

    import pandas as pd

    from lesionssl.config import PretrainConfig, validate
    from lesionssl.pretraining.run import pretrain

    table = pd.read_csv(synthetic_manifest, dtype=str, keep_default_na=False)
    pool = table.index[table["pretrain"] == "1"]
    table.loc[pool[:40], "group"] = [f"lesion{i // 2}" for i in range(40)]  # 20 lesions photographed twice
    table.to_csv(tmp_path / "grouped.csv", index=False)
    (tmp_path / "grouped.json").write_text(synthetic_manifest.with_suffix(".json").read_text())
    settings = {"manifest": str(tmp_path / "grouped.csv"), "out": str(tmp_path / "bt"), "image_size": 32, "epochs": 1, "batch_size": 32, "projector": [64, 64], "positives": "lesion"}
    for method in ("barlow_twins", "vicreg", "simclr"):
        config = validate(PretrainConfig, {**settings, "method": method, "out": str(tmp_path / method), **({"lambd": 0.01} if method == "barlow_twins" else {})})
        meta = json.loads(pretrain(config).with_suffix(".json").read_text())
        assert meta["positives"] == "lesion" and meta["cross_image_pairs_per_epoch"] == 40 and meta["method"] == method
        history = pd.read_csv(tmp_path / method / "history.csv")
        assert np.isfinite(history["loss"]).all() and {"pretrain"} == set(history["stage"])
