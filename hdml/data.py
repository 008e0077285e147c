"""Reading a prepared split and turning images into normalised batches.

Images are decoded once and resized to `image.resize` (uint8, N x C x H x W); random crop,
flip and normalisation then run per batch on tensors, on the training device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

NORMALISATION = {
    # torchvision's ImageNet weights: RGB in [0, 1], per-channel mean/std.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0 / 255, False),
    # Caffe's BVLC GoogLeNet: BGR in [0, 255] minus the mean pixel.
    "caffe": ((104.0, 117.0, 123.0), (1.0, 1.0, 1.0), 1.0, True),
    # Grey digits: [0, 1] mapped to [-1, 1].
    "unit": ((0.5,), (0.5,), 1.0 / 255, False),
}


def read_split(root: str | Path, dataset: str) -> pd.DataFrame:
    """The dataset's split.csv with absolute image paths; checks columns and values."""
    path = Path(root) / dataset / "split.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no split file; run `hdml prepare {dataset} --root {root}` first")
    df = pd.read_csv(path)
    missing = {"path", "label", "split"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    bad = set(df["split"]) - {"train", "test"}
    if bad:
        raise ValueError(f"{path}: column split has values {sorted(bad)}; expected train/test")
    df["path"] = [str(path.parent / p) for p in df["path"]]
    return df


def decode(path: str, size: int, channels: int) -> np.ndarray:
    """One image as uint8 C x size x size (aspect ratio not kept, as the paper)."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


@dataclass
class ImageTensors:
    """Decoded images of one split (in memory or memory-mapped from the cache), with labels."""

    pixels: np.ndarray  # uint8 N x C x H x W
    labels: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame, size: int, channels: int) -> "ImageTensors":
        return cls(np.stack([decode(p, size, channels) for p in df["path"]]), df["label"].to_numpy())

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: np.ndarray | slice) -> torch.Tensor:
        """uint8 images at `index` (sorted reads are cheapest on a memory map)."""
        return torch.from_numpy(np.ascontiguousarray(self.pixels[index]))


class BatchTransform:
    """uint8 batch -> float batch: random crop + flip (train) or centre crop (test), normalise."""

    def __init__(self, crop: int, flip: bool, normalize: str, device: torch.device) -> None:
        mean, std, scale, bgr = NORMALISATION[normalize]
        self.crop, self.flip, self.scale, self.bgr = crop, flip, scale, bgr
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.device = device

    def __call__(self, pixels: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = pixels.shape
        c = self.crop
        if train and (h > c or w > c or self.flip):
            top = torch.randint(0, h - c + 1, (n,), generator=gen)
            left = torch.randint(0, w - c + 1, (n,), generator=gen)
            flips = torch.rand(n, generator=gen) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
            rows = top[:, None] + torch.arange(c)
            cols = left[:, None] + torch.arange(c)
            cols = torch.where(flips[:, None], cols.flip(1), cols)
            idx_n = torch.arange(n)[:, None, None]
            out = pixels.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        else:
            top, left = (h - c) // 2, (w - c) // 2
            out = pixels[:, :, top : top + c, left : left + c]
        if self.device.type == "cuda":
            out = out.pin_memory()
        x = out.to(self.device, non_blocking=True).float()
        if self.bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std


def load_splits(root: str | Path, dataset: str, cfg: dict, channels: int,
                device: torch.device) -> tuple[ImageTensors, ImageTensors, BatchTransform]:
    """Train and test images of a prepared dataset (from the image cache when one matches),
    and the batch transform of the run config."""
    from hdml.cache import load_cached

    split = read_split(root, dataset)
    img = cfg["image"]
    sets = []
    for name in ("train", "test"):
        rows = split[split["split"] == name]
        cached = load_cached(root, dataset, img["resize"], channels, name)
        sets.append(ImageTensors(cached, rows["label"].to_numpy()) if cached is not None
                    else ImageTensors.from_frame(rows, img["resize"], channels))
    return sets[0], sets[1], BatchTransform(img["crop"], img["flip"], img["normalize"], device)
