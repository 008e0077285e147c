"""N-pair loss (Sohn 2016, HDML authors' form): hand-computed values, PML NPairsLoss (+ its
LpRegularizer for the penalty), gradients, bad input."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import DotProductSimilarity
from pytorch_metric_learning.losses import NPairsLoss
from pytorch_metric_learning.regularizers import LpRegularizer

from hdml.core.registry import get_loss

Loss = get_loss("npair")


def batch(seed: int = 0, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rows [a_1..a_n; p_1..p_n], classes 10..10+n-1 in shuffled order."""
    rng = np.random.default_rng(seed)
    cls = rng.permutation(n) + 10
    return rng.normal(size=(2 * n, 3)), np.concatenate([cls, cls])


def dot(u: np.ndarray, v: np.ndarray) -> float:
    return sum(u[k] * v[k] for k in range(len(u)))


def hand_ce(z: np.ndarray) -> float:
    n = len(z) // 2
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(dot(z[i], z[n + j])) for j in range(n))
        total += -math.log(math.exp(dot(z[i], z[n + i])) / denom)
    return total / n


def hand_penalty(z: np.ndarray, l2_reg: float) -> float:
    n = len(z) // 2
    mean_a = sum(dot(z[i], z[i]) for i in range(n)) / n
    mean_p = sum(dot(z[n + i], z[n + i]) for i in range(n)) / n
    return 0.25 * l2_reg * (mean_a + mean_p)


def test_registration_and_authors_defaults():
    assert Loss.sampler == "npair"
    assert Loss.defaults == {"l2_reg": 3e-3}


@pytest.mark.parametrize("l2_reg", [3e-3, 0.5])
def test_matches_hand_computation(l2_reg):
    z, y = batch()
    expected = hand_ce(z) + hand_penalty(z, l2_reg)
    ours = Loss(l2_reg=l2_reg)(torch.tensor(z), torch.tensor(y))
    assert abs(ours.item() - expected) < 1e-6


def test_pairs_method_equals_forward():
    z, y = batch(2)
    zt = torch.tensor(z)
    loss = Loss()
    assert loss.pairs(zt[:4], zt[4:]).item() == loss(zt, torch.tensor(y)).item()


def test_pml_npairs_is_ours_without_the_l2_penalty():
    # PML NPairsLoss with DotProductSimilarity(normalize_embeddings=False) (its default
    # normalises, i.e. cosine logits, unlike Sohn and the authors), cross-entropy with
    # target = own positive, MeanReducer; on a batch of one pair per class it takes exactly our
    # pairs (a_i, p_i). It has no L2 penalty: ours - penalty == PML (by design).
    # Adding PML's LpRegularizer(p=2, power=2) (mean ||z||^2 over all 2N rows) with weight
    # l2_reg / 2 reproduces the penalty, 0.25 * l2_reg * (mean_a + mean_p) = 0.5 * l2_reg * mean_all.
    z, y = batch(1, n=5)
    zt, yt = torch.tensor(z), torch.tensor(y)
    ours = Loss(l2_reg=0.1)(zt, yt).item()
    raw_dot = DotProductSimilarity(normalize_embeddings=False)
    plain = NPairsLoss(distance=raw_dot)(zt, yt).item()
    assert abs(ours - hand_penalty(z, 0.1) - plain) < 1e-6
    assert abs(ours - plain) > 1e-3  # the penalty is not negligible here
    with_reg = NPairsLoss(
        distance=raw_dot, embedding_regularizer=LpRegularizer(p=2, power=2), embedding_reg_weight=0.05
    )(zt, yt)
    assert abs(ours - with_reg.item()) < 1e-6
    assert abs(Loss(l2_reg=0.0)(zt, yt).item() - plain) < 1e-6


def test_gradients_finite():
    z, y = batch(3)
    zt = torch.tensor(z, requires_grad=True)
    Loss()(zt, torch.tensor(y)).backward()
    assert torch.isfinite(zt.grad).all() and zt.grad.abs().sum() > 0


def test_no_margin_so_never_zero_but_exact_at_the_symmetric_point_and_vanishing_when_separated():
    # N-pair has no margin: -log softmax > 0 for any finite logits, so there is no "exactly
    # zero" configuration. Instead: at z = 0 all logits tie, the loss is exactly log N with zero
    # gradient (l2_reg = 0); and for pairs on orthogonal axes scaled by s it decreases to 0.
    n = 4
    y = torch.tensor([0, 1, 2, 3] * 2)
    z0 = torch.zeros(2 * n, 4, dtype=torch.float64, requires_grad=True)
    loss = Loss(l2_reg=0.0)(z0, y)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(n), abs=1e-12)
    assert torch.equal(z0.grad, torch.zeros_like(z0))
    axes = torch.eye(n, dtype=torch.float64).repeat(2, 1)
    values = [Loss(l2_reg=0.0)(s * axes, y).item() for s in (1.0, 2.0, 4.0, 8.0)]
    assert all(b < a for a, b in itertools.pairwise(values)) and values[-1] < 1e-20


@pytest.mark.parametrize(
    "z, y, match",
    [
        (torch.randn(7, 3), torch.tensor([0, 1, 2, 0, 1, 2, 3]), "2N rows"),
        (torch.randn(2, 3), torch.tensor([0, 0]), "N >= 2"),
        (torch.randn(6, 3), torch.tensor([0, 1, 2, 1, 0, 2]), "share a label"),
        (torch.randn(6, 3), torch.tensor([0, 0, 1, 0, 0, 1]), "distinct classes"),
        (torch.randn(6, 3, 1), torch.tensor([0, 1, 2, 0, 1, 2]), "2-D"),
    ],
)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


def test_bad_blocks_and_hyperparameters_raise():
    with pytest.raises(ValueError, match="one embedding size"):
        Loss().pairs(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="a positive for every anchor"):
        Loss().pairs(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="npair.l2_reg"):
        Loss(l2_reg=-1e-3)
