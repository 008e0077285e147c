"""The small set-up the generator methods' step tests share (DAML: tests/test_daml.py, HDML:
tests/test_hdml_routing.py): a 6 -> 16 -> 12 backbone with a 4-d head, fixed inputs in the
triplet and N-pair batch layouts, and parameter snapshots compared bit for bit."""
from __future__ import annotations

import torch
from torch import nn

from hdml.core.config import default_config, merge, validate
from hdml.methods.base import Method, build_method
from hdml.model.embedding import EmbeddingNet

TRIPLET_LABELS = torch.tensor([0, 1, 2, 0] * 2 + [1, 2, 0, 2])  # 4 triplets [anchors; positives; negatives]
NPAIR_LABELS = torch.tensor([0, 1, 2] * 2)  # 3 pairs [anchors; positives]


def tiny_method(name: str, settings: dict, seed: int = 0) -> Method:
    """Method `name` on the tiny model, lr 1e-2 and weight decay 1e-3 unless `settings` say otherwise."""
    torch.manual_seed(seed)
    model = EmbeddingNet(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12)), 12, 4)
    cfg = default_config()
    merge(cfg, {"lr": 1e-2, "weight_decay": 1e-3, **settings})
    validate(cfg)
    return build_method(name, model, cfg, 3)


def tiny_batch(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed inputs (seed 7) for a batch laid out as `labels`."""
    return torch.randn(len(labels), 6, generator=torch.Generator().manual_seed(7)), labels


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
