"""Semi-hard triplet loss (Schroff et al. 2015): hand-computed values, PML's semi-hard miner +
TripletMarginLoss, gradients, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import BatchEasyHardMiner
from pytorch_metric_learning.reducers import SumReducer

from hdml.core.registry import get_loss

Loss = get_loss("semihard")


# Seeds whose batches exercise what the tests need (asserted inside the tests): every mining
# branch for m = 3; some anchors without a semi-hard negative for m = 2.
SEED_ALL_BRANCHES = 0
SEED_PML = 1


def batch(seed: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), m)
    return rng.normal(size=(len(y), 2)), y


def hand_loss(z: np.ndarray, y: np.ndarray, margin: float, normalize: bool, fallback: str, reduction: str):
    """Plain loops: every ordered anchor-positive pair, its closest negative farther than the
    positive, else the farthest negative (fallback 'easiest') or nothing ('skip').
    Returns the loss and how many pairs took each branch."""
    if normalize:
        z = np.array([row / math.sqrt(sum(v * v for v in row)) for row in z])

    def sq(i: int, j: int) -> float:
        return sum((z[i, k] - z[j, k]) ** 2 for k in range(z.shape[1]))

    terms, branches = [], {"semi_active": 0, "semi_zero": 0, "fallback": 0}
    for a in range(len(z)):
        for p in range(len(z)):
            if p == a or y[p] != y[a]:
                continue
            d_ap = sq(a, p)
            negs = [sq(a, n) for n in range(len(z)) if y[n] != y[a]]
            semi = [d for d in negs if d > d_ap]
            if semi:
                term = max(0.0, d_ap - min(semi) + margin)
                branches["semi_active" if term > 0 else "semi_zero"] += 1
            else:
                branches["fallback"] += 1
                if fallback == "skip":
                    continue
                term = max(0.0, d_ap - max(negs) + margin)
            terms.append(term)
    total = sum(terms) if reduction == "sum" else sum(terms) / len(terms)
    return total, branches


def test_registration_and_paper_defaults():
    assert Loss.sampler == "m_per_class"
    assert Loss.defaults == {"margin": 0.2, "normalize": True, "reduction": "sum", "fallback": "easiest"}


@pytest.mark.parametrize("fallback", ["easiest", "skip"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("normalize, margin", [(True, 0.2), (False, 1.0)])
def test_matches_hand_computation(fallback, reduction, normalize, margin):
    z, y = batch(SEED_ALL_BRANCHES, m=3)
    expected, branches = hand_loss(z, y, margin, normalize, fallback, reduction)
    assert min(branches.values()) > 0, branches  # every branch of the mining is exercised
    ours = Loss(margin=margin, normalize=normalize, fallback=fallback, reduction=reduction)
    assert abs(ours(torch.tensor(z), torch.tensor(y)).item() - expected) < 1e-6



def test_agrees_with_pml_semihard_miner_on_two_per_class_batches():
    # With m = 2 each anchor has exactly one positive, so PML's BatchEasyHardMiner
    # (pos_strategy="easy" = that positive, neg_strategy="semihard" = the closest negative
    # farther than the positive, anchors without one dropped) mines exactly our triplets with
    # fallback="skip". Same distance as ours: LpDistance(power=2) = squared Euclidean on
    # L2-normalised embeddings (PML's default normalize_embeddings=True), margin 0.2, and
    # SumReducer (FaceNet's sum; PML's default AvgNonZeroReducer would differ).
    # For fallback="easiest" the dropped anchors get the farthest negative: PML's
    # neg_strategy="easy" miner supplies those triplets.
    dist = LpDistance(power=2)
    semi = BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard", distance=dist)
    easy = BatchEasyHardMiner(pos_strategy="easy", neg_strategy="easy", distance=dist)
    pml = TripletMarginLoss(margin=0.2, distance=dist, reducer=SumReducer())
    z, y = batch(SEED_PML, m=2)
    zt, yt = torch.tensor(z), torch.tensor(y)
    a, p, _, n = semi(zt, yt)
    dropped = torch.tensor([i for i in range(len(y)) if i not in set(a.tolist())], dtype=torch.long)
    assert 0 < len(dropped) < len(y)  # some anchors have no semi-hard negative
    reference_skip = pml(zt, yt, (a, p, n))
    assert abs(Loss(fallback="skip")(zt, yt).item() - reference_skip.item()) < 1e-6
    ea, ep, _, en = easy(zt, yt)
    keep = torch.isin(ea, dropped)
    triplets = (torch.cat([a, ea[keep]]), torch.cat([p, ep[keep]]), torch.cat([n, en[keep]]))
    reference_easiest = pml(zt, yt, triplets)
    assert reference_easiest.item() > reference_skip.item()
    assert abs(Loss()(zt, yt).item() - reference_easiest.item()) < 1e-6



def test_gradients_finite_even_for_duplicates():
    z, y = batch(3, m=3)
    z[1] = z[0]
    z[4] = z[0]  # a negative coinciding with an anchor
    z[7] = 0.0  # a zero embedding: L2 normalisation must not produce NaN
    zt = torch.tensor(z, requires_grad=True)
    loss = Loss()(zt, torch.tensor(y))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zt.grad).all()


def test_zero_loss_and_gradient_when_classes_are_separated_by_the_margin():
    angles = torch.tensor([0.0, 0.05, 2.0, 2.05, 4.0, 4.05], dtype=torch.float64)
    z = (torch.stack([angles.cos(), angles.sin()], 1) * 3).requires_grad_(True)  # norm 3: normalised away
    loss = Loss()(z, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize(
    "z, y, match",
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), "no positive pair"),
        (torch.randn(4, 3), torch.tensor([1, 1, 1, 1]), "single class"),
        (torch.randn(4, 3), torch.tensor([0, 0, 1]), "one entry per embedding row"),
    ],
)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="semihard.fallback"):
        Loss(fallback="hardest")
    with pytest.raises(ValueError, match="semihard.reduction"):
        Loss(reduction="avg")
    with pytest.raises(ValueError, match="semihard.margin"):
        Loss(margin=-0.2)
