"""Feature extractors: a small CNN for the embedded digits demo; GoogLeNet (1024-d, the
paper's) and ResNet-50 (2048-d) from torchvision, and the authors' own Caffe GoogLeNet
(`googlenet-caffe`, 1024-d), for the real datasets. Each builder returns a module that maps a
normalised image batch to pooled features of its registered dimension (`build_backbone`).

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

`googlenet-caffe` is the network the HDML authors fine-tuned (their lib/GoogleNet_Model.py): the
original Inception v1 (Szegedy et al. 2015: LRN, no BatchNorm) with BVLC's Caffe weights, read
from the MATLAB file their code loads (`tf_ckpt_from_caffe.mat`, see `load_caffe_mat`). There is
no download for it: `pretrained: true` needs `weights: PATH`.

Each backbone is registered beside its builder (`register_backbone`: name, feature dimension,
input normalisation), under the name the flat `backbone` key of the run config takes.
`image.normalize: auto` (the default) is the input the backbone's weights were trained on (its
entry's `normalisation`, a scheme of `hdml.data.normalisation`): choosing the backbone chooses
its preprocessing, which the callers of the data layer pass on (`input_normalisation`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hdml.core.suggest import did_you_mean
from hdml.data.normalisation import NORMALISATION

Builder = Callable[[dict, int], nn.Module]  # (run config, input channels) -> module giving pooled features


@dataclass(frozen=True)
class Backbone:
    """A registered feature extractor: its builder, the dimension of the features it outputs, and
    the normalisation scheme its pretrained weights expect (what `image.normalize: auto` means)."""

    name: str
    build: Builder
    feature_dim: int
    normalisation: str


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, *, feature_dim: int, normalisation: str) -> Callable[[Builder], Builder]:
    """Function decorator: the builder of backbone `name` (the value of the run config's `backbone`)."""
    if normalisation not in NORMALISATION:
        raise ValueError(f"backbone {name}: unknown normalisation {normalisation!r}")

    def add(build: Builder) -> Builder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = Backbone(name, build, feature_dim, normalisation)
        return build

    return add


def backbone_entry(name: str) -> Backbone:
    if name not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"backbone: unknown backbone {name!r}{did_you_mean(name, BACKBONES)}; known: {known}")
    return BACKBONES[name]
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


def input_normalisation(cfg: dict) -> str:
    """The run's `image.normalize`, with `auto` resolved to what its backbone's weights expect."""
    normalize = cfg["image"]["normalize"]
    return backbone_entry(cfg["backbone"]).normalisation if normalize == "auto" else normalize


SMALL_WIDTH = 32  # the first block's channels; the last block's, 4 x this, are the features


@register_backbone("smallcnn", feature_dim=4 * SMALL_WIDTH, normalisation="imagenet")
def small_cnn(cfg: dict, in_channels: int) -> nn.Module:
    """Three conv blocks and global average pooling: enough for 8x8 digits on a CPU."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    width = SMALL_WIDTH
    layers = [*block(in_channels, width), *block(width, 2 * width), nn.MaxPool2d(2), *block(2 * width, 4 * width)]
    return nn.Sequential(*layers, GlobalAvgPool())


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


def check_weight_settings(pretrained: bool, weights: str | None) -> None:
    if weights is not None and not pretrained:
        raise ValueError(f"weights: {weights} is given but pretrained is false; set pretrained: true to load it")


def torchvision_backbone(name: str, cfg: dict, in_channels: int) -> nn.Module:
    """GoogLeNet without auxiliary heads, dropout or classifier, or ResNet-50 without classifier."""
    if in_channels != 3:
        raise ValueError(f"backbone: {name} takes RGB images; this dataset has {in_channels} channel(s)")
    normalize, pretrained, weights = input_normalisation(cfg), cfg["pretrained"], cfg["weights"]
    check_weight_settings(pretrained, weights)
    if pretrained and weights is None and normalize != "imagenet":
        raise ValueError(f"image.normalize: torchvision's {name} weights expect 'imagenet', got {normalize!r} "
                         f"(Caffe weights need a local file in `weights`)")
    from torchvision import models  # here: torchvision alone costs seconds per job (as in torchvision_weights)

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
    return net


@register_backbone("googlenet", feature_dim=1024, normalisation="imagenet")
def googlenet(cfg: dict, in_channels: int) -> nn.Module:
    return torchvision_backbone("googlenet", cfg, in_channels)


@register_backbone("resnet50", feature_dim=2048, normalisation="imagenet")
def resnet50(cfg: dict, in_channels: int) -> nn.Module:
    return torchvision_backbone("resnet50", cfg, in_channels)


# BVLC GoogLeNet's inception blocks: input channels, then the output channels of the
# convolutions Caffe names 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5 and pool_proj.
INCEPTION = {
    "inception_3a": (192, 64, 96, 128, 16, 32, 32),
    "inception_3b": (256, 128, 128, 192, 32, 96, 64),
    "inception_4a": (480, 192, 96, 208, 16, 48, 64),
    "inception_4b": (512, 160, 112, 224, 24, 64, 64),
    "inception_4c": (512, 128, 128, 256, 24, 64, 64),
    "inception_4d": (512, 112, 144, 288, 32, 64, 64),
    "inception_4e": (528, 256, 160, 320, 32, 128, 128),
    "inception_5a": (832, 256, 160, 320, 32, 128, 128),
    "inception_5b": (832, 384, 192, 384, 48, 128, 128),
}
POOL_AFTER = ("inception_3b", "inception_4e")  # a 3x3/2 max pool follows these blocks


def pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    """The authors' 3x3/2 max pool: zeros padded below and right, then VALID (227 -> 114 -> 57)."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 3, 2)


class TFLocalResponseNorm(nn.Module):
    """TensorFlow's local_response_normalization, as the authors call it (depth_radius 5, bias 1,
    alpha 1e-4, beta 0.75): x / (bias + alpha * sum of x^2 over the 2r+1 = 11 nearest channels)^beta.
    Caffe's own LRN of these weights sums 5 channels and scales alpha by 1/5; the authors' port
    runs TF's form, so does this one. Shifted sums, not nn.LocalResponseNorm (an avg_pool3d,
    whose CUDA backward refuses deterministic mode)."""

    def __init__(self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1e-4, beta: float = 0.75) -> None:
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, c = self.depth_radius, x.shape[1]
        squares = F.pad(x * x, (0, 0, 0, 0, r, r))
        window = sum(squares[:, i : i + c] for i in range(2 * r + 1))
        return x / (self.bias + self.alpha * window).pow(self.beta)


class CaffeInception(nn.ModuleDict):
    """One inception block; its convolutions carry Caffe's names ("3x3_reduce", ...)."""

    def __init__(self, cin: int, n1: int, n3r: int, n3: int, n5r: int, n5: int, npool: int) -> None:
        super().__init__({"1x1": nn.Conv2d(cin, n1, 1), "3x3_reduce": nn.Conv2d(cin, n3r, 1),
                          "3x3": nn.Conv2d(n3r, n3, 3, padding=1), "5x5_reduce": nn.Conv2d(cin, n5r, 1),
                          "5x5": nn.Conv2d(n5r, n5, 5, padding=2), "pool_proj": nn.Conv2d(cin, npool, 1)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = F.relu(self["3x3"](F.relu(self["3x3_reduce"](x))))
        b5 = F.relu(self["5x5"](F.relu(self["5x5_reduce"](x))))
        pooled = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 1)  # zero padding, as the authors pad
        return torch.cat([F.relu(self["1x1"](x)), b3, b5, F.relu(self["pool_proj"](pooled))], 1)


class CaffeGoogLeNet(nn.Module):
    """Inception v1 as the HDML authors run it, up to the 1024-d average pool (no dropout, no
    classifier). Module names follow Caffe's layer names with "/" as "." (`conv1.7x7_s2`,
    `inception_4a.5x5_reduce`), so the weight file maps onto it name by name. Random init is
    Caffe's filler of these layers: Xavier (uniform, fan-in) weights, biases 0.2.

    The final pool is a global mean: the authors' 7x7 VALID average pool over the 7x7 map that a
    227 input leaves, the same thing there, and a 1024-d feature at other crop sizes too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.ModuleDict({"7x7_s2": nn.Conv2d(3, 64, 7, stride=2, padding=3)})
        self.conv2 = nn.ModuleDict({"3x3_reduce": nn.Conv2d(64, 64, 1), "3x3": nn.Conv2d(64, 192, 3, padding=1)})
        for name, channels in INCEPTION.items():
            self.add_module(name, CaffeInception(*channels))
        self.lrn = TFLocalResponseNorm()
        self.pool = GlobalAvgPool()
        for conv in caffe_layers(self).values():
            bound = (3.0 / (conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])) ** 0.5
            nn.init.uniform_(conv.weight, -bound, bound)
            nn.init.constant_(conv.bias, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrn(pool_3x3_s2(F.relu(self.conv1["7x7_s2"](x))))
        x = F.relu(self.conv2["3x3_reduce"](x))
        x = F.max_pool2d(self.lrn(F.relu(self.conv2["3x3"](x))), 3, 2)
        for name in INCEPTION:
            x = self.get_submodule(name)(x)
            if name in POOL_AFTER:
                x = pool_3x3_s2(x)
        return self.pool(x)


def caffe_layers(net: nn.Module) -> dict[str, nn.Conv2d]:
    """Caffe layer name ("inception_3a/3x3") -> that convolution of `net`."""
    return {name.replace(".", "/"): m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def load_caffe_mat(net: CaffeGoogLeNet, path: str) -> None:
    """Load the authors' weight file: a MATLAB v4/v5 .mat (read with scipy.io.loadmat, as their
    code does) holding, for each Caffe layer L, the kernel `L` in Caffe's (out, in, kh, kw) order,
    which is PyTorch's, and the bias `L_bias` (any shape of out values; they flatten it). Other
    arrays (a classifier) are ignored. Every layer must be there with its shape, or nothing loads."""
    import scipy.io  # here: only googlenet-caffe reads .mat files; every other job is spared the import
    from scipy.io.matlab import MatReadError

    if not Path(path).is_file():
        raise FileNotFoundError(f"weights: {path}: no such file")
    try:
        arrays = scipy.io.loadmat(path)
    # v7.3 (HDF5) files: NotImplementedError; empty, truncated or garbage ones: the rest
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError, IndexError, EOFError) as exc:
        raise ValueError(f"weights: {path}: not a MATLAB v4/v5 .mat file, which googlenet-caffe reads "
                         f"as the authors' code does with scipy.io.loadmat ({exc})") from None
    state, problems = {}, []
    for layer, conv in caffe_layers(net).items():
        module = layer.replace("/", ".")
        for key, param, name in ((layer, conv.weight, "weight"), (f"{layer}_bias", conv.bias, "bias")):
            if key not in arrays:
                problems.append(f"no array {key!r}")
                continue
            value = np.asarray(arrays[key])
            fits = value.shape == tuple(param.shape) if name == "weight" else value.size == param.numel()
            if value.dtype.kind not in "fiu" or not fits:
                want = tuple(param.shape) if name == "weight" else f"{param.numel()} values"
                problems.append(f"{key!r} is {value.dtype} {value.shape}, expected {want}")
                continue
            state[f"{module}.{name}"] = torch.from_numpy(value.astype(np.float32).reshape(param.shape))
    if problems:
        raise ValueError(f"weights: {path}: not the Caffe GoogLeNet weights googlenet-caffe expects: "
                         + "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""))
    net.load_state_dict(state, strict=True)


@register_backbone("googlenet-caffe", feature_dim=1024, normalisation="caffe")
def caffe_googlenet(cfg: dict, in_channels: int) -> nn.Module:
    """The authors' GoogLeNet, random or with the Caffe weights of the local file `weights`."""
    if in_channels != 3:
        raise ValueError(f"backbone: googlenet-caffe takes colour images; this dataset has {in_channels} channel(s)")
    pretrained, weights = cfg["pretrained"], cfg["weights"]
    check_weight_settings(pretrained, weights)
    if pretrained and weights is None:
        raise ValueError("weights: googlenet-caffe has no download; set `weights: PATH` to the authors' "
                         "tf_ckpt_from_caffe.mat (BVLC GoogLeNet), or pretrained: false for random init")
    if pretrained and input_normalisation(cfg) != "caffe":
        raise ValueError(f"image.normalize: the Caffe GoogLeNet weights expect 'caffe' (BGR, 0-255, mean pixel "
                         f"removed) or 'auto', got {cfg['image']['normalize']!r}")
    net = CaffeGoogLeNet()
    if pretrained:
        load_caffe_mat(net, weights)
    return net


def build_backbone(cfg: dict, in_channels: int) -> tuple[nn.Module, int]:
    """The run config's backbone and the dimension of its features."""
    entry = backbone_entry(cfg["backbone"])
    return entry.build(cfg, in_channels), entry.feature_dim
