"""Lifted structured loss (Song et al. 2016): hand-computed values, PML LiftedStructureLoss,
gradients, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import GeneralizedLiftedStructureLoss, LiftedStructureLoss

from hdml.core.registry import get_loss

Loss = get_loss("lifted")


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(7, 3)), np.array([0, 0, 0, 1, 1, 2, 2])


def hand_loss(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, int]:
    """Plain loops over unordered positive pairs; also counts the pairs inside the hinge."""

    def dist(i: int, j: int) -> float:
        return math.sqrt(sum((z[i, k] - z[j, k]) ** 2 for k in range(z.shape[1])))

    total, pairs, active = 0.0, 0, 0
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            if y[i] != y[j]:
                continue
            s = sum(math.exp(alpha - dist(i, k)) for k in range(len(z)) if y[k] != y[i])
            s += sum(math.exp(alpha - dist(j, k)) for k in range(len(z)) if y[k] != y[j])
            j_ij = math.log(s) + dist(i, j)
            total += max(0.0, j_ij) ** 2
            pairs += 1
            active += j_ij > 0
    return total / (2 * pairs), active


def test_registration_and_paper_defaults():
    assert Loss.sampler == "m_per_class"
    assert Loss.defaults == {"margin": 1.0}


@pytest.mark.parametrize("seed, scale, margin", [(0, 1.0, 1.0), (1, 3.0, 1.0), (2, 1.0, 0.5)])
def test_matches_hand_computation(seed, scale, margin):
    z, y = batch(seed)
    z = z * scale
    expected, active = hand_loss(z, y, margin)
    ours = Loss(margin=margin)(torch.tensor(z), torch.tensor(y)).item()
    assert active > 0
    assert abs(ours - expected) < 1e-6


def test_hinge_cuts_some_pairs_and_matches_hand():
    z, y = batch(4)
    z[1] = z[0] + 0.01  # a tight positive pair
    z[3:] *= 6  # negatives far away: that pair's J_ij < 0
    expected, active = hand_loss(z, y, 1.0)
    assert 0 < active < 4  # 4 positive pairs, not all active
    assert abs(Loss()(torch.tensor(z), torch.tensor(y)).item() - expected) < 1e-6


def test_agrees_with_pml_lifted_structure_loss():
    # PML LiftedStructureLoss(neg_margin=1, pos_margin=0) is the original (Song et al.) loss
    # per ordered positive pair, relu(logsumexp(1 - D_neg of both ends) + D_pos)^2 / 2, with
    # MeanReducer over ordered pairs = our 1/(2|P|) sum over unordered pairs. Distance must be
    # LpDistance(normalize_embeddings=False): Song et al. do not normalise (PML's default does).
    # PML's GeneralizedLiftedStructureLoss (Hermans et al.) is a different loss.
    z, y = batch(5)
    zt, yt = torch.tensor(z), torch.tensor(y)
    ours = Loss()(zt, yt).item()
    pml = LiftedStructureLoss(neg_margin=1, pos_margin=0, distance=LpDistance(normalize_embeddings=False))
    assert abs(ours - pml(zt, yt).item()) < 1e-6
    generalized = GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0,
                                                 distance=LpDistance(normalize_embeddings=False))
    assert abs(ours - generalized(zt, yt).item()) > 1e-3


def test_gradients_finite_even_for_coincident_points():
    z, y = batch(6)
    z[1] = z[0]  # D_ij = 0 for a positive pair: sqrt not differentiable there
    z[3] = z[2]  # and for a negative pair
    zt = torch.tensor(z, requires_grad=True)
    loss = Loss()(zt, torch.tensor(y))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zt.grad).all() and zt.grad.abs().sum() > 0


def test_zero_loss_and_gradient_when_positives_coincide_and_negatives_are_far():
    # J_ij = log(sum exp(1 - D_neg)) + 0 <= 0 once sum exp(1 - D) <= 1: negatives 10 apart.
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    z = centres[y].clone().requires_grad_(True)
    loss = Loss()(z, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize(
    "z, y, match",
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), "no positive pair"),
        (torch.randn(4, 3), torch.tensor([2, 2, 2, 2]), "single class"),
        (torch.randn(4), torch.tensor([0, 0, 1, 1]), "2-D"),
    ],
)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="lifted.margin"):
        Loss(margin=-1.0)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Loss(alpha=1.0)
