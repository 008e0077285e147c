"""The decoded-image cache: each split decoded once, resized, stored as a uint8 .npy array.

Training then memory-maps `ROOT/DATASET/cache-SIZE/SPLIT.npy`, one per split the dataset has
(`train`, `test`, ... see `hdml.data.splits`; N x C x SIZE x SIZE, rows in split.csv order) instead
of decoding JPEGs every step; crop, flip and normalisation run per batch on the training device.
`meta.json`, written last, records the split file's hash and each split's size, so a cache of an
older split is never used.
"""
from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hdml.core.disk import check_free_space
from hdml.core.io import atomic_path, write_json
from hdml.data.files import decode, read_split
from hdml.data.splits import present_splits

log = logging.getLogger("hdml.data.cache")


def cache_dir(root: str | Path, dataset: str, size: int) -> Path:
    return Path(root) / dataset / f"cache-{size}"


def split_hash(root: str | Path, dataset: str) -> str:
    return hashlib.sha256((Path(root) / dataset / "split.csv").read_bytes()).hexdigest()


def _decode_chunk(args: tuple[list[str], int, int]) -> np.ndarray:
    paths, size, channels = args
    return np.stack([decode(p, size, channels) for p in paths])


def build_cache(root: str | Path, dataset: str, size: int, channels: int, workers: int = 1,
                chunk: int = 256) -> Path:
    """Decode every image of every split (in `workers` processes) into the cache folder."""
    folder = cache_dir(root, dataset, size)
    split = read_split(root, dataset)
    # the SOP cache at 256 x 256 alone is about 24 GB
    check_free_space(folder, len(split) * channels * size * size, "the image cache",
                     "free some space or put --root on a larger disk")
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in present_splits(split["split"]):
        paths = list(split.loc[split["split"] == name, "path"])
        counts[name] = len(paths)
        with atomic_path(folder / f"{name}.npy") as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), channels, size, size))
            jobs = [(paths[i : i + chunk], size, channels) for i in range(0, len(paths), chunk)]
            bar = tqdm(total=len(paths), desc=f"{dataset} {name}", unit="img", disable=None)
            with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
                for i, block in zip(range(0, len(paths), chunk), pool.map(_decode_chunk, jobs), strict=True):
                    arr[i : i + len(block)] = block
                    bar.update(len(block))
            bar.close()
            arr.flush()
            del arr
    write_json(folder / "meta.json", {"dataset": dataset, "size": size, "channels": channels,
                                      "split_sha256": split_hash(root, dataset), "counts": counts})
    return folder


class _Inline:
    """A stand-in for a process pool when one worker is asked for."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    map = staticmethod(map)


def load_cached(root: str | Path, dataset: str, size: int, channels: int, split: str) -> np.ndarray | None:
    """The memory-mapped pixels of `split`, or None when no valid cache exists."""
    folder = cache_dir(root, dataset, size)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    rebuild = f"rebuild it with `hdml cache {dataset} --root {root} --size {size}`"
    try:
        meta = json.loads(meta_path.read_text())
        stale = meta["split_sha256"] != split_hash(root, dataset) or meta["channels"] != channels
        counts = {str(name): int(count) for name, count in meta["counts"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{meta_path}: unreadable cache metadata ({exc!r}); {rebuild}") from None
    if stale:
        log.warning("%s: stale image cache (split.csv changed); decoding images instead", folder)
        return None
    if split not in counts:
        raise ValueError(f"{meta_path}: no {split!r} split in this cache (it has {', '.join(counts)}); "
                         f"split.csv has none either")
    expected = counts[split]
    path = folder / f"{split}.npy"
    try:
        pixels = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # empty, truncated, not an .npy
        raise ValueError(f"{path}: unreadable image cache ({exc}); {rebuild}") from None
    want = (expected, channels, size, size)
    if pixels.dtype != np.uint8 or pixels.shape != want:
        raise ValueError(f"{path}: {pixels.dtype} array of shape {pixels.shape}, expected uint8 {want}; {rebuild}")
    return pixels
