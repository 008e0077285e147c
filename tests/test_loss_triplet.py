"""Triplet loss (HDML authors' form): hand-computed values, PML with matching reducers, gradients, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.reducers import MeanReducer, SumReducer

from hdml.core.registry import get_loss

Loss = get_loss("triplet")


def batch(seed: int = 0, t: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rows [anchors; positives; negatives] of t triplets."""
    rng = np.random.default_rng(seed)
    cls = np.arange(t) % 3
    return rng.normal(size=(3 * t, 3)), np.concatenate([cls, cls, (cls + 1) % 3])


def hand_terms(z: np.ndarray, margin: float) -> list[float]:
    t = len(z) // 3
    terms = []
    for i in range(t):
        a, p, n = z[i], z[t + i], z[2 * t + i]
        d_ap = sum((a[k] - p[k]) ** 2 for k in range(len(a)))
        d_an = sum((a[k] - n[k]) ** 2 for k in range(len(a)))
        terms.append(max(0.0, d_ap - d_an + margin))
    return terms


def test_registration_and_authors_defaults():
    assert Loss.sampler == "triplet"
    assert Loss.defaults == {"margin": 1.0, "reduction": "sum"}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_hand_computation(reduction):
    z, y = batch()
    terms = hand_terms(z, 1.0)
    assert 0 < sum(t > 0 for t in terms) < len(terms)  # both sides of the hinge are exercised
    expected = sum(terms) if reduction == "sum" else sum(terms) / len(terms)
    ours = Loss(reduction=reduction)(torch.tensor(z), torch.tensor(y))
    assert abs(ours.item() - expected) < 1e-6


def test_triplets_method_equals_forward():
    z, y = batch(3)
    zt = torch.tensor(z)
    loss = Loss()
    assert loss.triplets(zt[:4], zt[4:8], zt[8:]).item() == loss(zt, torch.tensor(y)).item()


def test_agrees_with_pml_and_differs_only_by_reduction():
    # PML TripletMarginLoss on our explicit triplets (indices_tuple), margin 1,
    # LpDistance(power=2, normalize_embeddings=False) = squared Euclidean on raw embeddings:
    # with SumReducer it is our `sum` (the authors'), with MeanReducer our `mean`. PML's
    # default AvgNonZeroReducer divides the sum by the number of non-zero terms instead.
    z, y = batch(0)
    zt, yt = torch.tensor(z), torch.tensor(y)
    t = len(z) // 3
    idx = (torch.arange(t), torch.arange(t, 2 * t), torch.arange(2 * t, 3 * t))
    dist = LpDistance(power=2, normalize_embeddings=False)
    pml_sum = TripletMarginLoss(margin=1.0, distance=dist, reducer=SumReducer())(zt, yt, idx)
    pml_mean = TripletMarginLoss(margin=1.0, distance=dist, reducer=MeanReducer())(zt, yt, idx)
    pml_default = TripletMarginLoss(margin=1.0, distance=dist)(zt, yt, idx)
    ours = Loss()(zt, yt)
    assert abs(ours.item() - pml_sum.item()) < 1e-6
    assert abs(Loss(reduction="mean")(zt, yt).item() - pml_mean.item()) < 1e-6
    nonzero = sum(term > 0 for term in hand_terms(z, 1.0))
    assert nonzero < t  # so the default reducer really differs from the mean
    assert abs(ours.item() / nonzero - pml_default.item()) < 1e-6


def test_gradients_finite():
    z, y = batch(5)
    zt = torch.tensor(z, requires_grad=True)
    Loss()(zt, torch.tensor(y)).backward()
    assert torch.isfinite(zt.grad).all() and zt.grad.abs().sum() > 0


def test_zero_loss_and_gradient_when_margin_satisfied():
    a = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    p = a + 0.1  # d_ap^2 = 0.02
    n = a + torch.tensor([1.5, 0.0], dtype=torch.float64)  # d_an^2 = 2.25 > 0.02 + 1
    z = torch.cat([a, p, n]).requires_grad_(True)
    loss = Loss()(z, torch.tensor([0, 1, 0, 1, 1, 0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize(
    "z, y, match",
    [
        (torch.randn(8, 3), torch.arange(8), "3T rows"),
        (torch.randn(0, 3), torch.zeros(0, dtype=torch.long), "3T rows"),
        (torch.randn(6, 3), torch.tensor([0, 1, 0, 2, 1, 0]), "anchor i and positive i"),
        (torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 2]), "negative i"),
        (torch.randn(6), torch.arange(6), "2-D"),
    ],
)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


def test_bad_blocks_and_hyperparameters_raise():
    with pytest.raises(ValueError, match="equal-shape"):
        Loss().triplets(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="triplet.reduction"):
        Loss(reduction="avg")
    with pytest.raises(ValueError, match="triplet.margin"):
        Loss(margin=-0.5)
