"""Gradient routing of one HDML step, checked bit for bit against reference updates.

J_metric -> backbone + head (its gradient flowing through generator and augmentor into z),
J_gen -> generator, cross-entropy on real (detached) features -> classifier. Each test
also shows that the wrong routing it guards against would give a different update.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from baselines.hdml import HDMLMethod
from tiny_methods import NPAIR_LABELS, TRIPLET_LABELS, params, same, tiny_batch, tiny_method

BATCHES = {"hdml-triplet": TRIPLET_LABELS, "hdml-npair": NPAIR_LABELS}
VARIANTS = sorted(BATCHES)


def tiny(name: str, overrides: dict | None = None, seed: int = 0) -> HDMLMethod:
    # lambda0 0.5: the augmentor moves points; beta 1e6 with J_gen_avg = 1e6: J_syn weighs 1 - e^-1.
    return tiny_method(name, {"hdml.lambda0": 0.5, "hdml.beta": 1e6, "hdml.gen_hidden": 16, **(overrides or {})}, seed)


def batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_batch(BATCHES[name])


def reference(method: HDMLMethod, x: torch.Tensor, y: torch.Tensor, part: str,
              loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
              patch: Callable[[HDMLMethod], None] | None = None) -> list[torch.Tensor]:
    """Parameters of `part` after the method's optimiser steps on d loss_of(losses) / d part alone
    (no other parameter has a gradient), computed on an independent copy of the method
    (optionally patched)."""
    ref = copy.deepcopy(method)
    if patch:
        patch(ref)
    module, opt = {"model": ref.model, "generator": ref.generator, "classifier": ref.classifier}[part], ref.opt
    plist = list(module.parameters())
    grads = torch.autograd.grad(loss_of(ref.losses(x, y)), plist, allow_unused=True)
    for p, g in zip(plist, grads, strict=True):
        p.grad = g
    opt.step()
    return params(module)


@pytest.mark.parametrize("name", VARIANTS)
def test_metric_update_is_the_full_gradient_of_j_metric(name: str) -> None:
    method = tiny(name)
    x, y = batch(name)
    want = reference(method, x, y, "model", lambda L: L["j_metric"])
    with_gen = reference(method, x, y, "model", lambda L: L["j_metric"] + L["j_gen"])

    def detach_generator_input(m: HDMLMethod) -> None:
        forward = m.generator.forward
        m.generator.forward = lambda z: forward(z.detach())

    def detach_augmentor(m: HDMLMethod) -> None:
        synthesize = m.synthesize
        m.synthesize = lambda z, labels, lam0: (lambda s, lab, mv: (s.detach(), lab, mv))(*synthesize(z, labels, lam0))

    stop_gen = reference(method, x, y, "model", lambda L: L["j_metric"], detach_generator_input)
    stop_aug = reference(method, x, y, "model", lambda L: L["j_metric"], detach_augmentor)
    method.step(x, y)
    got = params(method.model)
    assert same(got, want)
    # a routing that adds J_gen, or stops the gradient at the generator or the augmentor, differs
    for wrong in (with_gen, stop_gen, stop_aug):
        assert not same(got, wrong)


@pytest.mark.parametrize("name", VARIANTS)
def test_generator_update_is_the_gradient_of_j_gen_only(name: str) -> None:
    method = tiny(name)
    x, y = batch(name)
    want = reference(method, x, y, "generator", lambda L: L["j_gen"])
    wrong = reference(method, x, y, "generator", lambda L: L["j_gen"] + L["j_metric"])
    before = params(method.generator)
    method.step(x, y)
    got = params(method.generator)
    assert same(got, want) and not same(got, wrong) and not same(got, before)


@pytest.mark.parametrize("name", VARIANTS)
def test_classifier_learns_from_real_features_only(name: str) -> None:
    method = tiny(name)
    x, y = batch(name)
    # independent reference: cross-entropy of the classifier on the real backbone features
    ref = copy.deepcopy(method)
    ref.model.train()
    ce = nn.functional.cross_entropy(ref.classifier(ref.model.features(x)), y)
    weights = list(ref.classifier.parameters())
    for p, g in zip(weights, torch.autograd.grad(ce, weights), strict=True):
        p.grad = g
    ref.opt.step()
    want = params(ref.classifier)
    wrong = reference(method, x, y, "classifier", lambda L: L["j_cls"] + L["j_soft"])
    # same step with other synthetics (another generator, another hardness): same classifier update
    other = tiny(name)
    torch.manual_seed(123)
    other.generator.load_state_dict(type(other.generator)(4, 12, 16).state_dict())
    other.h = {**other.h, "lambda0": 0.9}
    method.step(x, y)
    other.step(x, y)
    got = params(method.classifier)
    assert same(got, want) and not same(got, wrong)
    assert same(params(other.classifier), got)
    assert not same(params(other.generator), params(method.generator))


def test_with_only_the_generator_losses_active_backbone_and_head_are_unchanged() -> None:
    """Identical rows, margin 0, no weight decay: J_m = J_syn = 0 with exactly zero gradients,
    while J_recon's gradient does reach the backbone (through its target y), so a J_gen routed
    into the metric would move it."""
    method = tiny("hdml-triplet", {"triplet.margin": 0.0, "weight_decay": 0.0})
    y = BATCHES["hdml-triplet"]
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(3)).expand(len(y), 6).contiguous()
    ref = copy.deepcopy(method)
    L = ref.losses(x, y)
    assert L["j_metric"].item() == 0.0 and L["j_gen"].item() > 0
    grads = torch.autograd.grad(L["j_gen"], list(ref.model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model0, gen0, cls0 = params(method.model), params(method.generator), params(method.classifier)
    method.step(x, y)
    assert same(params(method.model), model0)
    assert not same(params(method.generator), gen0)
    assert not same(params(method.classifier), cls0)


@pytest.mark.parametrize("name", VARIANTS)
def test_j_metric_does_not_update_the_generator(name: str) -> None:
    """With J_recon and J_soft both ablated J_gen is constant: the generator must stay as it is,
    although J_metric's gradient passes through it (and moves the backbone)."""
    method = tiny(name, {"hdml.recon": False, "hdml.softmax": False})
    x, y = batch(name)
    ref = copy.deepcopy(method)
    grads = torch.autograd.grad(ref.losses(x, y)["j_metric"], list(ref.generator.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)
    model0, gen0 = params(method.model), params(method.generator)
    logs = method.step(x, y)
    assert logs["j_gen"] == 0.0
    assert same(params(method.generator), gen0)
    assert not same(params(method.model), model0)
