"""Writing a dataset drawn in memory (the embedded demos: digits, glyphs) in the real datasets'
layout, images/NNNN.png + split.csv, so it goes through the same split.csv -> image path as they do.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hdml.core.io import write_with


def write_dataset(target: Path, pixels: np.ndarray, labels: np.ndarray, test: np.ndarray) -> Path:
    """Grey uint8 `pixels` (n x h x w) as target/images/NNNN.png, then target/split.csv (path, label,
    split: test where `test`); the images folder is replaced whole, split.csv last and atomically, so
    a prepare killed half-way leaves no split.csv naming missing images. Returns split.csv's path."""
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".images.", dir=target))
    paths = []
    for i, img in enumerate(pixels):
        rel = f"images/{i:04d}.png"
        Image.fromarray(img, mode="L").save(tmp / Path(rel).name)
        paths.append(rel)
    shutil.rmtree(target / "images", ignore_errors=True)
    tmp.rename(target / "images")
    split = pd.DataFrame({"path": paths, "label": labels, "split": np.where(test, "test", "train")})
    out = target / "split.csv"
    write_with(out, lambda p: split.to_csv(p, index=False))
    return out
