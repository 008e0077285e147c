"""DAML: Deep Adversarial Metric Learning (Duan, Zheng, Lin, Lu & Zhou, CVPR 2018), on the
triplet and the N-pair loss: `daml-triplet` and `daml-npair`, settings in the `daml` section.

A hard-negative generator G (an MLP in embedding space) maps the concatenated anchor,
positive and negative embeddings [x; x+; x-] to a synthetic negative x~- and is trained on

    J_gen = J_hard + lambda1 J_reg + lambda2 J_adv
    J_hard = ||x~- - x||^2              (close to the anchor: hard)
    J_reg  = ||x~- - x-||^2             (close to the negative it came from: still a negative)
    J_adv  = [ ||x~- - x||^2 - ||x+ - x||^2 - margin ]_+   (adversarial to the metric: the
                                          synthetic negative nearer the anchor than the positive)

while the metric (backbone + head) trains on real and synthetic tuples. One step, one forward:
  z = head(backbone(x)); real tuples (a, p, n) from z
  n~ = G([a; p; n])                                  (the N-pair variant: one per anchor-negative pair)
  J_gen(n~)                                          -> generator only
  J_metric = J_m(a, p, n) + weight penalty + lambda J_m(a, p, n~)   -> backbone + head (protocol paper)
Each loss's gradient is taken with torch.autograd.grad over its own parameters only, as HDML's
(`hdml.methods.synthesis.set_grads`); J_metric's gradient flows through G into z, G itself is not moved by it.
For the first `daml.warmup` fraction of the run the metric trains on real tuples alone and G
is not updated: the paper's procedure as third-party summaries state it (pre-train the metric,
then train both jointly) [unverified: the paper's text could not be reached], its length
unknown; the public code's 20 of 100 epochs (lib/common/utils.py:253, main_triplet.py:26)
gives 0.2.

N-pair: anchor i's negatives are the other pairs' positives p_j (j != i); G makes
n~_ij = G([a_i; p_i; p_j]) for every j != i, and the synthetic tuple of anchor i is its own
p_i among the n~_ij (HDML's N x N tile with the diagonal kept real).

Protocols (`protocol`), following hdml/fidelity.md "DAML (Duan et al. 2018)":
- paper: J_gen summed over the tuples (the paper's sum over i), G's last layer linear
  [unverified], J_metric = J_m(real) + lambda J_m(synthetic) with lambda = 1 [unverified].
- code (the public Chainer implementation, anonymous1computervision/DAML at 883aa5a,
  lib/common/utils.py:221-268 `lossfun_one_batch`, lib/common/train_eval.py):
  embeddings L2-normalised, x / (||x|| + 1e-5) as Chainer's F.normalize (main_triplet.py:31,
  lib/models/modified_googlenet.py:54-55); J_hard, J_reg means over the tuples (:300-314),
  J_adv a mean halved (:294-298), G's output passed through ReLU (lib/models/net.py:24-27);
  a "discriminator" D (Linear-ReLU-Linear, d -> d -> d, identity weights, zero biases;
  net.py:30-45) maps a, x+ and x~- before J_adv and the metric loss (utils.py:243-250), and after
  the warm-up the metric trains on the synthetic tuples alone through D (utils.py:250, 257-258),
  D at the full rate lr (train_eval.py:80-83), backbone + head at lr / 1000 under a fresh Adam
  (train_eval.py:64-67: a second optimiser over the model, first stepped after the warm-up).
  G and D are decayed by Adam's L2 term at the run's weight decay (train_eval.py:78, 83). The
  evaluation embeds through `eval_features`: D's features once D has trained (utils.py:173-174,
  `epoch >= 20`), before that the normalised embedding.
Both: G is two fully connected layers of the embedding's width (3d -> d -> d, ReLU between),
weights drawn from N(0, 0.02), biases 0 (code: lib/models/net.py:12-27; the paper's sizes
[unverified]); lambda1 = lambda2 = 1 (code: utils.py:224-225; the paper's values [unverified]);
margin 1 (code: `adv_loss`'s alpha, utils.py:294); G's rate = lr * `daml.gen_lr_mult` (code:
lr / 10, lib/common/train_eval.py:76), outside the lr schedule.
Not reproduced (hdml/fidelity.md): the code's gradient routing (its J_gen also moves backbone and
D, its metric loss G), its base triplet loss's mean halved (lib/functions/triplet_loss.py:29; the
suite's `triplet` section is shared with the triplet baseline and HDML), the unnormalised
clustering of D's features with KMeans(98, random_state=0) (the suite's metrics normalise every
embedding), its rate values (a log-uniform draw in [1e-5, 1e-4], never decayed; weight decay 1.09e-3:
the suite's shared `lr`, `lr_milestones`, `weight_decay`), and its 6,000 steps with the best
test NMI of 100 epochs kept (the suite's common protocol; `--set steps=6000 eval_every=60
eval_every_late=0 selection=test selection_metric=nmi` is that procedure).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from baselines.npair import NPairLoss
from baselines.triplet import TripletLoss, split_triplets
from hdml.core.config import ConfigError
from hdml.core.registry import Context, Part, Range, Section, register_method
from hdml.methods.optim import lr_schedule, metric_optimizer, weight_penalty
from hdml.methods.synthesis import SynthesisMethod
from hdml.model.embedding import EmbeddingNet

DAML_DEFAULTS: dict[str, Any] = {
    "lambda": 1.0,  # weight of J_m on synthetic tuples (protocol paper) [unverified: no source reached]
    "lambda1": 1.0,  # J_reg (code: utils.py:224; paper [unverified])
    "lambda2": 1.0,  # J_adv (code: utils.py:225; paper [unverified])
    "margin": 1.0,  # alpha of J_adv (code: utils.py:294; paper [unverified])
    "gen_lr_mult": 0.1,  # generator rate = lr * gen_lr_mult (code: lr / 10, train_eval.py:76)
    "warmup": 0.2,  # fraction of the run's steps the metric trains alone (code: 20 of 100 epochs, utils.py:253)
}
# protocol code, past the warm-up: backbone + head at lr / 1000 (train_eval.py:65)
CODE_BACKBONE_RATE_AFTER_WARMUP = 1e-3
CHAINER_NORMALIZE_EPS = 1e-5  # chainer.functions.normalize's default eps, added to the norm


def check_hparams(h: dict[str, Any]) -> None:
    """Value checks of the `daml` section, naming the key."""
    rules = {
        "lambda": (h["lambda"] >= 0, ">= 0"),
        "lambda1": (h["lambda1"] >= 0, ">= 0"),
        "lambda2": (h["lambda2"] >= 0, ">= 0"),
        "margin": (h["margin"] >= 0, ">= 0"),
        "gen_lr_mult": (h["gen_lr_mult"] > 0, "> 0"),
        "warmup": (0 <= h["warmup"] < 1, "in [0, 1)"),
    }
    for key, (ok, what) in rules.items():
        if not (ok and math.isfinite(h[key])):
            raise ConfigError(f"daml.{key}: must be {what}, got {h[key]!r}")


# search ranges of the tuning mode (hdml.workflow.tune): the loss weights and the generator's rate factor
DAML_RANGES = {"lambda": Range(0.1, 10.0, log=True), "lambda2": Range(0.1, 10.0, log=True),
               "margin": Range(0.1, 4.0, log=True), "gen_lr_mult": Range(0.01, 1.0, log=True)}
DAML_SECTION = Section(DAML_DEFAULTS, hints={"warmup": "in [0, 1)", "gen_lr_mult": "> 0"}, check=check_hparams,
                       ranges=DAML_RANGES)


class HardNegativeGenerator(Part):
    """G([x; x+; x-]) -> x~-: 3d -> d -> d, ReLU after the first layer and, protocol code, after the
    last; optimiser group at lr * `daml.gen_lr_mult`, outside the run's lr schedule."""

    def __init__(self, context: Context, out_relu: bool) -> None:
        super().__init__()
        d = context.embedding_dim
        self.l0 = nn.Linear(3 * d, d, device=context.device)
        self.l1 = nn.Linear(d, d, device=context.device)
        self.out_relu = out_relu
        for layer in (self.l0, self.l1):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        out = self.l1(torch.relu(self.l0(torch.cat([a, p, n], dim=-1))))
        return torch.relu(out) if self.out_relu else out

    def param_groups(self, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"params": list(self.parameters()), "lr": cfg["lr"] * cfg["daml"]["gen_lr_mult"],
                 "weight_decay": code_weight_decay(cfg), "scheduled": False, "name": "generator"}]


def code_weight_decay(cfg: dict[str, Any]) -> float:
    """Adam's L2 term (grad += wd * w, as Chainer's WeightDecay hook) on G and D: protocol code
    decays them as the model (train_eval.py:78, 83), protocol paper not [unverified]."""
    return cfg["weight_decay"] if cfg["protocol"] == "code" else 0.0


class Discriminator(Part):
    """Protocol code's D: Linear(d, d), ReLU, Linear(d, d), identity weights and zero biases
    (net.py:30-45), so that it starts as ReLU; its group at the full rate lr, unscheduled, as the
    code's `dis_optimizer` (train_eval.py:80-83)."""

    def __init__(self, context: Context) -> None:
        super().__init__()
        d = context.embedding_dim
        self.l0 = nn.Linear(d, d, device=context.device)
        self.l1 = nn.Linear(d, d, device=context.device)
        for layer in (self.l0, self.l1):
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1(torch.relu(self.l0(x)))

    def param_groups(self, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"params": list(self.parameters()), "lr": cfg["lr"], "weight_decay": code_weight_decay(cfg),
                 "scheduled": False, "name": "discriminator"}]


def normalise(z: torch.Tensor) -> torch.Tensor:
    """z / (||z|| + 1e-5) row-wise: Chainer's F.normalize, the code's model output (main_triplet.py:31)."""
    return z / (z.norm(dim=1, keepdim=True) + CHAINER_NORMALIZE_EPS)


def generator_losses(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, n_syn: torch.Tensor, *,
                     margin: float, protocol: str,
                     adv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """J_hard, J_reg, J_adv over tuples (rows of a, p, n, n_syn aligned): sums (paper) or means,
    J_adv halved (code). J_adv is taken on `adv` = (a, p, n_syn) as D maps them where given
    (code: utils.py:243-248), else on a, p, n_syn."""
    ea, ep, es = (a, p, n_syn) if adv is None else adv
    per = {"j_hard": (n_syn - a).pow(2).sum(-1),
           "j_reg": (n_syn - n).pow(2).sum(-1),
           "j_adv": torch.relu((es - ea).pow(2).sum(-1) - (ep - ea).pow(2).sum(-1) - margin)}
    if protocol == "paper":
        return {k: v.sum() for k, v in per.items()}
    return {"j_hard": per["j_hard"].mean(), "j_reg": per["j_reg"].mean(), "j_adv": per["j_adv"].mean() / 2}


class DAMLMethod(SynthesisMethod):
    """DAML around a base loss; subclasses say how a batch becomes real and synthetic tuples."""

    family = "DAML"
    loss_class: ClassVar[type[TripletLoss] | type[NPairLoss]]
    loss_terms = {"j_syn": "J_syn (synthetics)", "j_gen": "J_gen (generator)", "j_hard": "J_hard (near the anchor)",
                  "j_reg": "J_reg (near its negative)", "j_adv": "J_adv (adversarial)"}
    loss_figure = "generator"
    section_name = "daml"
    section = DAML_SECTION

    def __init__(self, model: EmbeddingNet, cfg: dict, context: Context, train_size: int | None = None) -> None:
        super().__init__(model, cfg, context)
        h = self.h
        code = self.protocol == "code"
        self.generator = HardNegativeGenerator(context, out_relu=code)
        self.discriminator = Discriminator(context) if code else None
        self.parts: dict[str, Part] = {"loss": self.loss, "generator": self.generator}
        if self.discriminator is not None:
            self.parts["discriminator"] = self.discriminator
        self.opt = metric_optimizer(model, cfg, self.parts.values())
        self.sched = lr_schedule(self.opt, cfg)
        self.warmup_steps = math.ceil(h["warmup"] * cfg["steps"])
        self.steps_done = 0
        if self.warmup_steps == 0:
            self._end_warmup()

    def adversarial(self) -> bool:
        """Past the warm-up: the generator trains and the metric sees synthetic tuples."""
        return self.steps_done >= self.warmup_steps

    def _end_warmup(self) -> None:
        """Protocol code: backbone + head continue at lr / 1000 from a fresh Adam state (the code's
        second optimiser over the model, `optimizer`, first stepped after the warm-up;
        train_eval.py:64-67, utils.py:259); D and G keep their groups."""
        if self.protocol != "code":
            return
        model_params = {id(p) for p in self.model.parameters()}
        for group in self.opt.param_groups:
            if all(id(p) in model_params for p in group["params"]):
                group["lr"] *= CODE_BACKBONE_RATE_AFTER_WARMUP
                for p in group["params"]:
                    self.opt.state.pop(p, None)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the losses see: normalised under protocol code (main_triplet.py:31)."""
        z = self.model(x)
        return normalise(z) if self.protocol == "code" else z

    @torch.no_grad()
    def eval_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the evaluation embeds (the trainer's hook): under protocol code D's features once D
        has trained a step (the code evaluates D's output after the 20th epoch's training,
        utils.py:173-174), before that the normalised embedding; protocol paper: the embedding."""
        z = self.embedding(x)
        if self.discriminator is not None and self.steps_done > self.warmup_steps:
            return self.discriminator(z)
        return z

    def tuples(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(a, p, n, n_syn) rows aligned over the tuples whose synthetic negative J_gen scores."""
        raise NotImplementedError

    def synthetic_loss(self, z: torch.Tensor, n_syn: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def losses(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss of one step with its graph (one backbone forward); see the module doc."""
        self.model.train()
        self.generator.train()
        z = self.embedding(x)
        j_m = self.loss(z, labels) + weight_penalty(self.model, self.cfg["weight_decay"])
        a, p, n, n_syn = self.tuples(z)
        if self.discriminator is None:
            adv, z_metric, syn_metric = None, z, n_syn
        else:  # D maps the real embeddings and the synthetic negatives alike (row-wise)
            d = self.discriminator
            z_metric, syn_metric = d(z), d(n_syn)
            adv = (d(a), d(p), syn_metric)
        g = generator_losses(a, p, n, n_syn, margin=self.h["margin"], protocol=self.protocol, adv=adv)
        j_gen = g["j_hard"] + self.h["lambda1"] * g["j_reg"] + self.h["lambda2"] * g["j_adv"]
        j_syn = self.synthetic_loss(z_metric, syn_metric)
        if not self.adversarial():
            j_metric = j_m
        elif self.protocol == "code":
            j_metric = j_syn + weight_penalty(self.model, self.cfg["weight_decay"])
        else:
            j_metric = j_m + self.h["lambda"] * j_syn
        return {"j_m": j_m, "j_syn": j_syn, "j_metric": j_metric, **g, "j_gen": j_gen}

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        adversarial = self.adversarial()
        L = self.losses(x, labels)
        critic = [] if self.discriminator is None else list(self.discriminator.parameters())
        metric_params = [p for p in [*self.model.parameters(), *self.loss.parameters(), *critic] if p.requires_grad]
        groups = [(metric_params, L["j_metric"])]
        if adversarial:  # J_gen's gradient first, keeping the graph J_metric's backward then frees
            groups.insert(0, (list(self.generator.parameters()), L["j_gen"]))
        self.routed_step(groups)
        self.steps_done += 1
        if self.steps_done == self.warmup_steps:
            self._end_warmup()
        logs = {k: v.item() for k, v in L.items()}
        return {**logs, "loss": logs["j_metric"], "adversarial": float(adversarial)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps_done = state["steps_done"]


@register_method("daml-triplet")
class DAMLTriplet(DAMLMethod):
    """Batch [anchors; positives; negatives]; one synthetic negative per triplet."""

    display_name = "DAML (Triplet)"
    sampler = "triplet"
    loss_class = TripletLoss
    base = TripletLoss.name

    def tuples(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, p, n = split_triplets(z)
        if len(a) == 0:
            raise ValueError(f"daml-triplet: a batch needs at least 3 rows (one triplet), got {len(z)}")
        return a, p, n, self.generator(a, p, n)

    def synthetic_loss(self, z: torch.Tensor, n_syn: torch.Tensor) -> torch.Tensor:
        a, p, _ = split_triplets(z)
        return self.loss.triplets(a, p, n_syn)


@register_method("daml-npair")
class DAMLNPair(DAMLMethod):
    """Batch [a_1..a_N; p_1..p_N]; n~_ij = G([a_i; p_i; p_j]) for every j != i. J_gen over the
    N(N-1) off-diagonal pairs; J_syn: each anchor against its row, p_i at column i, n~_ij elsewhere."""

    display_name = "DAML (N-pair)"
    sampler = "npair"
    loss_class = NPairLoss
    base = NPairLoss.name

    def _tile(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anchors, positives, generated N x N x d tile, off-diagonal mask)."""
        n = len(z) // 2
        if n < 2 or len(z) != 2 * n:
            raise ValueError(f"daml-npair: a batch must be 2N rows with N >= 2 pairs, got {len(z)} rows")
        a, p = z[:n], z[n:]
        d = z.shape[1]
        tile = self.generator(a[:, None].expand(n, n, d), p[:, None].expand(n, n, d), p[None].expand(n, n, d))
        return a, p, tile, ~torch.eye(n, dtype=torch.bool, device=z.device)

    def tuples(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, p, tile, off = self._tile(z)
        n, d = len(a), z.shape[1]
        return (a[:, None].expand(n, n, d)[off], p[:, None].expand(n, n, d)[off], p[None].expand(n, n, d)[off],
                tile[off])

    def synthetic_loss(self, z: torch.Tensor, n_syn: torch.Tensor) -> torch.Tensor:
        n = len(z) // 2
        a, p = z[:n], z[n:]
        off = ~torch.eye(n, dtype=torch.bool, device=z.device)
        rows = p[None].expand(n, n, -1).index_put((off,), n_syn)  # row i: p_i at column i, n~_ij elsewhere
        # anchor i against row i rolled so that its positive comes first (npair_loss's target 0)
        return torch.stack([self.loss.pairs(a[i : i + 1], torch.roll(rows[i], -i, 0)) for i in range(n)]).mean()
