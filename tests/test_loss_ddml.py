"""DDML (Hu, Lu & Tan 2014): hand-computed values, overflow-free g, gradients, bad input, GoogLeNet step.
(Training on digits with a falling loss: tests/test_training.py runs every registered method, ddml included.)"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hdml.core.config import ConfigError, build_run_config
from hdml.core.registry import get_loss
from loss_cases import BAD_M_PER_CLASS_BATCHES

Loss = get_loss("ddml")


def g(c: float, beta: float) -> float:
    """The paper's generalised logistic loss, straight from its formula (no stabilisation)."""
    return math.log(1 + math.exp(beta * c)) / beta


def hand_pairs(z: np.ndarray, y: np.ndarray, tau: float) -> list[tuple[int, int, float]]:
    """(i, j, c_ij) for every unordered pair, c_ij = 1 - l_ij (tau - ||z_i - z_j||^2), plain loops."""
    out = []
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            d2 = sum((z[i, k] - z[j, k]) ** 2 for k in range(z.shape[1]))
            lij = 1 if y[i] == y[j] else -1
            out.append((i, j, 1 - lij * (tau - d2)))
    return out


def hand_loss(z: np.ndarray, y: np.ndarray, tau: float, beta: float, reduction: str) -> float:
    terms = [g(c, beta) for _, _, c in hand_pairs(z, y, tau)]
    return sum(terms) / len(terms) if reduction == "mean" else sum(terms)


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 3)), np.array([0, 0, 1, 1])


def test_registration_and_paper_defaults():
    assert Loss.sampler == "m_per_class"
    assert Loss.defaults == {"tau": 3.0, "beta": 2.0, "reduction": "mean"}


def test_worked_example():
    """Four points worked on paper, tau 3, beta 2: squared distances 2 (positive 0-1), 4, 4, 2, 2
    (negatives 0-2, 0-3, 1-2, 1-3) and 8 (positive 2-3) give c = 0, 0, 0, 2, 2, 6."""
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    expected_sum = (3 * math.log(2) + 2 * math.log(1 + math.exp(4)) + math.log(1 + math.exp(12))) / 2
    assert Loss(reduction="sum")(z, y).item() == pytest.approx(expected_sum, rel=1e-12)
    assert Loss()(z, y).item() == pytest.approx(expected_sum / 6, rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("tau", "beta"), [(3.0, 2.0), (1.5, 0.5), (4.0, 10.0)])
def test_matches_hand_computation(tau, beta, reduction):
    z, y = batch()
    z = 1.5 * z  # spread the points so pairs fall on both sides of their thresholds
    cs = [c for _, _, c in hand_pairs(z, y, tau)]
    assert min(cs) < 0 < max(cs)
    ours = Loss(tau=tau, beta=beta, reduction=reduction)(torch.tensor(z), torch.tensor(y))
    assert ours.item() == pytest.approx(hand_loss(z, y, tau, beta, reduction), rel=1e-12)


def test_large_beta_is_the_hinge_and_does_not_overflow():
    """g -> max(0, c) as beta grows; for beta c far beyond exp's range the naive formula is inf."""
    z = torch.tensor([[0.0, 0.0], [30.0, 0.0], [0.5, 0.0], [30.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    beta = 1e3
    with pytest.raises(OverflowError):
        g(900.0, beta)
    hinge = [max(0.0, c) for _, _, c in hand_pairs(z.numpy(), y.numpy(), 3.0)]
    zz = z.clone().requires_grad_(True)
    loss = Loss(beta=beta, reduction="sum")(zz, y)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(zz.grad).all()
    assert loss.item() == pytest.approx(sum(hinge), abs=len(hinge) * math.log(2) / beta)


def test_float32_stays_finite_where_exp_overflows():
    """Positives at D2 = 1e4 (c = 9998, beta c = 1e5: exp overflows float32), the near negatives at
    D2 = 1 (c = 3), the far ones at D2 = 10001 (g ~ 0): the sum is 2 * 9998 + 2 * 3."""
    z = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 1.0], [100.0, 1.0]])
    assert torch.isinf(torch.exp(torch.tensor(1e5)))
    loss = Loss(beta=10.0, reduction="sum")(z, torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2 * 9998 + 2 * 3, rel=1e-5)


def test_gradient_matches_the_papers_derivative():
    """dJ/dz_i = sum_j g'(c_ij) l_ij 2 (z_i - z_j), g'(c) = 1 / (1 + exp(-beta c)) (sum reduction)."""
    z, y = batch(3)
    tau, beta = 3.0, 2.0
    zt = torch.tensor(z, requires_grad=True)
    Loss(tau=tau, beta=beta, reduction="sum")(zt, torch.tensor(y)).backward()
    expected = np.zeros_like(z)
    for i, j, c in hand_pairs(z, y, tau):
        lij = 1 if y[i] == y[j] else -1
        w = lij * 2 / (1 + math.exp(-beta * c))
        for k in range(z.shape[1]):
            expected[i, k] += w * (z[i, k] - z[j, k])
            expected[j, k] += w * (z[j, k] - z[i, k])
    assert np.allclose(zt.grad.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: Loss(tau=tau, beta=beta)(t, torch.tensor(y)),
                                    (torch.tensor(z, requires_grad=True),))


def test_gradient_pulls_positives_and_pushes_negatives():
    """One small descent step on the raw embeddings: positives (D2 = 4, c = 2) closer, the near
    negatives (D2 = 3.61, c = 0.39) farther; the far negatives (c = -3.61) barely act."""
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.9], [2.0, 1.9]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    Loss()(z, y).backward()
    moved = z.detach() - 0.05 * z.grad
    dist = lambda a, i, j: float((a[i] - a[j]).norm())  # noqa: E731
    assert dist(moved, 0, 1) < dist(z.detach(), 0, 1) and dist(moved, 2, 3) < dist(z.detach(), 2, 3)
    assert dist(moved, 0, 2) > dist(z.detach(), 0, 2)


def test_small_loss_when_every_pair_satisfies_its_threshold():
    """Positives coincide (D2 = 0 <= tau - 1), negatives 10 apart (D2 = 100 >= tau + 1): every c <= -2,
    so the loss is the small sum of g(c) < log(2)/beta and shrinks towards 0 as beta grows."""
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    z = centres[y]
    assert Loss(beta=50.0)(z, y).item() < 1e-40
    assert Loss(beta=2.0)(z, y).item() == pytest.approx((2 * g(-2.0, 2.0) + 4 * g(-96.0, 2.0)) / 6, rel=1e-12)


@pytest.mark.parametrize("z, y, match", BAD_M_PER_CLASS_BATCHES)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"beta": 0.0}, r"ddml\.beta: must be > 0"),
        ({"beta": -1.0}, r"ddml\.beta: must be > 0"),
        ({"beta": float("nan")}, r"ddml\.beta: must be > 0"),
        ({"tau": 1.0}, r"ddml\.tau: must be > 1"),
        ({"tau": 0.5}, r"ddml\.tau: must be > 1"),
        ({"reduction": "max"}, r"ddml\.reduction: must be one of"),
        ({"margin": 1.0}, "unknown hyperparameter"),
    ],
)
def test_bad_hyperparameters_raise(hparams, match):
    with pytest.raises(ValueError, match=match):
        Loss(**hparams)


def test_run_config_knows_the_ddml_section():
    cfg = build_run_config({}, {"ddml": {"tau": 4, "beta": 5.0}})
    assert cfg["ddml"] == {"tau": 4.0, "beta": 5.0, "reduction": "mean"}
    with pytest.raises(ConfigError, match="ddml.reduction"):
        build_run_config({}, {"ddml.reduction": "max"})


def test_one_step_on_a_random_googlenet():
    from hdml.core.config import default_config, merge, validate
    from hdml.methods.base import build_method
    from hdml.model.embedding import build_model

    torch.manual_seed(0)
    cfg = default_config()
    merge(cfg, {"backbone": "googlenet", "pretrained": False, "embedding_dim": 16, "batch_size": 4})
    validate(cfg)
    model = build_model(cfg, 3)
    method = build_method("ddml", model, cfg, 2)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    head_before = model.head.fc.weight.detach().clone()
    x = torch.randn(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    logs = method.step(x, torch.tensor([0, 0, 1, 1]))
    assert math.isfinite(logs["loss"]) and logs["loss"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.backbone.parameters(), strict=True))
    assert not torch.equal(head_before, model.head.fc.weight)


def test_report_puts_our_ddml_beside_the_papers_row():
    """The method name maps to the paper's 'DDML' row (DDMLLoss.display_name): ours, the paper's 47.3
    NMI on CUB-200-2011 and the difference in one row, in the paper's row order."""
    import pandas as pd

    from hdml.report import paper_table, results_table

    summ = pd.DataFrame([{"dataset": "cub200", "method": m, "variant": "default", "metric": "nmi", "mean": v,
                          "n": 3, "ci": 0.01} for m, v in (("ddml", 0.45), ("contrastive", 0.44))])
    table = results_table(summ, paper_table(), "cub200", selected=False)
    header = table.flat_header()
    rows = {row[0].text: [cell.text for cell in row] for row in table.rows}
    assert [row[0].text for row in table.rows][:3] == ["Contrastive", "DDML", "Lifted"]
    ddml = dict(zip(header, rows["DDML"], strict=True))
    assert (ddml["seeds"], ddml["NMI ours"], ddml["NMI paper"], ddml["NMI Δ"]) == ("3", "45.0 ± 1.0", "47.3", "-2.3")


def test_the_papers_regulariser_is_the_suites_weight_decay():
    """DDML's lambda/2 sum ||W||_F^2 is `weight_decay`: a step's objective is the DDML loss plus
    weight_decay/2 times the squared conv and linear weights and biases (as DDML's ||W||^2 + ||b||^2),
    computed independently here."""
    from hdml.core.config import default_config, merge, validate
    from hdml.methods.base import build_method
    from hdml.model.embedding import build_model

    cfg = default_config()
    merge(cfg, {"backbone": "smallcnn", "pretrained": False, "embedding_dim": 8, "weight_decay": 0.01})
    validate(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, 1)
    x, y = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 0, 1, 1, 2, 2])
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    weights = [m.weight for m in layers] + [m.bias for m in layers if m.bias is not None]
    assert len(weights) >= 2
    with torch.no_grad():
        model.train()
        expected = Loss()(model(x), y).item() + 0.01 / 2 * sum(float((w * w).sum()) for w in weights)
    torch.manual_seed(0)
    fresh = build_model(cfg, 1)
    logs = build_method("ddml", fresh, cfg, 3).step(x, y)
    assert logs["loss"] == pytest.approx(expected, rel=1e-6)
