"""The generator, the softmax classifier and J_recon / J_soft / J_gen of both protocols."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torch import nn

from baselines.hdml_generator import Generator, classifier, gen_loss, recon_loss, soft_loss
from hdml.model.embedding import TFBatchNorm1d


def test_generator_architecture() -> None:
    g = Generator(embedding_dim=8, feature_dim=1024)
    kinds = [type(m) for m in g.net]
    assert kinds == [nn.Linear, nn.ReLU, TFBatchNorm1d, nn.Linear]
    assert (g.net[0].in_features, g.net[0].out_features) == (8, 512)
    assert g.net[2].num_features == 512
    assert (g.net[3].in_features, g.net[3].out_features) == (512, 1024)
    out = g(torch.randn(5, 8))
    assert out.shape == (5, 1024)
    assert (out < 0).any()  # no output activation
    c = classifier(1024, 98)
    assert (c.in_features, c.out_features) == (1024, 98)


def test_recon_is_a_sum_not_a_mean() -> None:
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y_rec = torch.tensor([[0.0, 2.0], [3.0, 7.0]])
    assert recon_loss(y_rec, y).item() == 1.0 + 9.0


def test_soft_loss_is_mean_cross_entropy_like_sklearn() -> None:
    gen = torch.Generator().manual_seed(0)
    cls = classifier(6, 4)
    y = torch.randn(10, 6, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    probs = torch.softmax(cls(y).double(), 1).detach().numpy()
    probs /= probs.sum(1, keepdims=True)
    want = log_loss(labels.numpy(), probs, labels=[0, 1, 2, 3])
    assert soft_loss(cls, y, labels).item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("protocol", "recon", "softmax", "want"),
    [
        ("code", True, True, 0.5 * 10 + 1e4 * 0.5 * 0.2),  # (1 - lambda) J_recon + S lambda J_soft
        ("code", False, True, 1e4 * 0.5 * 0.2),
        ("code", True, False, 0.5 * 10),
        ("code", False, False, 0.0),
        ("paper", True, True, 10 + 0.5 * 0.2),  # J_recon + lambda J_soft
        ("paper", False, True, 0.5 * 0.2),
        ("paper", True, False, 10.0),
    ],
)
def test_gen_loss_formulas(protocol: str, recon: bool, softmax: bool, want: float) -> None:
    got = gen_loss(torch.tensor(10.0), torch.tensor(0.2), protocol=protocol, lam=0.5, scale=1e4,
                   recon=recon, softmax=softmax)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_gen_loss_other_lambda() -> None:
    got = gen_loss(torch.tensor(4.0), torch.tensor(2.0), protocol="code", lam=0.25, scale=100.0)
    assert got.item() == pytest.approx(0.75 * 4 + 100 * 0.25 * 2)


def test_an_ablated_term_cannot_leak_nan_but_an_active_one_is_reported() -> None:
    nan = torch.tensor(float("nan"))
    assert gen_loss(torch.tensor(3.0), nan, protocol="code", lam=0.5, scale=1e4, softmax=False).item() == 1.5
    assert math.isnan(gen_loss(torch.tensor(3.0), nan, protocol="code", lam=0.5, scale=1e4).item())


def test_unknown_protocol_is_named() -> None:
    with pytest.raises(ValueError, match="protocol"):
        gen_loss(torch.tensor(1.0), torch.tensor(1.0), protocol="tf", lam=0.5, scale=1.0)


def test_batchnorm_sees_real_and_synthetic_rows_together() -> None:
    """One forward of [z; z_hat]: the outputs for z depend on the synthetic rows (shared batch stats)."""
    torch.manual_seed(0)
    g = Generator(4, 6, hidden=16)
    z, s1, s2 = torch.randn(3, 4), torch.randn(5, 4), 3 + torch.randn(5, 4)
    out1, out2 = g(torch.cat([z, s1]))[:3], g(torch.cat([z, s2]))[:3]
    assert not np.allclose(out1.detach().numpy(), out2.detach().numpy())
