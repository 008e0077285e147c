"""Proxy-Anchor (Kim et al. 2020): against pytorch-metric-learning's ProxyAnchorLoss (value and
gradients, embeddings and proxies), a hand-worked batch, overflow, the trainable-loss plumbing
(context, device, optimiser group, checkpoint), bad input. (Training on digits with a falling loss:
tests/test_training.py runs every registered method, proxyanchor included.)"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from pytorch_metric_learning.losses import ProxyAnchorLoss as PMLProxyAnchor
from torch import nn

from hdml.core.config import ConfigError, build_run_config, describe_keys, rules_for
from hdml.core.registry import Context, get_loss
from hdml.methods.base import build_method
from hdml.model.embedding import EmbeddingNet

Loss = get_loss("proxyanchor")
CPU = torch.device("cpu")


def pair(classes: int, dim: int, dtype: torch.dtype, **hparams: float) -> tuple[nn.Module, PMLProxyAnchor]:
    """Our loss and PML's on the same proxies."""
    ours = Loss(context=Context(classes, dim, 1, CPU), **hparams).to(dtype)
    theirs = PMLProxyAnchor(classes, dim, margin=ours.hparams["margin"], alpha=ours.hparams["alpha"]).to(dtype)
    with torch.no_grad():
        theirs.proxies.copy_(ours.proxies)
    return ours, theirs


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("seed", range(6))
def test_matches_pytorch_metric_learning_value_and_gradients(seed: int, dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    classes, dim, batch = [(5, 8, 10), (12, 16, 24), (3, 4, 7), (100, 32, 60), (7, 64, 2), (20, 8, 40)][seed]
    hparams = [{}, {"alpha": 16.0, "margin": 0.3}, {"margin": 0.0}, {}, {"alpha": 64.0}, {"alpha": 1.0}][seed]
    torch.manual_seed(seed)
    ours, theirs = pair(classes, dim, dtype, **hparams)
    # labels from a subset of the classes: proxies without positives in the batch count in
    # the negative term's 1/|P| only
    labels = torch.randint(0, max(2, classes * 2 // 3), (batch,), generator=gen)
    z = (3 * torch.randn(batch, dim, generator=gen)).to(dtype).requires_grad_()
    got, want = ours(z, labels), theirs(z, labels)
    assert got.item() == pytest.approx(want.item(), rel=tol, abs=tol)
    g_ours = torch.autograd.grad(got, [z, ours.proxies])
    g_theirs = torch.autograd.grad(want, [z, theirs.proxies])
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=tol * 10, atol=tol)


def test_hand_worked_batch() -> None:
    """Two proxies e1, e2; embeddings e1 (class 0) and e2 (class 0): cos with p0 = 1, 0; with p1 = 0, 1."""
    loss = Loss(context=Context(2, 2, 1, CPU), alpha=2.0, margin=0.5)
    with torch.no_grad():
        loss.proxies.copy_(torch.eye(2))
    z = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0])
    pos = math.log(1 + math.exp(-2 * (1 - 0.5)) + math.exp(-2 * (0 - 0.5)))  # proxy 0, the only present one
    neg = math.log(1 + math.exp(2 * (0 + 0.5)) + math.exp(2 * (1 + 0.5))) / 2  # proxy 1; proxy 0 has no negatives
    assert loss(z, labels).item() == pytest.approx(pos + neg, rel=1e-6)


def test_large_alpha_stays_finite() -> None:
    loss = Loss(context=Context(4, 3, 1, CPU), alpha=1e4)
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = loss(z, torch.tensor([0, 1, 2, 3] * 2))
    (grad,) = torch.autograd.grad(value, [z])
    assert math.isfinite(value.item()) and torch.isfinite(grad).all()


def test_defaults_are_the_papers_and_proxies_use_the_authors_init() -> None:
    assert Loss.defaults == {"alpha": 32.0, "margin": 0.1, "lr_mult": 100.0}
    torch.manual_seed(0)
    proxies = Loss(context=Context(4000, 64, 1, CPU)).proxies
    # Kaiming-normal, fan_out = rows (classes): std sqrt(2 / classes)
    assert proxies.shape == (4000, 64) and proxies.std().item() == pytest.approx(math.sqrt(2 / 4000), rel=0.02)


def tiny_model() -> EmbeddingNet:
    return EmbeddingNet(nn.Sequential(nn.Linear(6, 12), nn.ReLU()), 12, 4)


def test_context_sizes_the_proxies_and_the_optimiser_gives_them_their_own_rate() -> None:
    torch.manual_seed(0)
    model = tiny_model()
    cfg = build_run_config({}, {"lr": 2e-3, "lr_milestones": [1], "lr_gamma": 0.5}, "proxyanchor")
    method = build_method("proxyanchor", model, cfg, num_classes=3)
    assert method.loss.proxies.shape == (3, 4) and method.loss.proxies.device == CPU
    groups = method.opt.param_groups
    assert [g["lr"] for g in groups] == [2e-3, 2e-3, pytest.approx(0.2)]
    assert groups[-1]["params"] == [method.loss.proxies]
    before = method.loss.proxies.detach().clone()
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    method.step(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert not torch.equal(method.loss.proxies, before)  # the proxies train
    assert groups[-1]["lr"] == pytest.approx(0.1)  # and decay with the backbone's rate
    cfg = build_run_config({}, {"lr": 2e-3, "proxyanchor.lr_mult": 10}, "proxyanchor")
    assert build_method("proxyanchor", tiny_model(), cfg, 3).opt.param_groups[-1]["lr"] == pytest.approx(0.02)


def test_method_state_restores_proxies_and_their_moments() -> None:
    torch.manual_seed(0)
    cfg = build_run_config({}, {"lr": 1e-2}, "proxyanchor")
    a = build_method("proxyanchor", tiny_model(), cfg, 3)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 6, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2])) for _ in range(4)]
    for x, y in batches[:2]:
        a.step(x, y)
    torch.manual_seed(5)  # another init: everything must come from the state
    b = build_method("proxyanchor", tiny_model(), cfg, 3)
    b.model.load_state_dict(a.model.state_dict())
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as through a checkpoint file: no shared tensors
    assert torch.equal(a.loss.proxies, b.loss.proxies)
    for x, y in batches[2:]:
        assert a.step(x, y) == b.step(x, y)
    assert torch.equal(a.loss.proxies, b.loss.proxies)


def test_config_check_builds_the_loss_without_touching_the_random_stream() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    cfg = build_run_config({}, {"proxyanchor.alpha": 8}, "proxyanchor")
    assert torch.equal(torch.get_rng_state(), state)
    assert set(cfg) >= {"proxyanchor"} and "hdml" not in cfg and "triplet" not in cfg
    listed = {key: allowed for key, _, allowed in describe_keys(cfg, rules_for("proxyanchor"))}
    assert listed["proxyanchor.lr_mult"] == "number, > 0; tuned in [10, 1000], log scale"
    assert listed["proxyanchor.alpha"] == "number, >= 0; tuned in [8, 64], log scale"
    with pytest.raises(ConfigError, match=r"^proxyanchor.margin: must be >= 0"):
        build_run_config({}, {"proxyanchor.margin": -0.1}, "proxyanchor")
    with pytest.raises(ConfigError, match=r"^proxyanchor.lr_mult: must be > 0"):
        build_run_config({}, {"proxyanchor.lr_mult": 0.0}, "proxyanchor")


@pytest.mark.parametrize("labels, message", [([0, 3], r"labels must be training classes 0\.\.2, got \[0, 3\]"),
                                             ([-1, 0], "labels must be training classes"),
                                             ([[0], [1]], "labels must be 1-D")])
def test_bad_labels_name_the_loss(labels: list, message: str) -> None:
    loss = Loss(context=Context(3, 4, 1, CPU))
    with pytest.raises(ValueError, match=f"proxyanchor: {message}"):
        loss(torch.randn(2, 4), torch.tensor(labels))


def test_needs_a_context() -> None:
    with pytest.raises(ValueError, match="proxyanchor: needs a context"):
        Loss()
