"""The hardness-aware augmentor: the pulling rule with unsquared distances, triplet and N-pair tile."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.hdml_augmentor import augment_npair_tile, augment_triplets, hardness


def test_hardness_is_one_minus_exp_of_alpha_over_javg() -> None:
    assert hardness(7.0, 1e6) == pytest.approx(1 - math.exp(-7e-6), rel=1e-12)
    assert hardness(90.0, 45.0) == pytest.approx(1 - math.exp(-2), rel=1e-12)
    assert hardness(0.0, 3.0) == 0.0  # alpha = 0: no synthesis
    assert hardness(7.0, 0.0) == 1.0  # J_avg -> 0: the limit, no division by zero


def test_hand_computed_triplet() -> None:
    # a at the origin, d+ = 1, d- = 4 along the y axis: lambda0 = 0.5 puts n_hat at 2.5.
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [5.0, 0.0]])  # second triplet: d+ = 5 > d- = 4, already hard
    n = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    n_hat, moved = augment_triplets(a, p, n, 0.5)
    assert torch.allclose(n_hat[0], torch.tensor([0.0, 2.5]))
    assert torch.equal(n_hat[1], n[1])
    assert moved.tolist() == [True, False]


def _triplet_case(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Triplets in float64 with both orders of d+ and d- present."""
    a = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    spread = 6 * torch.rand(200, 1, generator=gen, dtype=torch.float64)
    p = a + 0.3 * spread * torch.randn(200, 5, generator=gen, dtype=torch.float64)
    n = a + torch.randn(200, 5, generator=gen, dtype=torch.float64)
    return a, p, n


@pytest.mark.parametrize("lam0", [1e-5, 0.3, 0.9])
def test_triplet_distance_is_interpolation_of_dpos_and_dneg(lam0: float) -> None:
    a, p, n = _triplet_case(torch.Generator().manual_seed(1))
    d_pos = (a - p).norm(dim=1)
    d_neg = (a - n).norm(dim=1)
    easy = d_pos < d_neg
    assert 20 < int(easy.sum()) < 180  # both branches exercised
    n_hat, moved = augment_triplets(a, p, n, lam0)
    assert torch.equal(moved, easy)
    got = (n_hat - a).norm(dim=1)
    want = lam0 * d_pos + (1 - lam0) * d_neg
    assert torch.allclose(got[easy], want[easy], rtol=0, atol=1e-6)
    # on the segment a -> n: same direction as n - a
    cos = torch.nn.functional.cosine_similarity(n_hat - a, n - a, dim=1)
    assert torch.allclose(cos[easy], torch.ones_like(cos[easy]), atol=1e-9)
    assert torch.equal(n_hat[~easy], n[~easy])


def test_npair_tile_matches_a_loop_over_anchors_and_candidates() -> None:
    gen = torch.Generator().manual_seed(2)
    N, lam0 = 6, 0.4
    a = torch.randn(N, 4, generator=gen, dtype=torch.float64)
    spread = torch.linspace(0.1, 1.5, N, dtype=torch.float64)[:, None]
    p = a + spread * torch.randn(N, 4, generator=gen, dtype=torch.float64)
    tile, moved = augment_npair_tile(a, p, lam0)
    assert tile.shape == (N, N, 4)
    an, pn, tn = a.numpy(), p.numpy(), tile.numpy()
    n_moved = 0
    for i in range(N):
        d_pos = np.linalg.norm(an[i] - pn[i])
        for j in range(N):
            d_neg = np.linalg.norm(an[i] - pn[j])
            if d_pos < d_neg:
                n_moved += 1
                assert moved[i, j]
                assert abs(np.linalg.norm(tn[i, j] - an[i]) - (lam0 * d_pos + (1 - lam0) * d_neg)) < 1e-6
                direction = (tn[i, j] - an[i]) / np.linalg.norm(tn[i, j] - an[i])
                assert np.allclose(direction, (pn[j] - an[i]) / d_neg, atol=1e-9)
            else:
                assert not moved[i, j]
                assert np.array_equal(tn[i, j], pn[j])
    assert 0 < n_moved < N * (N - 1)  # both branches exercised
    # j = i leaves p_i exactly, whatever lambda0
    for i in range(N):
        assert torch.equal(tile[i, i], p[i])


def test_zero_hardness_returns_the_originals_bit_for_bit() -> None:
    a, p, n = _triplet_case(torch.Generator().manual_seed(3))
    n_hat, moved = augment_triplets(a.float(), p.float(), n.float(), 0.0)
    assert torch.equal(n_hat, n.float()) and not moved.any()
    tile, moved = augment_npair_tile(a[:5].float(), p[:5].float(), 0.0)
    assert torch.equal(tile, p[:5].float().expand(5, 5, 5)) and not moved.any()


def test_gradient_flows_through_the_synthetic_negative() -> None:
    """No stop-gradient: n_hat depends on a, p and n, and autograd agrees with finite differences."""
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    p = a + 0.1 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    n = a + 2 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (a, p, n))
    assert augment_triplets(*inputs, 0.6)[1].all()
    assert torch.autograd.gradcheck(lambda x, y, z: augment_triplets(x, y, z, 0.6)[0], inputs)
    grads = torch.autograd.grad(augment_triplets(*inputs, 0.6)[0].sum(), inputs)
    assert all(g.abs().sum() > 0 for g in grads)
    tile_in = tuple(t.clone().requires_grad_(True) for t in (a, p))
    assert torch.autograd.gradcheck(lambda x, y: augment_npair_tile(x, y, 0.6)[0], tile_in)


def test_a_negative_on_the_anchor_leaves_gradients_finite() -> None:
    """d- = 0 means 'already hard' (no move); the guarded division keeps NaN out of the gradient."""
    a = torch.tensor([[1.0, 2.0]], requires_grad=True)
    p = torch.tensor([[1.5, 2.0]], requires_grad=True)
    n = torch.tensor([[1.0, 2.0]], requires_grad=True)
    n_hat, moved = augment_triplets(a, p, n, 0.5)
    assert not moved.any()
    grads = torch.autograd.grad(n_hat.sum(), (a, p, n))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(grads[2], torch.ones_like(n))
