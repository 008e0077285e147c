"""DDML: Discriminative Deep Metric Learning (Hu, Lu & Tan, CVPR 2014), its pairwise loss on all
pairs of an m-per-class batch:

    l_ij = +1 if y_i = y_j else -1,        D2_ij = ||z_i - z_j||^2   (squared Euclidean)
    c_ij = 1 - l_ij (tau - D2_ij)          (> 0 exactly when the pair violates its threshold:
                                            positives must have D2 <= tau - 1, negatives D2 >= tau + 1)
    g(c) = (1/beta) log(1 + exp(beta c))   (the paper's generalised logistic loss, a smooth hinge)
    J    = mean over the B(B-1)/2 unordered pairs i < j of g(c_ij)    (reduction: mean)
         = sum  over those pairs = 1/2 sum over ordered pairs i != j   (reduction: sum, the paper's
                                                                        J_1 = 1/2 sum_ij g(...))

The margin between the two thresholds is the paper's fixed 1 (the "1" in c_ij), not a
hyperparameter. Embeddings are not normalised: the paper's distance is the plain squared
Euclidean distance between the network's outputs. g is evaluated as
(relu(beta c) + log1p(exp(-|beta c|))) / beta, exact and free of overflow for any beta c.

Defaults tau 3, beta 2 [unverified]: the values of the DDML paper's experimental settings
(Sec. 4, face verification on LFW / YouTube Faces with a 3-layer tanh MLP; tau, beta, the
regulariser weight lambda and the learning rate mu set empirically to 3, 2, 1e-2, 1e-3) as
recalled by the author of this module; the paper's text could not be reached through this
project's search tools, so hdml/fidelity.md (DDML section) marks them unverified until checked against
the PDF. The paper's regulariser lambda/2 sum_m (||W_m||_F^2 + ||b_m||_2^2) is not part of this
loss: it is the suite's `weight_decay`, which hdml.methods.optim.weight_penalty adds to every
baseline's objective in the same form, weight_decay/2 * sum (||W||^2 + ||b||^2) (lambda =
weight_decay; BatchNorm excluded), set per dataset like every other method's so that the
comparison holds the protocol fixed. `mean` rescales the paper's sum by a constant (a
learning-rate change for SGD, almost none for Adam) so the loss keeps its scale across batch
sizes, as the contrastive baseline does.

HDML's paper (Zheng et al. 2019) runs DDML "using the same pre-trained CNN model" as every other
method and states no DDML settings of its own; its Tables 1-3 DDML row is taken as published.
(Its text cites DDML as [41], which is Weinberger & Saul's LMNN; [12] is Hu et al.)
"""
from __future__ import annotations

import torch

from baselines.common import check_m_per_class, pairwise_sq_dists
from hdml.core.registry import MetricLoss, Range, register_loss


def generalised_logistic(c: torch.Tensor, beta: float) -> torch.Tensor:
    """(1/beta) log(1 + exp(beta c)), computed without overflow (softplus split at 0)."""
    bc = beta * c
    return (torch.relu(bc) + torch.log1p(torch.exp(-bc.abs()))) / beta


@register_loss
class DDMLLoss(MetricLoss):
    name = "ddml"
    display_name = "DDML"
    sampler = "m_per_class"
    defaults = {"tau": 3.0, "beta": 2.0, "reduction": "mean"}
    choices = {"reduction": ("mean", "sum")}
    # search ranges of the tuning mode (hdml.workflow.tune): tau > 1, beta > 0
    ranges = {"tau": Range(1.5, 6.0), "beta": Range(0.5, 8.0, log=True)}

    def __init__(self, **hparams: object) -> None:
        super().__init__(**hparams)
        if not self.hparams["beta"] > 0:
            raise ValueError(f"ddml.beta: must be > 0 (g divides by beta), got {self.hparams['beta']}")
        if not self.hparams["tau"] > 1:
            raise ValueError(f"ddml.tau: must be > 1 (positive pairs aim at D2 <= tau - 1, which must be > 0), "
                             f"got {self.hparams['tau']}")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_m_per_class(self.name, z, labels)
        same = labels[:, None] == labels[None, :]
        sign = torch.where(same, 1.0, -1.0).to(z.dtype)
        c = 1 - sign * (self.hparams["tau"] - pairwise_sq_dists(z))
        per = generalised_logistic(c, self.hparams["beta"])
        upper = torch.triu(torch.ones_like(same), diagonal=1)
        total = per[upper].sum()
        return total if self.hparams["reduction"] == "sum" else total / upper.sum()
