"""Input normalisation schemes: what each set of pretrained weights expects of a pixel.

Facts about images, owned by the data layer: a backbone (`hdml.model.backbones`) names the
scheme its weights expect, `image.normalize` (or `auto`: the backbone's) picks one, and the
batch and per-image pipelines (`hdml.data.tensors`, `hdml.data.streaming`) apply it.
"""
from __future__ import annotations

import torch

NORMALISATION = {
    # torchvision's ImageNet weights: RGB in [0, 1], per-channel mean/std.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0 / 255, False),
    # Caffe's BVLC GoogLeNet: BGR in [0, 255] minus the mean pixel; the HDML authors' values
    # (their FLAGS.py image_mean, subtracted in lib/nn_Ops.py batch_data).
    "caffe": ((104.0, 117.0, 123.0), (1.0, 1.0, 1.0), 1.0, True),
    # Grey digits: [0, 1] mapped to [-1, 1].
    "unit": ((0.5,), (0.5,), 1.0 / 255, False),
}


def normalisation_affine(normalize: str, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mul, add), shape C x 1 x 1, with x * mul + add == (x * scale - mean) / std:
    one fused pass, and the same arithmetic on the batch and the per-image paths."""
    mean, std, scale, _ = NORMALISATION[normalize]
    mean_t, std_t = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    return (scale / std_t).view(-1, 1, 1), (-mean_t / std_t).view(-1, 1, 1)
