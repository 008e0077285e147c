"""The per-image pipeline: decode one image on access, then crop, flip and normalise it.

`hdml.data.tensors` decodes a whole split into memory and augments per batch; that does not fit
Stanford Online Products (120,053 images at 256x256 are about 24 GB). `SplitImages` is the
same pipeline one image at a time, for a `torch.utils.data.DataLoader`: resize to
`image.resize` squared (aspect ratio not kept), a random `image.crop` square and a horizontal
flip for training, the centre crop for testing, and the normalisation of `image.normalize`.
Given the same crop offsets and flip, its pixels equal `BatchTransform`'s exactly.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from hdml.data.files import decode, read_split
from hdml.data.normalisation import NORMALISATION, normalisation_affine
from hdml.data.tensors import centre_offset


class ImageTransform:
    """uint8 C x H x W -> float C x crop x crop: the per-image twin of `BatchTransform`."""

    def __init__(self, crop: int, flip: bool, normalize: str) -> None:
        self.crop, self.flip, self.bgr = crop, flip, NORMALISATION[normalize][3]
        self.mul, self.add = normalisation_affine(normalize)

    def draw(self, height: int, width: int, gen: torch.Generator | None = None) -> tuple[int, int, bool]:
        """Random (top, left, flip), drawn in `BatchTransform`'s order: with one image and the
        same generator state both give the same crop."""
        c = self.crop
        top = int(torch.randint(0, height - c + 1, (1,), generator=gen))
        left = int(torch.randint(0, width - c + 1, (1,), generator=gen))
        flip = bool(torch.rand(1, generator=gen) < 0.5) if self.flip else False
        return top, left, flip

    def apply(self, pixels: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
        out = pixels[:, top : top + self.crop, left : left + self.crop]
        if flip:
            out = out.flip(2)
        x = out.float()
        if self.bgr:
            x = x.flip(0)
        return x.mul_(self.mul).add_(self.add)

    def __call__(self, pixels: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        _, h, w = pixels.shape
        if h < self.crop or w < self.crop:
            raise ValueError(f"image.crop {self.crop} is larger than the image ({h}x{w})")
        if train and (h > self.crop or w > self.crop or self.flip):
            return self.apply(pixels, *self.draw(h, w, gen))
        return self.apply(pixels, centre_offset(h, self.crop), centre_offset(w, self.crop), False)


class SplitImages(Dataset):
    """Rows of a split (`path` absolute, `label`) as (float image, label) pairs.

    Training draws crops from torch's global generator, which a DataLoader seeds per worker
    from its own generator: a seeded DataLoader gives reproducible crops."""

    def __init__(self, rows: pd.DataFrame, image_cfg: dict, channels: int, train: bool) -> None:
        self.paths = list(rows["path"])
        self.labels = rows["label"].to_numpy()
        self.resize, self.channels, self.train = image_cfg["resize"], channels, train
        self.transform = ImageTransform(image_cfg["crop"], image_cfg["flip"], image_cfg["normalize"])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = torch.tensor(decode(self.paths[i], self.resize, self.channels))  # copies a read-only view
        return self.transform(pixels, self.train), int(self.labels[i])


def split_images(root: str | Path, dataset: str, cfg: dict, channels: int, split: str,
                 normalize: str) -> SplitImages:
    """The `split` (a name of `hdml.data.splits`; `train` gets the random crops and flips) of a prepared
    dataset under the run config's `image` section, normalised by `normalize` (`image.normalize`
    resolved by the caller: `hdml.model.backbones.input_normalisation`)."""
    rows = read_split(root, dataset)
    image = {**cfg["image"], "normalize": normalize}
    return SplitImages(rows[rows["split"] == split], image, channels, train=split == "train")
