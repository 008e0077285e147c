"""A prepared dataset's files: its split.csv and the images it lists, read and checked.

Below both the image cache (`hdml.data.cache`) and the in-memory splits (`hdml.data.tensors`),
which each read them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hdml.data.labels import check_labels
from hdml.data.splits import check_split_names


def read_split(root: str | Path, dataset: str) -> pd.DataFrame:
    """The dataset's split.csv with absolute image paths; checks columns and values (split names:
    `hdml.data.splits`)."""
    path = Path(root) / dataset / "split.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no split file; run `hdml prepare {dataset} --root {root}` first")
    try:
        df = pd.read_csv(path, dtype={"path": str, "split": str, "label": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable split file ({exc})") from None
    missing = {"path", "label", "split"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    check_split_names(df["split"], str(path))
    df["label"] = check_labels(df, str(path))
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
