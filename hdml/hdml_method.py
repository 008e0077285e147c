"""HDML (Zheng et al., CVPR 2019): hardness-aware augmentation + label-preserving generator.

Registered as `hdml-triplet` and `hdml-npair`. Hyperparameters live under the `hdml`
section of the run config; the base loss's own under its name (`npair.l2_reg`, ...).
"""
from __future__ import annotations

from typing import Any

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
