"""The metric network: backbone -> embedding head (BatchNorm1d + Linear), as in the paper."""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from hdml.model.backbones import build_backbone

# TensorFlow's tf.layers.batch_normalization defaults, which every BatchNorm of the authors ran
# (nn_Ops.py:81-84; the paper: "We used the Tensorflow package"): decay 0.99, epsilon 1e-3. In
# PyTorch's convention the running statistics move by 1 - decay per step. PyTorch's own defaults
# (0.1, 1e-5) would average them over ~10 steps instead of ~100, and the evaluation uses them.
TF_BATCHNORM = {"momentum": 0.01, "eps": 1e-3}


class TFBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d as the authors' `tf.layers.batch_normalization(fused=True)` ran on their 2-D inputs:
    TF_BATCHNORM's decay and epsilon, and a running variance that tracks the *biased* batch variance.

    `fused=True` falls back to the plain layer below rank 4 (TF 1's normalization.py; tf_keras'
    `BatchNormalization.build`: `fused = rank in (4, 5)`), whose moving variance follows `tf.nn.moments`,
    sum of squares / n; PyTorch's tracks the unbiased one, n / (n - 1) larger (bench/authors.py measured the
    difference: 0.01 var / (n - 1) per step). Normalisation in training uses the biased variance in both."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, **TF_BATCHNORM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach(), dim=[d for d in range(x.dim()) if d != 1], correction=0)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        return out


def glorot_(layer: nn.Linear) -> nn.Linear:
    """The authors' initialisation of every fully connected layer (fc1, generator, softmax layer;
    `lib/nn_Ops.py:18,38`): Glorot-uniform weights, U(+-sqrt(6 / (fan_in + fan_out))), zero biases.
    PyTorch's default, U(+-1/sqrt(fan_in)) for both, is about half fc1's weight scale (1024 -> 512)."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class EmbeddingHead(nn.Module):
    """BatchNorm1d(feature) then Linear(feature -> E); no L2 normalisation in training."""

    def __init__(self, feature_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.bn = TFBatchNorm1d(feature_dim)
        self.fc = nn.Linear(feature_dim, embedding_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(y))


class EmbeddingNet(nn.Module):
    """Backbone features -> embedding head. With `amp_dtype` set (run config `amp: bf16`) the
    backbone, nearly all of a step's arithmetic, runs under autocast in that dtype, and its
    features return to float32: head, losses, HDML's augmentor and generator stay in float32,
    where the hardness comparisons and the losses keep their precision for a negligible cost."""

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = EmbeddingHead(feature_dim, embedding_dim)
        self.amp_dtype: torch.dtype | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.amp_dtype is None:
            return self.backbone(x)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            y = self.backbone(x)
        return y.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def decayed_weights(self) -> Iterator[nn.Parameter]:
        """Conv and linear weights and biases: the tensors the authors' weight decay covers, every
        trainable variable of backbone and embedding layer whose name lacks "batch_normalization"
        (main_npair.py:60-65; their GoogLeNet's biases are variables, GoogleNet_Model.py:258-260)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                yield module.weight
                if module.bias is not None:
                    yield module.bias


def build_model(cfg: dict, in_channels: int) -> EmbeddingNet:
    backbone, feature_dim = build_backbone(cfg, in_channels)
    return EmbeddingNet(backbone, feature_dim, cfg["embedding_dim"])
