"""Contrastive loss (Hadsell et al. 2006): hand-computed values, PML per-pair terms, gradients, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss as PMLContrastive
from pytorch_metric_learning.reducers import DoNothingReducer

from hdml.core.registry import get_loss
from loss_cases import BAD_M_PER_CLASS_BATCHES

Loss = get_loss("contrastive")


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(7, 3)), np.array([0, 0, 0, 1, 1, 2, 2])


def hand_loss(z: np.ndarray, y: np.ndarray, margin: float, reduction: str) -> tuple[float, int, int]:
    """Plain loops over the unordered pairs; also counts negatives inside / outside the margin."""
    total, pairs, inside, outside = 0.0, 0, 0, 0
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            d = math.sqrt(sum((z[i, k] - z[j, k]) ** 2 for k in range(z.shape[1])))
            if y[i] == y[j]:
                total += 0.5 * d * d
            else:
                total += 0.5 * max(0.0, margin - d) ** 2
                inside, outside = inside + (d < margin), outside + (d >= margin)
            pairs += 1
    return (total / pairs if reduction == "mean" else total), inside, outside


def test_registration_and_paper_defaults():
    assert Loss.sampler == "m_per_class"
    assert Loss.defaults == {"margin": 1.0, "reduction": "mean"}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("margin", [1.0, 2.5])
def test_matches_hand_computation(reduction, margin):
    z, y = batch()
    expected, inside, outside = hand_loss(z, y, margin, reduction)
    if margin == 2.5:  # the batch must exercise both sides of the negative hinge
        assert inside > 0 and outside > 0
    ours = Loss(margin=margin, reduction=reduction)(torch.tensor(z), torch.tensor(y))
    assert abs(ours.item() - expected) < 1e-6


def test_matches_pml_per_pair_terms():
    # PML's ContrastiveLoss with pos_margin=0, neg_margin=m and unnormalised Euclidean
    # LpDistance gives per ordered pair D (positives) and relu(m - D) (negatives); Hadsell's loss
    # halves and squares these terms. With DoNothingReducer we get those terms unreduced, and
    # the mean over ordered pairs equals our mean over unordered pairs (each counted twice).
    # PML's default AvgNonZeroReducer (separate non-zero means of positives and negatives,
    # unsquared) is a different objective by design.
    z, y = batch(1)
    zt, yt = torch.tensor(z), torch.tensor(y)
    pml = PMLContrastive(pos_margin=0, neg_margin=2.0, distance=LpDistance(normalize_embeddings=False),
                         reducer=DoNothingReducer())
    terms = pml(zt, yt)
    pos, neg = terms["pos_loss"]["losses"], terms["neg_loss"]["losses"]
    assert len(pos) + len(neg) == len(y) * (len(y) - 1)
    reference = (0.5 * pos.pow(2).sum() + 0.5 * neg.pow(2).sum()) / (len(pos) + len(neg))
    assert abs(Loss(margin=2.0)(zt, yt).item() - reference.item()) < 1e-6


def test_gradients_finite_even_for_coincident_points():
    z, y = batch(2)
    z[1] = z[0]  # a positive pair at distance 0
    z[5] = z[3]  # a negative pair at distance 0 (sqrt not differentiable there)
    zt = torch.tensor(z, requires_grad=True)
    loss = Loss()(zt, torch.tensor(y))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zt.grad).all()
    assert zt.grad.abs().sum() > 0


def test_zero_loss_and_gradient_when_positives_coincide_and_negatives_beyond_margin():
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)  # >= 3 apart > margin 1
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    z = centres[y].clone().requires_grad_(True)
    loss = Loss()(z, y)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("z, y, match", BAD_M_PER_CLASS_BATCHES)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="contrastive.reduction"):
        Loss(reduction="max")
    with pytest.raises(ValueError, match="contrastive.margin"):
        Loss(margin=-1.0)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Loss(pos_margin=0.0)
