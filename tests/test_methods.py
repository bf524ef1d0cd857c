"""VICReg, SimCLR and BYOL against element-wise readings of their papers and against lightly; the
method registry and its validation (the contract every method keeps: test_method_contract.py)."""

import copy
import math

import numpy as np
import pytest
import torch

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
    assert result.loss.item() == pytest.approx(
        (25 * terms["invariance"] + 25 * terms["variance"] + terms["covariance"]).item(), rel=1e-6
    )
    assert vicreg_loss(z_a, z_b, 1.0, 2.0, 3.0, 0.5, 1e-3).loss.item() == pytest.approx(
        vicreg_paper(z_a, z_b, 1.0, 2.0, 3.0, 0.5, 1e-3), rel=1e-5
    )


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
    assert get_method("barlow_twins", {"projector": [16]}).loss(z_a, z_b).loss.item() == pytest.approx(
        barlow(z_a, z_b).item(), rel=1e-4
    )


def byol_paper(p_a, p_b, t_a, t_b):
    """Grill et al. 2020, Eq. 2 (normalised squared error) summed over both directions (Eq. 4),
    each averaged over the batch, element by element in float64."""

    def direction(p, t):
        total = 0.0
        for row_p, row_t in zip(p.double().tolist(), t.double().tolist(), strict=True):
            norm_p, norm_t = math.sqrt(sum(x * x for x in row_p)), math.sqrt(sum(x * x for x in row_t))
            total += sum((a / norm_p - b / norm_t) ** 2 for a, b in zip(row_p, row_t, strict=True))
        return total / len(p)

    return direction(p_a, t_b) + direction(p_b, t_a)


def test_byol_loss_matches_the_paper_and_lightly():
    from lesionssl.pretraining.methods.byol import byol_loss

    torch.manual_seed(4)
    p_a, p_b, t_a, t_b = (torch.randn(7, 5) for _ in range(4))
    assert byol_loss(p_a, p_b, t_a, t_b).loss.item() == pytest.approx(byol_paper(p_a, p_b, t_a, t_b), rel=1e-5)
    lightly_loss = pytest.importorskip("lightly.loss")
    negative_cosine = lightly_loss.NegativeCosineSimilarity()  # lightly's BYOL loss: -cos, mean over the batch
    expected = (2 + 2 * negative_cosine(p_a, t_b)) + (2 + 2 * negative_cosine(p_b, t_a))
    assert byol_loss(p_a, p_b, t_a, t_b).loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_byol_target_gets_no_gradient_through_the_loss():
    from lesionssl.pretraining.methods.byol import byol_loss

    p_a, p_b = (torch.randn(4, 3, requires_grad=True) for _ in range(2))
    t_a, t_b = (torch.randn(4, 3, requires_grad=True) for _ in range(2))
    byol_loss(p_a, p_b, t_a, t_b).loss.backward()
    assert p_a.grad is not None and t_a.grad is None and t_b.grad is None


def test_byol_heads_momentum_and_schedule_match_lightly():
    heads = pytest.importorskip("lightly.models.modules.heads")
    from lightly.models.utils import update_momentum
    from lightly.utils.scheduler import cosine_schedule

    from lesionssl.pretraining.methods.base import cosine_momentum

    method = get_method("byol", {"projector": [32, 8], "predictor": [16, 8]})
    encoder = torch.nn.Linear(6, 12)
    method.setup(encoder, 12)
    torch.manual_seed(5)
    x = torch.randn(10, 12)
    for ours, theirs in (
        (method.projector, heads.BYOLProjectionHead(12, 32, 8)),
        (method.predictor, heads.BYOLPredictionHead(8, 16, 8)),
    ):
        theirs.load_state_dict(
            dict(zip(theirs.state_dict(), ours.state_dict().values(), strict=True))
        )  # same layers, same order
        ours.train(), theirs.train()
        torch.testing.assert_close(
            ours(x if ours is method.projector else x[:, :8]), theirs(x if ours is method.projector else x[:, :8])
        )
    # lightly's update_momentum on copies of the same modules gives the same targets
    online, target = copy.deepcopy(method.projector), copy.deepcopy(method.target_projector)
    with torch.no_grad():
        for p in method.projector.parameters():
            p.add_(0.5)
        for p in online.parameters():
            p.add_(0.5)
    method.update_momentum(encoder, progress=0.0)
    update_momentum(online, target, m=0.99)
    for mine, reference in zip(method.target_projector.parameters(), target.parameters(), strict=True):
        torch.testing.assert_close(mine, reference)
    # the cosine schedule from tau_base to 1: step k of K at progress k / (K - 1), as lightly's
    for k in range(10):
        assert cosine_momentum(0.99, k / 9) == pytest.approx(cosine_schedule(k, 10, 0.99, 1.0), abs=1e-12)


def test_vicreg_keeps_collapsed_embeddings_penalised():
    z = torch.zeros(8, 4)
    result = vicreg_loss(z, z)
    assert result.terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6) and torch.isfinite(
        result.loss
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_losses_stay_float32_under_autocast(name):
    torch.manual_seed(3)
    method = get_method(name, {"projector": [32], **({"predictor": [32]} if name == "byol" else {})})
    encoder = torch.nn.Linear(8, 8)
    method.setup(encoder, 8)
    method.eval()  # BatchNorm-free heads here; eval keeps both passes identical
    views = [torch.randn(16, 8), torch.randn(16, 8)]
    exact = method.training_loss(encoder, views).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method.training_loss(encoder, views).loss
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(exact.item(), rel=3e-2), name


def test_registry_validates_hyperparameters_in_one_line():
    assert set(METHODS) == {"barlow_twins", "vicreg", "simclr", "byol"}
    assert get_method("simclr").resolved() == {"projector": [2048, 128], "temperature": 0.1}
    assert get_method("vicreg").settings.projector == [8192, 8192, 8192]
    with pytest.raises(LesionSSLError, match=r"unknown method 'dino'; choose from barlow_twins, vicreg, simclr, byol"):
        get_method("dino")
    with pytest.raises(LesionSSLError, match=r"predictor.*must equal the projector's"):
        get_method("byol", {"projector": [64, 32], "predictor": [64, 16]})
    with pytest.raises(LesionSSLError, match=r"temprature: unknown key \(allowed: projector, temperature\)"):
        get_method("simclr", {"temprature": 0.2})
    with pytest.raises(LesionSSLError, match="temperature"):
        get_method("simclr", {"temperature": -1})


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
    settings = {
        "manifest": str(tmp_path / "grouped.csv"),
        "out": str(tmp_path / "bt"),
        "image_size": 32,
        "epochs": 1,
        "batch_size": 32,
        "projector": [64, 64],
        "positives": "lesion",
    }
    for method in ("barlow_twins", "vicreg", "simclr"):
        config = validate(
            PretrainConfig,
            {
                **settings,
                "method": method,
                "out": str(tmp_path / method),
                **({"lambd": 0.01} if method == "barlow_twins" else {}),
            },
        )
        meta = json.loads(pretrain(config).with_suffix(".json").read_text())
        assert meta["positives"] == "lesion" and meta["cross_image_pairs_per_epoch"] == 40 and meta["method"] == method
        history = pd.read_csv(tmp_path / method / "history.csv")
        assert np.isfinite(history["loss"]).all() and {"pretrain"} == set(history["stage"])
