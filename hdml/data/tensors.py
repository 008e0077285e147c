"""A prepared dataset's splits in memory, and turning their images into normalised batches.

Images are decoded once (`hdml.data.files`, or memory-mapped from `hdml.data.cache`) and
resized to `image.resize` (uint8, N x C x H x W); random crop, flip and normalisation then run
per batch on tensors, on the training device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hdml.data.cache import load_cached
from hdml.data.files import decode, read_split
from hdml.data.normalisation import NORMALISATION, normalisation_affine


def centre_offset(size: int, crop: int) -> int:
    """Start of the test crop: half the margin, rounded up as the authors' centre crop does
    (their random_fixed_size_crop_mod.py: 256 -> 227 starts at pixel 15, not 14)."""
    return (size - crop + 1) // 2


@dataclass
class ImageTensors:
    """Decoded images of one split (in memory or memory-mapped from the cache), with labels."""

    pixels: np.ndarray  # uint8 N x C x H x W
    labels: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame, size: int, channels: int) -> ImageTensors:
        return cls(np.stack([decode(p, size, channels) for p in df["path"]]), df["label"].to_numpy())

    def __len__(self) -> int:
        return len(self.labels)


class BatchTransform:
    """Images -> float batch on the device, in three stages so only uint8 crops cross to it:
    `draw` picks the crop offsets and flips (train: random; test: centre), `cut` copies those
    crops out of the source array (in memory or memory-mapped; the costly part, which
    `hdml.data.loader` runs in worker threads), `normalise` converts and normalises on the device."""

    def __init__(self, crop: int, flip: bool, normalize: str, device: torch.device,
                 channels_last: bool = True) -> None:
        self.crop, self.flip, self.bgr = crop, flip, NORMALISATION[normalize][3]
        self.mul, self.add = normalisation_affine(normalize, device)
        self.device = device
        self.cuda = device.type == "cuda"
        self.channels_last = channels_last and self.cuda

    def draw(self, n: int, shape: tuple[int, ...], train: bool,
             gen: torch.Generator | None = None) -> list[tuple[int, int, bool]]:
        """(top, left, flip) of n crops of C x H x W images; random draws in the order
        `hdml.data.streaming` uses."""
        h, w, c = shape[1], shape[2], self.crop
        if h < c or w < c:
            raise ValueError(f"image.crop {c} is larger than the cached images ({h}x{w})")
        if train and (h > c or w > c or self.flip):
            tops = torch.randint(0, h - c + 1, (n,), generator=gen).tolist()
            lefts = torch.randint(0, w - c + 1, (n,), generator=gen).tolist()
            flips = (torch.rand(n, generator=gen) < 0.5).tolist() if self.flip else [False] * n
        else:
            tops, lefts, flips = [centre_offset(h, c)] * n, [centre_offset(w, c)] * n, [False] * n
        return list(zip(tops, lefts, flips, strict=True))

    def cut(self, pixels: np.ndarray, index: np.ndarray, plan: list[tuple[int, int, bool]]) -> torch.Tensor:
        """uint8 crops of `pixels[index]` as `plan` says; in pinned memory when the device is a
        GPU, so that the copy there is asynchronous."""
        c = self.crop
        out = torch.empty((len(index), pixels.shape[1], c, c), dtype=torch.uint8, pin_memory=self.cuda)
        view = out.numpy()
        for k, (i, (top, left, f)) in enumerate(zip(index.tolist(), plan, strict=True)):
            window = pixels[i, :, top : top + c, left : left + c]
            view[k] = window[:, :, ::-1] if f else window
        return out

    def crops(self, pixels: np.ndarray, index: np.ndarray, train: bool,
              gen: torch.Generator | None = None) -> torch.Tensor:
        return self.cut(pixels, index, self.draw(len(index), pixels.shape[1:], train, gen))

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        if self.cuda and not batch.is_pinned():
            batch = batch.pin_memory()
        x = batch.to(self.device, non_blocking=True).float()
        if self.bgr:
            x = x.flip(1)
        x = x.mul_(self.mul).add_(self.add)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def load(self, images: ImageTensors, index: np.ndarray, train: bool,
             gen: torch.Generator | None = None) -> torch.Tensor:
        return self.normalise(self.crops(images.pixels, index, train, gen))

    def __call__(self, pixels: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        """A whole uint8 batch already in memory (tests, small data)."""
        return self.normalise(self.crops(pixels.numpy(), np.arange(len(pixels)), train, gen))


def load_images(root: str | Path, dataset: str, cfg: dict, channels: int,
                names: tuple[str, ...]) -> dict[str, ImageTensors]:
    """The named splits of a prepared dataset, each from the image cache when one matches,
    else decoded at the run config's `image.resize`; a split the dataset lacks is an error."""
    split = read_split(root, dataset)
    resize = cfg["image"]["resize"]
    images = {}
    for name in names:
        rows = split[split["split"] == name]
        if rows.empty:
            raise ValueError(f"{Path(root) / dataset / 'split.csv'}: no {name} images")
        cached = load_cached(root, dataset, resize, channels, name)
        images[name] = (ImageTensors(cached, rows["label"].to_numpy()) if cached is not None
                        else ImageTensors.from_frame(rows, resize, channels))
    return images


def batch_transform(cfg: dict, normalize: str, device: torch.device) -> BatchTransform:
    """The batch transform of a run config; `normalize` is its `image.normalize` resolved by the
    caller (`auto`: the backbone's input, `hdml.model.backbones.input_normalisation`), since the
    data layer knows no backbone."""
    img = cfg["image"]
    return BatchTransform(img["crop"], img["flip"], normalize, device, cfg["channels_last"])


def load_splits(root: str | Path, dataset: str, cfg: dict, channels: int, device: torch.device,
                normalize: str) -> tuple[ImageTensors, ImageTensors, BatchTransform]:
    """Train and test images of a prepared dataset and the run config's batch transform
    (`normalize`: the resolved scheme, as `batch_transform`)."""
    images = load_images(root, dataset, cfg, channels, ("train", "test"))
    return images["train"], images["test"], batch_transform(cfg, normalize, device)
