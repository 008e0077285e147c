"""The metric network: backbone -> embedding head (BatchNorm1d + Linear), as in the paper."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from hdml.backbones import build_backbone


class EmbeddingHead(nn.Module):
    """BatchNorm1d(feature) then Linear(feature -> E); no L2 normalisation in training."""

    def __init__(self, feature_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(feature_dim)
        self.fc = nn.Linear(feature_dim, embedding_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(y))


class EmbeddingNet(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = EmbeddingHead(feature_dim, embedding_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def decayed_weights(self) -> Iterator[nn.Parameter]:
        """Conv and linear weights (the tensors the authors' weight decay covers)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                yield module.weight


def build_model(cfg: dict, in_channels: int) -> EmbeddingNet:
    backbone, feature_dim = build_backbone(cfg, in_channels)
    return EmbeddingNet(backbone, feature_dim, cfg["embedding_dim"])
