"""Feature extractors: a small CNN for the embedded digits demo; GoogLeNet (1024-d, the
paper's) and ResNet-50 (2048-d) from torchvision for the real datasets. Each builder returns
(module, feature dimension); the module maps a normalised image batch to pooled features.

Weights (run config): `pretrained: false` is random init; `pretrained: true` loads
torchvision's ImageNet weights (IMAGENET1K_V1, downloaded to torch's cache), or the state dict
in the local file `weights` (for machines without internet, or Caffe-converted weights).

GoogLeNet's `transform_input` follows `image.normalize`, not the weights. torchvision's
GoogLeNet weights were trained on inputs scaled to [-1, 1]; torchvision sets
`transform_input=True` with them, so that the network takes ImageNet-normalised input and
rescales it to [-1, 1] itself. We keep that for `imagenet` (the same network sees the same
input scale whether its weights are downloaded, loaded from a file, or random, so a run
re-evaluated from `model.pt` matches). With `caffe` the input is already what BVLC Caffe
weights expect (BGR, 0-255, mean pixel removed) and passes unchanged; torchvision's own
weights are refused with it, since they were not trained on that input.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FEATURE_DIMS = {"googlenet": 1024, "resnet50": 2048}
# State-dict entries of the classifier parts we drop (ImageNet fc, GoogLeNet's auxiliary heads).
DROPPED = ("fc.", "aux1.", "aux2.")


class GlobalAvgPool(nn.Module):
    """Mean over height and width (N x C x 1 x 1 with `keepdim`, else N x C). Replaces
    nn.AdaptiveAvgPool2d(1), whose CUDA backward has no deterministic implementation, so that
    `deterministic: true` runs on a GPU instead of raising; same value up to float rounding."""

    def __init__(self, keepdim: bool = False) -> None:
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=self.keepdim)


def small_cnn(in_channels: int, width: int = 32) -> tuple[nn.Module, int]:
    """Three conv blocks and global average pooling: enough for 8x8 digits on a CPU."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers = [*block(in_channels, width), *block(width, 2 * width), nn.MaxPool2d(2), *block(2 * width, 4 * width)]
    return nn.Sequential(*layers, GlobalAvgPool()), 4 * width


def torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict of `name` (downloaded once into torch's cache)."""
    from torchvision import models  # imported here: torchvision alone costs seconds per job

    weights = {"googlenet": models.GoogLeNet_Weights.IMAGENET1K_V1,
               "resnet50": models.ResNet50_Weights.IMAGENET1K_V1}[name]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"pretrained: cannot download torchvision's {name} weights from {weights.url} ({exc}); "
                         f"without internet, save that file and set `weights: PATH`") from None


def file_weights(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights: {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ValueError(f"weights: {path}: not a PyTorch state dict ({exc})") from None
    if not isinstance(state, dict):
        raise ValueError(f"weights: {path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every backbone tensor of `state` (classifier parts dropped); all must fit exactly."""
    kept = {k: v for k, v in state.items() if not k.startswith(DROPPED)}
    try:
        missing, unexpected = net.load_state_dict(kept, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit the backbone ({exc})") from None
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the backbone: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


def torchvision_backbone(name: str, cfg: dict, in_channels: int) -> tuple[nn.Module, int]:
    """GoogLeNet without auxiliary heads, dropout or classifier, or ResNet-50 without classifier."""
    if in_channels != 3:
        raise ValueError(f"backbone: {name} takes RGB images; this dataset has {in_channels} channel(s)")
    normalize, pretrained, weights = cfg["image"]["normalize"], cfg["pretrained"], cfg["weights"]
    if weights is not None and not pretrained:
        raise ValueError(f"weights: {weights} is given but pretrained is false; set pretrained: true to load it")
    if pretrained and weights is None and normalize != "imagenet":
        raise ValueError(f"image.normalize: torchvision's {name} weights expect 'imagenet', got {normalize!r} "
                         f"(Caffe weights need a local file in `weights`)")
    from torchvision import models

    if name == "googlenet":
        net = models.googlenet(weights=None, aux_logits=False, transform_input=normalize == "imagenet",
                               init_weights=not pretrained)
        net.dropout = nn.Identity()
    else:
        net = models.resnet50(weights=None)
    net.fc = nn.Identity()
    net.avgpool = GlobalAvgPool(keepdim=True)  # both nets flatten after it
    if pretrained:
        state = file_weights(weights) if weights is not None else torchvision_weights(name)
        load_weights(net, state, f"weights: {weights}" if weights is not None else f"torchvision {name}")
    return net, FEATURE_DIMS[name]


def build_backbone(cfg: dict, in_channels: int) -> tuple[nn.Module, int]:
    name = cfg["backbone"]
    if name == "smallcnn":
        return small_cnn(in_channels)
    if name in FEATURE_DIMS:
        return torchvision_backbone(name, cfg, in_channels)
    raise ValueError(f"backbone: unknown backbone {name!r}")
