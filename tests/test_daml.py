"""DAML (Duan et al. 2018): its objectives against hand-computed values, gradient routing (bit for
bit against reference updates), warm-up, checkpointed state, a step on a random GoogLeNet.
Training on digits with a falling loss: tests/test_training.py (every registered method)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from baselines.daml import DAMLMethod, generator_losses
from hdml.core.config import ConfigError, default_config, merge, validate
from hdml.core.registry import config_sections
from hdml.methods.base import build_method
from tiny_methods import NPAIR_LABELS, TRIPLET_LABELS, params, same, tiny_batch, tiny_method

BATCHES = {"daml-triplet": TRIPLET_LABELS, "daml-npair": NPAIR_LABELS}
VARIANTS = sorted(BATCHES)


def tiny(name: str, overrides: dict | None = None, seed: int = 0) -> DAMLMethod:
    """The adversarial phase from the first step (no warm-up) over a 10-step run."""
    return tiny_method(name, {"steps": 10, "daml.warmup": 0.0, **(overrides or {})}, seed)


def batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_batch(BATCHES[name])


# ---------------------------------------------------------------- objectives by hand

def test_generator_objective_by_hand() -> None:
    """Two tuples in 2-D. Tuple 1: a=(0,0), p=(1,0), n=(3,0), n~=(1,1): ||n~-a||^2 = 2,
    ||n~-n||^2 = 4+1 = 5, ||p-a||^2 = 1, [2 - 1 - 0.5]_+ = 0.5. Tuple 2: a=(0,0), p=(0,2), n=(0,5),
    n~=(0,1): 1, 16, 4, [1 - 4 - 0.5]_+ = 0. Paper: sums 3, 21, 0.5; code: means 1.5, 10.5, adv 0.5/2/2."""
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    n = torch.tensor([[3.0, 0.0], [0.0, 5.0]])
    n_syn = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    paper = generator_losses(a, p, n, n_syn, margin=0.5, protocol="paper")
    assert {k: v.item() for k, v in paper.items()} == {"j_hard": 3.0, "j_reg": 21.0, "j_adv": 0.5}
    code = generator_losses(a, p, n, n_syn, margin=0.5, protocol="code")
    assert {k: v.item() for k, v in code.items()} == {"j_hard": 1.5, "j_reg": 10.5, "j_adv": 0.125}


@pytest.mark.parametrize("protocol", ["code", "paper"])
def test_generator_network_by_hand(protocol: str) -> None:
    """G = l1(relu(l0([a; p; n]))), relu on the output only in protocol code. With d = 1, l0 sums its
    inputs, l1 = -h + 1: a=1, p=2, n=-4 -> relu(-1) = 0 -> 1; a=1, p=2, n=0 -> 3 -> -2 (code: 0)."""
    method = tiny("daml-triplet", {"protocol": protocol})
    g = method.generator
    with torch.no_grad():
        g.l0 = nn.Linear(3, 1)
        g.l1 = nn.Linear(1, 1)
        g.l0.weight.fill_(1.0), g.l0.bias.zero_(), g.l1.weight.fill_(-1.0), g.l1.bias.fill_(1.0)
    out = g(torch.tensor([[1.0], [1.0]]), torch.tensor([[2.0], [2.0]]), torch.tensor([[-4.0], [0.0]]))
    assert out.flatten().tolist() == ([1.0, 0.0] if protocol == "code" else [1.0, -2.0])


def test_generator_init_and_rate() -> None:
    """Two layers 3d -> d -> d with N(0, 0.02) weights and zero biases; its own group at lr * 0.1,
    outside the lr schedule."""
    method = tiny("daml-triplet")
    g = method.generator
    assert (g.l0.in_features, g.l0.out_features, g.l1.out_features) == (12, 4, 4)
    assert torch.count_nonzero(g.l0.bias) == 0 and 0.01 < g.l0.weight.std().item() < 0.03
    group = next(gr for gr in method.opt.param_groups if gr.get("name") == "generator")
    assert group["lr"] == pytest.approx(1e-3) and group["scheduled"] is False


def test_triplet_losses_follow_their_formulas() -> None:
    """One step's losses against the formulas on the method's own embeddings and generator:
    J_gen (protocol paper: sums, lambdas 1), J_syn = triplet loss on (a, p, n~), J_metric = J_m + J_syn."""
    method = tiny("daml-triplet", {"protocol": "paper", "daml.lambda1": 2.0, "daml.lambda2": 3.0,
                                   "daml.lambda": 0.5})
    x, y = batch("daml-triplet")
    L = method.losses(x, y)
    with torch.no_grad():
        z = method.model(x)
        a, p, n = z[:4], z[4:8], z[8:]
        ns = method.generator(a, p, n)
        hard = ((ns - a) ** 2).sum()
        reg = ((ns - n) ** 2).sum()
        adv = torch.relu(((ns - a) ** 2).sum(1) - ((p - a) ** 2).sum(1) - 1.0).sum()
        syn = torch.relu(((a - p) ** 2).sum(1) - ((a - ns) ** 2).sum(1) + 1.0).sum()
        real = torch.relu(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 1.0).sum()
        penalty = 1e-3 * sum((w * w).sum() for w in method.model.decayed_weights()) / 2
    assert L["j_gen"].item() == pytest.approx((hard + 2 * reg + 3 * adv).item(), rel=1e-6)
    assert L["j_syn"].item() == pytest.approx(syn.item(), rel=1e-6)
    assert L["j_m"].item() == pytest.approx((real + penalty).item(), rel=1e-6)
    assert L["j_metric"].item() == pytest.approx((real + penalty + 0.5 * syn).item(), rel=1e-6)


def test_code_protocol_trains_the_metric_on_synthetic_tuples_alone() -> None:
    method = tiny("daml-triplet", {"protocol": "code"})
    L = method.losses(*batch("daml-triplet"))
    penalty = 1e-3 * sum((w * w).sum() for w in method.model.decayed_weights()) / 2
    assert L["j_metric"].item() == pytest.approx((L["j_syn"] + penalty).item(), rel=1e-6)


def scramble(module: nn.Module, seed: int) -> None:
    """Random weights (D starts as ReLU: a formula that skipped D would pass on positive inputs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def test_code_protocol_losses_by_hand() -> None:
    """Protocol code past the warm-up, against the code's formulas (utils.py:236-250) on the
    method's own weights: z normalised as Chainer's F.normalize, J_hard and J_reg on (a, n, n~)
    before D, J_adv on D(a), D(p), D(n~) (mean, halved), J_syn the triplet loss on D's features,
    J_m the triplet loss on the normalised real triplets."""
    method = tiny("daml-triplet", {"protocol": "code", "triplet.margin": 0.5, "daml.margin": 0.25})
    scramble(method.discriminator, 3)
    scramble(method.generator, 5)
    x, y = batch("daml-triplet")
    L = method.losses(x, y)
    with torch.no_grad():
        raw = method.model(x)
        z = raw / (raw.norm(dim=1, keepdim=True) + 1e-5)
        a, p, n = z[:4], z[4:8], z[8:]
        ns = method.generator(a, p, n)
        d = method.discriminator
        da, dp, dn = d(a), d(p), d(ns)
        hard = ((ns - a) ** 2).sum(1).mean()
        reg = ((ns - n) ** 2).sum(1).mean()
        adv = torch.relu(((da - dn) ** 2).sum(1) - ((da - dp) ** 2).sum(1) - 0.25).mean() / 2
        syn = torch.relu(((da - dp) ** 2).sum(1) - ((da - dn) ** 2).sum(1) + 0.5).sum()
        real = torch.relu(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 0.5).sum()
        penalty = 1e-3 * sum((w * w).sum() for w in method.model.decayed_weights()) / 2
    assert torch.allclose(z.norm(dim=1), torch.ones(12), atol=1e-4)
    for key, want in {"j_hard": hard, "j_reg": reg, "j_adv": adv, "j_gen": hard + reg + adv, "j_syn": syn,
                      "j_m": real + penalty, "j_metric": syn + penalty}.items():
        assert L[key].item() == pytest.approx(want.item(), rel=1e-6, abs=1e-7), key
    assert adv.item() > 0 and syn.item() > 0  # both hinges active: the check has teeth


def test_discriminator_init_rate_and_decay() -> None:
    """Protocol code: D = Linear(d, d), ReLU, Linear(d, d), identity weights, zero biases (so D(x)
    = relu(x) at the start), its group at the full rate, unscheduled; D and G decayed by Adam's L2
    term at the run's weight decay. Protocol paper: no D, G undecayed."""
    method = tiny("daml-triplet", {"protocol": "code"})
    d = method.discriminator
    assert torch.equal(d.l0.weight, torch.eye(4)) and torch.equal(d.l1.weight, torch.eye(4))
    assert torch.count_nonzero(d.l0.bias) == 0 and torch.count_nonzero(d.l1.bias) == 0
    v = torch.tensor([[1.0, -2.0, 0.5, -0.1]])
    assert torch.equal(d(v), torch.relu(v))
    groups = {g.get("name"): g for g in method.opt.param_groups}
    assert groups["discriminator"]["lr"] == pytest.approx(1e-2) and groups["discriminator"]["scheduled"] is False
    assert groups["discriminator"]["weight_decay"] == groups["generator"]["weight_decay"] == 1e-3
    assert "discriminator" in method.state_dict()["parts"]
    paper = tiny("daml-triplet", {"protocol": "paper"})
    assert paper.discriminator is None and "discriminator" not in paper.parts
    assert next(g for g in paper.opt.param_groups if g.get("name") == "generator")["weight_decay"] == 0.0


@pytest.mark.parametrize("name", VARIANTS)
def test_code_protocol_drops_the_backbone_rate_after_the_warmup(name: str) -> None:
    """2 warm-up steps at lr 1e-2 for backbone + head, then lr / 1000 from a fresh Adam state (the
    code's second optimiser): after step 3 the model's Adam step count is 1, not 3; D stays at lr,
    G at lr / 10. Protocol paper keeps the rate."""
    method = tiny(name, {"daml.warmup": 0.2, "protocol": "code"})
    x, y = batch(name)
    model_ids = {id(p) for p in method.model.parameters()}

    def rates() -> dict[str, float]:  # backbone and head share the key "model" (equal rates)
        return {g.get("name", "model" if id(g["params"][0]) in model_ids else "loss"): g["lr"]
                for g in method.opt.param_groups}

    method.step(x, y)
    assert rates() == {"model": 1e-2, "generator": pytest.approx(1e-3), "discriminator": 1e-2}
    method.step(x, y)
    assert rates()["model"] == pytest.approx(1e-5) and rates()["discriminator"] == 1e-2
    assert not any(id(p) in model_ids for p in method.opt.state)  # Adam's moments restart
    method.step(x, y)
    steps = {float(method.opt.state[p]["step"]) for p in method.model.parameters()}
    assert steps == {1.0}
    paper = tiny(name, {"daml.warmup": 0.2, "protocol": "paper"})
    for _ in range(3):
        paper.step(x, y)
    assert paper.opt.param_groups[0]["lr"] == 1e-2


def test_eval_features_switch_to_the_discriminator_once_it_has_trained() -> None:
    """Protocol code: the normalised embedding through the warm-up (2 steps) and at its end, D's
    features after D's first step (the code: D from the evaluation after epoch 20 on,
    utils.py:173-174); protocol paper: the model's embedding."""
    method = tiny("daml-triplet", {"daml.warmup": 0.2, "protocol": "code"})
    scramble(method.discriminator, 4)
    x, y = batch("daml-triplet")

    def normalised() -> torch.Tensor:
        with torch.no_grad():
            z = method.model(x)
            return z / (z.norm(dim=1, keepdim=True) + 1e-5)

    for _ in range(2):
        assert torch.equal(method.eval_features(x), normalised())
        method.step(x, y)
    assert torch.equal(method.eval_features(x), normalised())
    method.step(x, y)
    with torch.no_grad():
        assert torch.equal(method.eval_features(x), method.discriminator(normalised()))
    paper = tiny("daml-triplet", {"protocol": "paper"})
    with torch.no_grad():
        assert torch.equal(paper.eval_features(x), paper.model(x))


def test_the_trainer_evaluates_what_eval_features_returns(carved_root, tmp_path, monkeypatch) -> None:
    """Every embedding the trainer evaluates (test and, with selection val, validation) goes
    through the method's `eval_features`; a method without one (triplet) embeds with the model."""
    import hdml.train.trainer as trainer

    seen: list[object] = []
    real_embed = trainer.embed

    def spy(model, images, transform, batch_size, features=None):  # type: ignore[no-untyped-def]
        seen.append(getattr(features, "__func__", features))
        return real_embed(model, images, transform, batch_size, features)

    monkeypatch.setattr(trainer, "embed", spy)
    tiny_run = {"steps": 6, "batch_size": 6, "eval_every": 3, "device": "cpu", "embedding_dim": 8,
                "selection": "val"}
    trainer.train_run(root=carved_root, dataset="digits", method="daml-triplet", seed=0, out=tmp_path / "d",
                      overrides=tiny_run)
    assert len(seen) == 4 and all(f is DAMLMethod.eval_features for f in seen)  # test + val at steps 3, 6
    seen.clear()
    trainer.train_run(root=carved_root, dataset="digits", method="triplet", seed=0, out=tmp_path / "t",
                      overrides=tiny_run)
    assert seen and all(f is None for f in seen)


def test_npair_tile_by_hand() -> None:
    """N = 2, d = 2, npair.l2_reg = 0. The tuples are the off-diagonal pairs (0,1), (1,0):
    (a_0, p_0, p_1) and (a_1, p_1, p_0). Anchor 0's row is [p_0, n~_01] with target p_0; anchor 1's
    row is [n~_10, p_1] with target p_1: J_syn = mean of the two cross-entropies, computed here
    from the dot products by hand."""
    method = tiny("daml-npair", {"npair.l2_reg": 0.0})
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])  # a_0, a_1, p_0, p_1
    n_syn = torch.tensor([[1.0, 1.0], [0.5, 0.0]])  # n~_01, n~_10
    method.generator = lambda a, p, n: torch.stack([n_syn[0], n_syn[0], n_syn[1], n_syn[1]]).reshape(2, 2, 2)
    a, p, n, ns = method.tuples(z)
    assert torch.equal(a, z[[0, 1]]) and torch.equal(p, z[[2, 3]]) and torch.equal(n, z[[3, 2]])
    assert torch.equal(ns, n_syn)
    ce0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.0)))  # a_0.p_0 = 2, a_0.n~_01 = 1
    ce1 = -math.log(math.exp(3.0) / (math.exp(3.0) + math.exp(0.0)))  # a_1.p_1 = 3, a_1.n~_10 = 0
    assert method.synthetic_loss(z, n_syn).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_npair_generator_sees_each_anchor_negative_pair() -> None:
    """n~_ij = G([a_i; p_i; p_j]) for all N(N-1) pairs j != i (N = 3: 6 synthetic negatives)."""
    method = tiny("daml-npair")
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    a, p, n, ns = method.tuples(z)
    assert len(ns) == 6
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    for k, (i, j) in enumerate(pairs):
        want = method.generator(z[i : i + 1], z[3 + i : 4 + i], z[3 + j : 4 + j])[0]
        assert torch.allclose(ns[k], want, atol=1e-6) and torch.equal(n[k], z[3 + j])


# ---------------------------------------------------------------- routing

def reference(method: DAMLMethod, x: torch.Tensor, y: torch.Tensor, part: str, loss_key: str) -> list[torch.Tensor]:
    """Parameters of `part` after the optimiser steps on d loss / d part alone, on a copy."""
    ref = copy.deepcopy(method)
    module = {"model": ref.model, "generator": ref.generator}[part]
    plist = list(module.parameters())
    grads = torch.autograd.grad(ref.losses(x, y)[loss_key], plist, allow_unused=True)
    for p, g in zip(plist, grads, strict=True):
        p.grad = g
    ref.opt.step()
    return params(module)


@pytest.mark.parametrize("name", VARIANTS)
def test_each_objective_updates_only_its_own_parameters(name: str) -> None:
    """J_gen -> generator, J_metric -> backbone + head, each bit for bit the update of its own
    gradient alone; the wrong routings (J_gen also into the model, J_metric into the generator)
    would give different parameters."""
    method = tiny(name)
    x, y = batch(name)
    want_model = reference(method, x, y, "model", "j_metric")
    wrong_model = reference(method, x, y, "model", "j_gen")
    want_gen = reference(method, x, y, "generator", "j_gen")
    wrong_gen = reference(method, x, y, "generator", "j_metric")
    method.step(x, y)
    assert same(params(method.model), want_model) and not same(params(method.model), wrong_model)
    assert same(params(method.generator), want_gen) and not same(params(method.generator), wrong_gen)


@pytest.mark.parametrize("name", VARIANTS)
def test_warmup_trains_the_metric_on_real_tuples_and_freezes_the_generator(name: str) -> None:
    method = tiny(name, {"daml.warmup": 0.2, "steps": 10})  # 2 warm-up steps
    x, y = batch(name)
    gen_before = params(method.generator)
    want_model = reference(method, x, y, "model", "j_m")
    logs = method.step(x, y)
    assert logs["adversarial"] == 0.0 and logs["j_metric"] == logs["j_m"]
    assert same(params(method.generator), gen_before) and same(params(method.model), want_model)
    method.step(x, y)
    assert same(params(method.generator), gen_before)
    assert method.step(x, y)["adversarial"] == 1.0 and not same(params(method.generator), gen_before)


# ---------------------------------------------------------------- state, config, GoogLeNet

@pytest.mark.parametrize("name", VARIANTS)
def test_state_round_trip_resumes_exactly(name: str) -> None:
    """Steps 0-2, checkpoint, a fresh method loads it: steps 3-5 equal the uninterrupted run's,
    across the warm-up's end (step 3), whose counter the checkpoint holds."""
    x, y = batch(name)
    overrides = {"daml.warmup": 0.3, "steps": 10}
    whole = tiny(name, overrides)
    for _ in range(3):
        whole.step(x, y)
    state = copy.deepcopy(whole.state_dict())
    model_state = copy.deepcopy(whole.model.state_dict())
    resumed = tiny(name, overrides, seed=1)
    resumed.model.load_state_dict(model_state)
    assert not same(params(resumed.generator), params(whole.generator))
    resumed.load_state_dict(state)
    assert resumed.steps_done == 3 and same(params(resumed.generator), params(whole.generator))
    for _ in range(3):
        assert resumed.step(x, y) == whole.step(x, y)
    assert same(params(resumed.model), params(whole.model)) and same(params(resumed.generator), params(whole.generator))


def test_the_codes_procedure_is_a_run_config() -> None:
    """The DAML code's run (main_triplet.py:26-27, train_eval.py:119-127): 100 epochs of 60 steps,
    the test set evaluated after each, the best test NMI kept, the first 20 epochs a warm-up, as
    the override the ledger names."""
    from hdml.core.schedule import eval_due

    method = tiny("daml-triplet", {"steps": 6000, "eval_every": 60, "eval_every_late": 0, "selection": "test",
                                   "selection_metric": "nmi", "daml.warmup": 0.2})
    assert method.warmup_steps == 1200
    assert [s for s in range(1, 6001) if eval_due(s, method.cfg)] == list(range(60, 6001, 60))


def test_config_section_and_checks() -> None:
    assert set(config_sections("daml-triplet")) == {"daml", "triplet"}
    assert set(config_sections("daml-npair")) == {"daml", "npair"}
    for key, bad in (("warmup", 1.0), ("lambda1", -1.0), ("gen_lr_mult", 0.0), ("margin", float("nan"))):
        with pytest.raises(ConfigError, match=f"daml.{key}"):
            tiny("daml-triplet", {f"daml.{key}": bad})


@pytest.mark.parametrize("name,labels", [("daml-triplet", [0, 1, 0, 1, 1, 0]), ("daml-npair", [0, 1, 0, 1])])
def test_one_step_on_a_random_googlenet(name: str, labels: list[int]) -> None:
    from hdml.model.embedding import build_model

    torch.manual_seed(0)
    cfg = default_config()
    merge(cfg, {"backbone": "googlenet", "pretrained": False, "embedding_dim": 16, "batch_size": len(labels),
                "daml.warmup": 0.0})
    validate(cfg)
    model = build_model(cfg, 3)
    method = build_method(name, model, cfg, 2)
    before = params(model.backbone)
    gen_before = params(method.generator)
    x = torch.randn(len(labels), 3, 40, 40, generator=torch.Generator().manual_seed(0))
    logs = method.step(x, torch.tensor(labels))
    assert all(math.isfinite(v) for v in logs.values()) and logs["j_gen"] > 0
    assert not same(params(model.backbone), before) and not same(params(method.generator), gen_before)


def test_report_puts_daml_beside_the_papers_rows() -> None:
    """`daml-triplet` / `daml-npair` map to the paper's 'DAML (Triplet)' / 'DAML (N-pair)' rows:
    ours, the paper's CUB-200-2011 NMI (51.3, 61.3) and the difference, in the paper's row order."""
    import pandas as pd

    from hdml.report import paper_table, results_table

    summ = pd.DataFrame([{"dataset": "cub200", "method": m, "variant": "default", "metric": "nmi", "mean": v,
                          "n": 3, "ci": 0.01} for m, v in (("daml-triplet", 0.50), ("daml-npair", 0.60),
                                                           ("hdml-npair", 0.62))])
    table = results_table(summ, paper_table(), "cub200", selected=False)
    header = table.flat_header()
    order = [row[0].text for row in table.rows]
    assert order.index("DAML (Triplet)") < order.index("DAML (N-pair)") < order.index("HDML (N-pair)")
    rows = {row[0].text: dict(zip(header, [cell.text for cell in row], strict=True)) for row in table.rows}
    got = {k: (rows[k]["NMI ours"], rows[k]["NMI paper"], rows[k]["NMI Δ"])
           for k in ("DAML (Triplet)", "DAML (N-pair)")}
    assert got == {"DAML (Triplet)": ("50.0 ± 1.0", "51.3", "-1.3"), "DAML (N-pair)": ("60.0 ± 1.0", "61.3", "-1.3")}
