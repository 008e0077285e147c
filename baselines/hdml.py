"""HDML (Zheng et al., CVPR 2019): hardness-aware augmentation + label-preserving generator.

Registered as `hdml-triplet` and `hdml-npair`. Hyperparameters live under the `hdml`
section of the run config; the base loss's own under its name (`npair.l2_reg`, ...).

One step (spec sections 2-4), with one backbone forward:
  y = backbone(x), z = head(y), J_m = base(z) + weight penalty
  z_hat = augmentor(z, lambda0)                (synthetic tuple, gradient kept)
  [y', y_tilde] = generator([z; z_hat])        (one batch)
  z_tilde = head(y_tilde)                      (training mode), J_syn = base(z_tilde)
  J_metric = w J_m + (1 - w) J_syn, w = exp(-beta / J_gen_avg)   -> backbone + head
  J_gen from J_recon(y', y) and J_soft(classifier(y_tilde))      -> generator
  J_cls = cross-entropy of the classifier on real y (detached)     -> classifier
Each loss's gradient is taken with torch.autograd.grad over its own parameter group only.

Protocols (`protocol`):
- code: J_gen = (1 - lambda) J_recon + S lambda J_soft, J_recon summed over batch and dimensions,
  N-pair J_soft = mean CE over the anchors + mean CE over the tile (two means added); J_avg and J_gen_avg are means over
  the last completed block of `hdml.block` (64) steps; J_avg averages the weighted J_m
  (w J_m, weight penalty included), as the authors' code feeds it.
- paper: J_gen = J_recon + lambda J_soft, J_recon = mean over the batch of ||y' - y||^2 (the
  scale at which lambda balances the two terms; hdml/fidelity.md), J_soft one mean; both averages are over the last
  epoch, an epoch being ceil(training images / batch size) steps (batches are drawn with replacement, so this is the
  number of steps that show as many images as the training split holds); J_avg averages the
  unweighted J_m (the paper's "average metric loss"). The paper, like the code, trains the
  softmax layer on real features with "gradients only updating this layer", so the classifier
  routing is the same. The paper gives no rate for generator and classifier ("10x the CNN rate
  for the other fully connected layers" is applied to the head by `metric_optimizer`); they keep
  `hdml.gen_lr` / `hdml.cls_lr`.
Both averages start at `hdml.init_avg` (1e6) and skip non-finite values; a block with no finite
value keeps the previous average. A non-finite loss is logged as it is and the parameters it
trains skip that step (its gradient would poison the weights); the trainer counts such steps.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from baselines.hdml_augmentor import augment_npair_tile, augment_triplets, hardness
from baselines.hdml_generator import Generator, classifier, gen_loss, recon_loss, soft_loss
from baselines.npair import NPairLoss
from baselines.triplet import TripletLoss, split_triplets
from hdml.core.config import ConfigError
from hdml.core.registry import Context, Part, Range, Section, register_method
from hdml.methods.optim import authors_init, lr_schedule, metric_optimizer, weight_penalty
from hdml.methods.synthesis import BlockAverage, SynthesisMethod
from hdml.model.embedding import EmbeddingNet

HDML_DEFAULTS: dict[str, Any] = {
    "alpha": None,  # pulling factor; null = the paper's 7 (triplet) or 90 (N-pair)
    "beta": 1e4,  # J_metric balance (code: 1e4 Cars, 5e3 CUB, 5e4 SOP)
    "lambda": 0.5,  # J_gen balance
    "softmax_scale": 1e4,  # S in the code's J_gen = (1 - lambda) J_recon + S lambda J_soft
    "gen_lr": 1e-2,
    "cls_lr": 1e-3,
    "gen_hidden": 512,
    "softmax": True,  # ablation: false drops J_soft
    "recon": True,  # ablation: false drops J_recon
    "lambda0": None,  # fixed hardness in [0, 1), no adaptation; null = adaptive
    "block": 64,  # iterations per block of the running averages J_avg, J_gen_avg (code)
    "init_avg": 1e6,  # initial value of both block averages (code)
}


def metric_weight(beta: float, j_gen_avg: float) -> float:
    """w = exp(-beta / J_gen_avg), the weight of J_m in J_metric (1 - w goes to J_syn)."""
    if beta == 0:
        return 1.0
    if j_gen_avg <= 0:
        return 0.0
    return math.exp(-beta / j_gen_avg)


def check_hparams(h: dict[str, Any]) -> None:
    """Value checks of the `hdml` section, naming the key."""
    rules = {
        "beta": (h["beta"] >= 0, ">= 0"),
        "lambda": (0 <= h["lambda"] <= 1, "in [0, 1]"),
        "softmax_scale": (h["softmax_scale"] >= 0, ">= 0"),
        "gen_lr": (h["gen_lr"] > 0, "> 0"),
        "cls_lr": (h["cls_lr"] > 0, "> 0"),
        "gen_hidden": (h["gen_hidden"] >= 1, ">= 1"),
        "block": (h["block"] >= 1, ">= 1"),
        "init_avg": (h["init_avg"] > 0, "> 0"),
    }
    if h["alpha"] is not None:
        rules["alpha"] = (math.isfinite(h["alpha"]) and h["alpha"] >= 0, "a finite number >= 0 or null")
    if h["lambda0"] is not None:
        rules["lambda0"] = (0 <= h["lambda0"] < 1, "in [0, 1) or null")
    for key, (ok, what) in rules.items():
        if not ok:
            raise ConfigError(f"hdml.{key}: must be {what}, got {h[key]!r}")


# search ranges of the tuning mode (hdml.workflow.tune): the pulling factor over the paper's sweep (Figures
# 6-7: 0-180; triplet 7, N-pair 90), the balances beta (code: 5e3-5e4 by dataset) and lambda, the scale S
HDML_RANGES = {"alpha": Range(1.0, 180.0, log=True), "beta": Range(1e3, 1e5, log=True),
               "lambda": Range(0.1, 0.9), "softmax_scale": Range(1e3, 1e5, log=True)}
HDML_SECTION = Section(HDML_DEFAULTS, nullable={"alpha": (float,), "lambda0": (float,)},
                       hints={"lambda0": "in [0, 1)"}, check=check_hparams, ranges=HDML_RANGES)


class HDMLNets(Part):
    """HDML's networks beyond the model, built from the run's context: the generator
    (embeddings -> backbone features) and the softmax classifier on features, each its own
    optimiser group at its own rate (`hdml.gen_lr`, `hdml.cls_lr`), outside the run's lr schedule.
    `glorot` (protocol code): their Linear layers start as the authors' (`hdml.model.embedding.glorot_`)."""

    def __init__(self, context: Context, hidden: int, glorot: bool = False) -> None:
        super().__init__()
        self.generator = Generator(context.embedding_dim, context.feature_dim, hidden, glorot=glorot)
        self.classifier = classifier(context.feature_dim, context.num_classes, glorot=glorot)

    def param_groups(self, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        h = cfg["hdml"]
        return [{"params": list(self.generator.parameters()), "lr": h["gen_lr"], "scheduled": False,
                 "name": "generator"},
                {"params": list(self.classifier.parameters()), "lr": h["cls_lr"], "scheduled": False,
                 "name": "classifier"}]


class HDMLMethod(SynthesisMethod):
    """HDML around a base loss; subclasses say how a batch becomes a synthetic tuple."""

    family = "HDML"
    default_alpha: ClassVar[float]
    loss_class: ClassVar[type[TripletLoss] | type[NPairLoss]]
    loss_terms = {"j_syn": "J_syn (synthetics)", "j_gen": "J_gen (generator)", "j_recon": "J_recon",
                  "j_soft": "J_soft", "j_cls": "J_cls (classifier)", "lambda0": "λ0 (hardness)"}
    loss_figure = "hdml"
    section_name = "hdml"
    section = HDML_SECTION

    def __init__(self, model: EmbeddingNet, cfg: dict, context: Context, train_size: int | None = None) -> None:
        super().__init__(model, cfg, context)
        h = self.h
        authors_init(model, cfg)
        self.alpha = self.default_alpha if h["alpha"] is None else h["alpha"]
        self.nets = HDMLNets(context, h["gen_hidden"], glorot=self.protocol == "code").to(context.device)
        self.generator, self.classifier = self.nets.generator, self.nets.classifier
        self.parts = {"loss": self.loss, "nets": self.nets}
        self.opt = metric_optimizer(model, cfg, self.parts.values())
        self.sched = lr_schedule(self.opt, cfg)
        block = h["block"] if self.protocol == "code" else self.epoch_steps(cfg, train_size)
        self.j_avg = BlockAverage(block, h["init_avg"])
        self.j_gen_avg = BlockAverage(block, h["init_avg"])

    @staticmethod
    def epoch_steps(cfg: dict, train_size: int | None) -> int:
        """Protocol paper's averaging block: one epoch = ceil(train images / batch size) steps."""
        if train_size is None or train_size < 1:
            raise ValueError("protocol paper: HDML averages over an epoch and needs the number of training "
                             f"images (train_size), got {train_size!r}")
        return math.ceil(train_size / cfg["batch_size"])

    def lambda0(self) -> float:
        """Hardness in force: the fixed `hdml.lambda0`, else 1 - exp(-alpha / J_avg)."""
        fixed = self.h["lambda0"]
        return hardness(self.alpha, self.j_avg.value) if fixed is None else fixed

    def synthesize(self, z: torch.Tensor, labels: torch.Tensor,
                   lam0: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(synthetic tuple rows, their labels, moved-mask over the synthetic negatives)."""
        raise NotImplementedError

    def synthetic_loss(self, z_syn: torch.Tensor) -> torch.Tensor:
        """The base loss on the synthetic tuple laid out as `synthesize` returns it."""
        raise NotImplementedError

    def soft_groups(self, n_rows: int) -> tuple[int, ...] | None:
        """Row groups whose mean cross-entropies J_soft adds (`soft_loss`); None: one mean."""
        return None

    def losses(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss of one step with its graph (one backbone forward); see the module doc."""
        self.model.train()
        self.generator.train()
        self.classifier.train()
        y = self.model.features(x)
        z = self.model.head(y)
        j_m = self.loss(z, labels) + weight_penalty(self.model, self.cfg["weight_decay"])
        lam0 = self.lambda0()
        synth, syn_labels, moved = self.synthesize(z, labels, lam0)
        out = self.generator(torch.cat([z, synth]))
        y_rec, y_syn = out[: len(z)], out[len(z) :]
        j_syn = self.synthetic_loss(self.model.head(y_syn))
        w = metric_weight(self.h["beta"], self.j_gen_avg.value)
        j_m_weighted = w * j_m
        j_recon = recon_loss(y_rec, y, protocol=self.protocol)
        j_soft = soft_loss(self.classifier, y_syn, syn_labels, self.soft_groups(len(y_syn)))
        h = self.h
        return {
            "j_m": j_m,
            "j_m_weighted": j_m_weighted,
            "j_syn": j_syn,
            "j_metric": j_m_weighted + (1 - w) * j_syn,
            "j_recon": j_recon,
            "j_soft": j_soft,
            "j_gen": gen_loss(j_recon, j_soft, protocol=self.protocol, lam=h["lambda"], scale=h["softmax_scale"],
                              recon=h["recon"], softmax=h["softmax"]),
            "j_cls": F.cross_entropy(self.classifier(y.detach()), labels),
            "lambda0": torch.tensor(lam0, dtype=torch.float64),
            "pulled": moved.float().mean(),
        }

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        j_avg, j_gen_avg = self.j_avg.value, self.j_gen_avg.value
        L = self.losses(x, labels)
        groups = [
            (list(self.classifier.parameters()), L["j_cls"]),
            (list(self.generator.parameters()), L["j_gen"]),
            ([p for p in [*self.model.parameters(), *self.loss.parameters()] if p.requires_grad], L["j_metric"]),
        ]
        self.routed_step(groups)  # J_metric's last: the backbone's activations are freed in its backward pass
        logs = {k: v.item() for k, v in L.items()}
        self.j_avg.update(logs["j_m_weighted"] if self.protocol == "code" else logs["j_m"])
        self.j_gen_avg.update(logs["j_gen"])
        return {**logs, "loss": logs["j_metric"], "j_avg": j_avg, "j_gen_avg": j_gen_avg}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "j_avg": self.j_avg.state_dict(), "j_gen_avg": self.j_gen_avg.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.j_avg.load_state_dict(state["j_avg"])
        self.j_gen_avg.load_state_dict(state["j_gen_avg"])


@register_method("hdml-triplet")
class HDMLTriplet(HDMLMethod):
    """Batch [anchors; positives; negatives]; one synthetic negative per triplet."""

    sampler = "triplet"
    display_name = "HDML (Triplet)"
    default_alpha = 7.0
    loss_class = TripletLoss
    base = TripletLoss.name

    def synthesize(self, z: torch.Tensor, labels: torch.Tensor,
                   lam0: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, p, n = split_triplets(z)
        if len(a) == 0:
            raise ValueError(f"hdml-triplet: a batch needs at least 3 rows (one triplet), got {len(z)}")
        n_hat, moved = augment_triplets(a, p, n, lam0)
        return torch.cat([a, p, n_hat]), labels[: 3 * len(a)], moved

    def synthetic_loss(self, z_syn: torch.Tensor) -> torch.Tensor:
        return self.loss.triplets(*split_triplets(z_syn))


@register_method("hdml-npair")
class HDMLNPair(HDMLMethod):
    """Batch [a_1..a_N; p_1..p_N]; synthetic tuple [a_1..a_N; tile], tile row i*N + j = p_j
    pulled toward a_i (the authors' layout). J_syn: each anchor against its own tile row."""

    sampler = "npair"
    display_name = "HDML (N-pair)"
    default_alpha = 90.0
    loss_class = NPairLoss
    base = NPairLoss.name

    def synthesize(self, z: torch.Tensor, labels: torch.Tensor,
                   lam0: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = len(z) // 2
        if n < 2 or len(z) != 2 * n:
            raise ValueError(f"hdml-npair: a batch must be 2N rows with N >= 2 pairs, got {len(z)} rows")
        tile, moved = augment_npair_tile(z[:n], z[n:], lam0)
        syn_labels = torch.cat([labels[:n], labels[n:].repeat(n)])
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
        return torch.cat([z[:n], tile.reshape(n * n, -1)]), syn_labels, moved[off_diagonal]

    def soft_groups(self, n_rows: int) -> tuple[int, ...] | None:
        """protocol code: mean CE over the N anchors + mean CE over the N x N tile, as the authors'
        genSoftmax (HDML.py:91-95); paper: one mean over the synthetic tuple (the paper says no more)."""
        if self.protocol != "code":
            return None
        n = (math.isqrt(4 * n_rows + 1) - 1) // 2  # n_rows = N + N^2
        return (n, n * n)

    def synthetic_loss(self, z_syn: torch.Tensor) -> torch.Tensor:
        """mean_i of `pairs(a_i, row i)`, row i rolled so its own positive (column i) comes first:
        the cross-entropy then targets column 0, and the l2 term averages over the whole tile."""
        n = (math.isqrt(4 * len(z_syn) + 1) - 1) // 2  # len = N + N^2
        anchors, tile = z_syn[:n], z_syn[n:].reshape(n, n, -1)
        rows = torch.arange(n, device=z_syn.device)
        rolled = tile[rows[:, None], (rows[:, None] + rows[None, :]) % n]
        return torch.vmap(lambda a, cand: self.loss.pairs(a[None], cand))(anchors, rolled).mean()
