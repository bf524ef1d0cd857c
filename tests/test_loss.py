"""Barlow Twins loss against a straightforward reading of the paper (under DDP: test_method_contract.py)."""

import pytest
import torch

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
    assert (terms.terms["invariance"] + 0.0051 * terms.terms["redundancy"]).item() == pytest.approx(
        terms.loss.item(), rel=1e-6
    )


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
