"""N-pair & angular loss (Wang et al. 2017): hand-computed values, PML AngularLoss + NPairsLoss,
gradients, bad input."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import DotProductSimilarity
from pytorch_metric_learning.losses import AngularLoss as PMLAngular
from pytorch_metric_learning.losses import NPairsLoss
from pytorch_metric_learning.regularizers import LpRegularizer

from hdml.core.registry import get_loss

Loss = get_loss("angular")
NPair = get_loss("npair")


def batch(seed: int = 0, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cls = rng.permutation(n)
    return rng.normal(size=(2 * n, 3)), np.concatenate([cls, cls])


def dot(u, v) -> float:
    return sum(u[k] * v[k] for k in range(len(u)))


def unit(u) -> list[float]:
    norm = math.sqrt(dot(u, u))
    return [x / norm for x in u]


def hand_angular_term(z: np.ndarray, alpha_deg: float, normalize: bool) -> float:
    n = len(z) // 2
    rows = [unit(r) if normalize else list(r) for r in z]
    t2 = math.tan(math.radians(alpha_deg)) ** 2
    total = 0.0
    for i in range(n):
        a, p = rows[i], rows[n + i]
        s = 0.0
        for j in range(n):
            if j != i:
                x_n = rows[n + j]
                f = 4 * t2 * dot([a[k] + p[k] for k in range(len(a))], x_n) - 2 * (1 + t2) * dot(a, p)
                s += math.exp(f)
        total += math.log(1 + s)
    return total / n


def hand_npair(z: np.ndarray, l2_reg: float) -> float:
    n = len(z) // 2
    ce = 0.0
    for i in range(n):
        logits = [dot(z[i], z[n + j]) for j in range(n)]
        ce += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    anchors, positives = (sum(dot(z[i], z[i]) for i in rows) / n for rows in (range(n), range(n, 2 * n)))
    pen = 0.25 * l2_reg * (anchors + positives)
    return ce / n + pen


def test_registration_and_defaults():
    assert Loss.sampler == "npair"
    assert Loss.defaults == {"alpha": 45.0, "lambda": 2.0, "l2_reg": 3e-3, "normalize": True}


@pytest.mark.parametrize(
    "alpha, lam, l2_reg, normalize",
    [(45.0, 2.0, 3e-3, True), (36.0, 0.5, 0.1, True), (55.0, 2.0, 0.0, False)],
)
def test_matches_hand_computation(alpha, lam, l2_reg, normalize):
    z, y = batch()
    expected = hand_npair(z, l2_reg) + lam * hand_angular_term(z, alpha, normalize)
    ours = Loss(alpha=alpha, **{"lambda": lam}, l2_reg=l2_reg, normalize=normalize)
    assert abs(ours(torch.tensor(z), torch.tensor(y)).item() - expected) < 1e-6


def test_is_npair_plus_lambda_times_the_angular_term():
    z, y = batch(1)
    zt, yt = torch.tensor(z), torch.tensor(y)
    without = Loss(**{"lambda": 0.0})(zt, yt).item()
    assert without == NPair()(zt, yt).item()
    assert Loss()(zt, yt).item() - without == pytest.approx(2 * hand_angular_term(z, 45.0, True), abs=1e-6)


def test_agrees_with_pml_angular_plus_npairs():
    # PML AngularLoss(alpha) called as loss(anchors, labels, ref_emb=positives, ref_labels=labels)
    # forms exactly our pairs (a_i, p_i), negatives p_j (j != i), log(1 + sum exp f) and a mean
    # over the N pairs. It L2-normalises anchors and positives but uses ref_emb as given for the
    # negatives, so it coincides with ours only when fed rows that are already normalised; on a
    # plain batch (no ref_emb) it would take all 2N ordered pairs and all 2N - 2 other-class rows
    # as negatives, a different set by design. The N-pair part is PML NPairsLoss with raw dot
    # products plus LpRegularizer(power=2) at weight l2_reg / 2 (see test_loss_npair).
    z, y = batch(2, n=5)
    zt, yt = torch.tensor(z), torch.tensor(y)
    n = len(y) // 2
    a_hat, p_hat = F.normalize(zt[:n], dim=1), F.normalize(zt[n:], dim=1)
    for alpha in (36.0, 45.0):
        ang = PMLAngular(alpha=alpha)(a_hat, yt[:n], ref_emb=p_hat, ref_labels=yt[n:])
        npair = NPairsLoss(
            distance=DotProductSimilarity(normalize_embeddings=False),
            embedding_regularizer=LpRegularizer(p=2, power=2),
            embedding_reg_weight=3e-3 / 2,
        )(zt, yt)
        ours = Loss(alpha=alpha)(zt, yt)
        assert abs(ours.item() - (npair.item() + 2.0 * ang.item())) < 1e-6
    plain_batch = PMLAngular(alpha=45.0)(torch.cat([a_hat, p_hat]), yt)
    assert abs(plain_batch.item() - hand_angular_term(z, 45.0, True)) > 1e-3


def test_gradients_finite_even_for_degenerate_rows():
    z, y = batch(3)
    z[0] = 0.0  # a zero embedding (normalisation) ...
    z[5] = z[4]  # ... and two coinciding rows
    zt = torch.tensor(z, requires_grad=True)
    loss = Loss()(zt, torch.tensor(y))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zt.grad).all() and zt.grad.abs().sum() > 0


def test_no_margin_so_never_zero_but_vanishing_when_separated():
    # log(1 + sum exp f) > 0 for finite f: the loss has no exactly-zero configuration. For pairs
    # with a_i = p_i on orthogonal axes, f_ij = -2(1 + tan^2 alpha) for every negative, so the
    # angular term is log(1 + (N-1) exp(-2 / cos^2 alpha)) exactly, whatever the scale, and the
    # N-pair term (l2_reg = 0) vanishes as the scale grows.
    n, alpha = 4, 45.0
    y = torch.tensor([0, 1, 2, 3] * 2)
    axes = torch.eye(n, dtype=torch.float64).repeat(2, 1)
    angular_only = math.log(1 + (n - 1) * math.exp(-2 / math.cos(math.radians(alpha)) ** 2))
    values = [Loss(l2_reg=0.0)(s * axes, y).item() for s in (1.0, 4.0, 16.0)]
    assert all(b < a for a, b in itertools.pairwise(values))
    assert values[-1] == pytest.approx(2.0 * angular_only, abs=1e-12)


@pytest.mark.parametrize(
    "z, y, match",
    [
        (torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 2]), "2N rows"),
        (torch.randn(2, 3), torch.tensor([0, 0]), "N >= 2"),
        (torch.randn(4, 3), torch.tensor([0, 1, 1, 0]), "share a label"),
        (torch.randn(4, 3), torch.tensor([1, 1, 1, 1]), "distinct classes"),
    ],
)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


@pytest.mark.parametrize("hparams, match", [({"alpha": 90.0}, "angular.alpha"), ({"alpha": 0.0}, "angular.alpha"),
                                           ({"lambda": -1.0}, "angular.lambda"), ({"l2_reg": -1.0}, "angular.l2_reg")])
def test_bad_hyperparameters_raise(hparams, match):
    with pytest.raises(ValueError, match=match):
        Loss(**hparams)
