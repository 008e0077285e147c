"""Multi-Similarity loss (Wang et al. 2019): pytorch-metric-learning's loss + miner as the oracle,
a batch worked by hand, the mining rules, gradients, bad input, the report row beyond the paper.
(Training on digits with a falling loss: tests/test_training.py runs every registered method,
multisimilarity included.)"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import losses, miners

from hdml.core.config import ConfigError, build_run_config
from hdml.core.registry import get_loss
from loss_cases import BAD_M_PER_CLASS_BATCHES

Loss = get_loss("multisimilarity")
PAPER = {"alpha": 2.0, "beta": 50.0, "lambda": 1.0, "epsilon": 0.1}


def oracle(z: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, lam: float, eps: float) -> torch.Tensor:
    """PML's MultiSimilarityLoss on the pairs of its MultiSimilarityMiner (without the miner PML
    weights every pair: no mining). PML calls lambda `base`."""
    pairs = miners.MultiSimilarityMiner(epsilon=eps)(z, y)
    return losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=lam)(z, y, pairs)


def random_batch(seed: int, classes: int = 6, per_class: int = 4, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    z = 0.7 * centres[y] + torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    return 3 * z, y  # unnormalised: the loss normalises


def test_registration_and_defaults():
    """The paper's alpha, beta, epsilon; the authors' code's lambda 0.5 (`thresh`, MSL:18), not the paper's 1."""
    assert Loss.sampler == "m_per_class"
    assert Loss.defaults == {**PAPER, "lambda": 0.5}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hp", [PAPER, {**PAPER, "lambda": 0.5}, {"alpha": 1.0, "beta": 10.0, "lambda": 0.3,
                                                                  "epsilon": 0.3},
                                {**PAPER, "epsilon": 0.0}])
def test_matches_pytorch_metric_learning_loss_with_its_miner(seed, hp):
    z, y = random_batch(seed)
    ours_z, theirs_z = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours = Loss(**hp)(ours_z, y)
    theirs = oracle(theirs_z, y, hp["alpha"], hp["beta"], hp["lambda"], hp["epsilon"])
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-12)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_z.grad, theirs_z.grad, rtol=1e-8, atol=1e-12)


def test_mining_is_not_vacuous_on_the_oracle_batches():
    """The random batches above do drop pairs, so the comparison exercises the mining: PML's loss
    without its miner (every pair weighted) differs from ours."""
    dropped = 0
    for seed in range(6):
        z, y = random_batch(seed)
        loss = Loss(**PAPER)
        keep_pos, keep_neg = loss.mine(torch.nn.functional.normalize(z) @ torch.nn.functional.normalize(z).T, y)
        same = y[:, None] == y[None, :]
        dropped += int((same & ~torch.eye(len(y), dtype=torch.bool) & ~keep_pos).sum() + (~same & ~keep_neg).sum())
        unmined = losses.MultiSimilarityLoss(alpha=2, beta=50, base=1.0)(z, y)
        assert loss(z, y).item() != pytest.approx(unmined.item(), rel=1e-6)
    assert dropped > 0


def test_float32_matches_the_oracle():
    z, y = random_batch(0)
    z = z.float()
    assert Loss(**PAPER)(z, y).item() == pytest.approx(oracle(z, y, 2.0, 50.0, 1.0, 0.1).item(), rel=1e-5)


def ms_term(sims: list[float], sign: int, scale: float, lam: float) -> float:
    """1/scale log(1 + sum e^{sign scale (S - lam)}), straight from the paper's formula."""
    return math.log(1 + sum(math.exp(sign * scale * (s - lam)) for s in sims)) / scale


def test_worked_example():
    """Four points in the plane, the second scaled by 2 (the loss normalises): unit vectors
    x0 = (1, 0), x1 = (.6, .8) of class 0 and x2 = (.8, .6), x3 = (-1, 0) of class 1, so
    S01 = .6, S02 = .8, S03 = -1, S12 = .96, S13 = -.6, S23 = -.8. Mining with eps .1:
      anchor 0: hardest negative .8, positive .6 kept (.5 < .8); hardest positive .6, negatives
                kept if S + .1 > .6: x2 (.8) kept, x3 (-1) dropped.
      anchor 1: positive .6 kept (.5 < .96); x2 (.96) kept, x3 (-.6) dropped.
      anchor 2: positive -.8 kept (-.9 < .96); hardest positive -.8: both negatives kept.
      anchor 3: hardest negative -.6, positive -.8 kept (-.9 < -.6); negatives kept if S + .1 > -.8:
                x1 (-.6) kept, x0 (-1) dropped.
    """
    z = torch.tensor([[1.0, 0.0], [1.2, 1.6], [0.8, 0.6], [-1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    for alpha, beta, lam in ((2.0, 50.0, 1.0), (2.0, 50.0, 0.5), (1.0, 4.0, 0.2)):
        per_anchor = [
            ms_term([0.6], -1, alpha, lam) + ms_term([0.8], 1, beta, lam),
            ms_term([0.6], -1, alpha, lam) + ms_term([0.96], 1, beta, lam),
            ms_term([-0.8], -1, alpha, lam) + ms_term([0.8, 0.96], 1, beta, lam),
            ms_term([-0.8], -1, alpha, lam) + ms_term([-0.6], 1, beta, lam),
        ]
        got = Loss(alpha=alpha, beta=beta, **{"lambda": lam}, epsilon=0.1)(z, y).item()
        assert got == pytest.approx(sum(per_anchor) / 4, rel=1e-12)
    keep_pos, keep_neg = Loss().mine(torch.nn.functional.normalize(z) @ torch.nn.functional.normalize(z).T, y)
    assert keep_pos.tolist() == [[False, True, False, False], [True, False, False, False],
                                 [False, False, False, True], [False, False, True, False]]
    assert keep_neg.tolist() == [[False, False, True, False], [False, False, True, False],
                                 [True, True, False, False], [False, True, False, False]]


def test_anchor_with_nothing_mined_adds_zero_but_counts_in_the_mean():
    """Class 0 tight (S = 1) and far from every negative (at most .28): its anchors mine nothing
    (the positive is more than eps above the hardest negative) and add 0, while class 1 (S = -.8)
    mines; the mean still divides by all 6 anchors, as the authors' code (sum / batch size) does."""
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-0.6, -0.8], [0.0, -1.0], [0.28, -0.96]],
                     dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = Loss(**PAPER)
    u = torch.nn.functional.normalize(z)
    keep_pos, keep_neg = loss.mine(u @ u.T, y)
    assert not keep_pos[:2].any() and not keep_neg[:2].any() and keep_pos[2:].any()
    sim = (u @ u.T).tolist()
    expected = 0.0
    for i in range(2, 6):
        pos = [sim[i][j] for j in range(6) if keep_pos[i, j]]
        neg = [sim[i][k] for k in range(6) if keep_neg[i, k]]
        expected += ms_term(pos, -1, 2.0, 1.0) + ms_term(neg, 1, 50.0, 1.0)
    assert loss(z, y).item() == pytest.approx(expected / 6, rel=1e-12)
    assert loss(z, y).item() == pytest.approx(oracle(z, y, 2.0, 50.0, 1.0, 0.1).item(), rel=1e-12)


def test_well_separated_batch_has_zero_loss_and_gradient():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [-1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss = Loss()(z, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_scale_invariant_and_finite_at_extreme_similarities():
    """Cosine similarity: scaling the embeddings changes nothing. beta (S - lambda) up to 100 in
    float32 (e^100 overflows float32) stays finite, through the logsumexp."""
    z, y = random_batch(1)
    assert Loss()(z, y).item() == pytest.approx(Loss()(1e3 * z, y).item(), rel=1e-10)
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 1e-4], [-1.0, 1e-4]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss = Loss(**{"lambda": -1.0})(z, y)  # negatives at S = 1: beta (S - lambda) = 100
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 1.0 and torch.isfinite(z.grad).all()


def test_gradient_raises_positive_and_lowers_negative_similarity():
    z, y = random_batch(2)
    z = z.requires_grad_()
    loss = Loss()
    loss(z, y).backward()
    u = torch.nn.functional.normalize(z.detach())
    moved = torch.nn.functional.normalize(z.detach() - 1e-2 * z.grad)
    before, after = u @ u.T, moved @ moved.T
    keep_pos, keep_neg = loss.mine(before, y)
    assert (after - before)[keep_pos].mean() > 0 and (after - before)[keep_neg].mean() < 0


@pytest.mark.parametrize("z, y, match", BAD_M_PER_CLASS_BATCHES)
def test_bad_batch_raises(z, y, match):
    with pytest.raises(ValueError, match=match):
        Loss()(z, y)


@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"alpha": 0.0}, r"multisimilarity\.alpha: must be > 0"),
        ({"alpha": float("nan")}, r"multisimilarity\.alpha: must be > 0"),
        ({"beta": -50.0}, r"multisimilarity\.beta: must be > 0"),
        ({"lambda": 1.5}, r"multisimilarity\.lambda: must lie in \[-1, 1\]"),
        ({"lambda": float("nan")}, r"multisimilarity\.lambda: must lie in \[-1, 1\]"),
        ({"epsilon": -0.1}, r"multisimilarity\.epsilon: must be >= 0"),
        ({"margin": 0.1}, "unknown hyperparameter"),
    ],
)
def test_bad_hyperparameters_raise(hparams, match):
    with pytest.raises(ValueError, match=match):
        Loss(**hparams)


def test_run_config_knows_the_multisimilarity_section():
    cfg = build_run_config({}, {"multisimilarity": {"lambda": 1.0, "beta": 40}})
    assert cfg["multisimilarity"] == {**PAPER, "lambda": 1.0, "beta": 40.0}
    assert build_run_config({}, {"multisimilarity.lambda": 1})["multisimilarity"]["lambda"] == 1.0
    with pytest.raises(ConfigError, match="multisimilarity.gamma"):
        build_run_config({}, {"multisimilarity.gamma": 1.0})
    for bad, match in (({"multisimilarity.lambda": 2.0}, r"multisimilarity\.lambda: must lie in \[-1, 1\]"),
                       ({"multisimilarity": {"beta": 0}}, r"multisimilarity\.beta: must be > 0")):
        with pytest.raises(ConfigError, match=match):  # the config check, before any training job
            build_run_config({}, bad)


def test_check_config_rejects_a_bad_multisimilarity_value(tmp_path, capsys):
    """`hdml check-config` (Snakemake runs the same check first): exit 2, the field named."""
    import yaml

    from hdml.cli import main

    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "config/config.yaml").read_text())
    assert "multisimilarity" in cfg["datasets"]["glyphs"]["methods"]
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(tmp_path / "good.yaml")]) == 0
    cfg["datasets"]["glyphs"].setdefault("per_method", {})["multisimilarity"] = {"multisimilarity.epsilon": -0.1}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "multisimilarity.epsilon: must be >= 0" in err


def test_report_shows_a_method_beyond_the_paper_with_a_dash(tmp_path):
    """No paper row for Multi-Similarity: our number, '—' for the paper, no Δ, after the paper's
    rows, and the table's note says why; the paper's own rows keep their numbers. The whole
    report renders with it (HTML, Markdown and LaTeX tables)."""
    import pandas as pd

    from hdml.report import DASH, paper_table, render, results_table

    long = pd.DataFrame([{"dataset": "cub200", "method": m, "variant": "default", "seed": seed, "metric": metric,
                          "value": v + 0.01 * seed} for m, v in (("multisimilarity", 0.59), ("triplet", 0.49))
                         for seed in range(3) for metric in ("nmi", "recall@1")])
    summ = long.groupby(["dataset", "method", "variant", "metric"], as_index=False)["value"].agg(mean="mean",
                                                                                                   n="count")
    summ["ci"] = 0.01
    table = results_table(summ, paper_table(), "cub200", selected=False)
    header = table.flat_header()
    rows = {row[0].text: dict(zip(header, (cell.text for cell in row), strict=True)) for row in table.rows}
    ms = rows["Multi-Similarity"]
    assert (ms["seeds"], ms["NMI ours"], ms["NMI paper"], ms["NMI Δ"]) == ("3", "60.0 ± 1.0", DASH, "")
    assert ms["R@1 paper"] == DASH and rows["Triplet"]["NMI paper"] != DASH and rows["Triplet"]["NMI Δ"]
    assert [row[0].text for row in table.rows][-1] == "Multi-Similarity"
    assert "beyond the paper" in table.note and "Multi-Similarity" in table.note

    long.to_csv(tmp_path / "metrics.csv", index=False)
    page = render(tmp_path / "metrics.csv", tmp_path / "report").read_text()
    assert "Multi-Similarity" in page and "beyond the paper" in page
    assert "Multi-Similarity" in (tmp_path / "report/tables/cub200.md").read_text()
    assert "Multi-Similarity" in (tmp_path / "report/tables/cub200.tex").read_text()
