"""The t-SNE map of one run's test embeddings (the paper's Figure 8), as 2-D coordinates.

Its own workflow job (`hdml tsne`, rule `tsne`), not the report's: Barnes-Hut t-SNE of CUB's
5,924 test embeddings takes minutes, which the report, the DAG's last and serial job, would add
to every grid's wall time; as a job it runs beside the training as soon as its run is trained.
The report only draws the coordinates (hdml/report/figures.py `tsne_figure`).
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hdml.core.io import write_with
from hdml.eval.aggregate import run_key

MAX_POINTS = 2000  # a random subsample beyond this: BH t-SNE's cost and an unreadable map
SEED = 0
KEY = ["dataset", "method", "variant", "seed"]
COLUMNS = [*KEY, "n_test", "x", "y", "label"]


@dataclass(frozen=True)
class TsneMap:
    """The map of the run `key`: `xy` (n x 2) and `labels` of n of its `n_test` test embeddings."""

    key: dict[str, Any]
    xy: np.ndarray
    labels: np.ndarray
    n_test: int

    @property
    def subsampled(self) -> bool:
        return self.n_test > len(self.xy)


def subsample(n: int, max_points: int) -> tuple[np.ndarray | None, np.random.Generator]:
    """The indices kept of n points (None: all) and the generator after drawing them, whose next
    draws order the figure's class colours: the map and its colours come from one seed."""
    rng = np.random.default_rng(SEED)
    if n <= max_points:
        return None, rng
    return np.sort(rng.choice(n, max_points, replace=False)), rng


def tsne_map(path: Path, max_points: int = MAX_POINTS) -> TsneMap:
    """Barnes-Hut t-SNE (PCA init, perplexity 30 or less for few points) of the L2-normalised
    test embeddings in a run's embeddings.npz; the run is read from its folder."""
    # here: scikit-learn's t-SNE only for the tsne rule (start-up time of `hdml aggregate`, which imports this)
    from sklearn.manifold import TSNE

    path = Path(path)
    key = run_key(path.parent)
    try:
        with np.load(path, allow_pickle=False) as data:  # an .npz of arrays; never unpickle what a file holds
            for k in ("embeddings", "labels"):
                if k not in data:
                    raise ValueError(f"{path}: no array {k!r}")
            z, labels = data["embeddings"].astype(np.float64), data["labels"]
    except FileNotFoundError:
        raise
    except (OSError, EOFError, AttributeError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: unreadable embeddings ({type(exc).__name__}); rerun the training") from None
    if z.ndim != 2 or len(z) != len(labels) or len(z) < 5:
        raise ValueError(f"{path}: need an n x d 'embeddings' (n >= 5) and n 'labels'; got {z.shape}, {labels.shape}")
    n_test = len(z)
    keep, _ = subsample(n_test, max_points)
    if keep is not None:
        z, labels = z[keep], labels[keep]
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    xy = TSNE(n_components=2, method="barnes_hut", init="pca", random_state=SEED,
              perplexity=min(30.0, (len(z) - 1) / 3)).fit_transform(z)
    return TsneMap(key, xy, labels, n_test)


def write_map(path: Path, m: TsneMap) -> None:
    """One row per point, the run's key on each; coordinates as float64 reprs, which read back
    exactly (t-SNE's float32 would be written short and read back as another float64)."""
    xy = np.asarray(m.xy, dtype=np.float64)
    table = pd.DataFrame({**{k: m.key[k] for k in KEY}, "n_test": m.n_test, "x": xy[:, 0], "y": xy[:, 1],
                          "label": m.labels}, columns=COLUMNS)
    write_with(path, lambda tmp: table.to_csv(tmp, index=False))


def read_map(path: Path) -> TsneMap:
    """A map written by `write_map`, checked: one run, finite coordinates, n_test >= points."""
    path = Path(path)
    try:  # Python's float() on x and y: the exact inverse of the repr written (pandas' parser may be an ulp off)
        table = pd.read_csv(path, dtype={"variant": str}, converters={"x": float, "y": float})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if list(table.columns) != COLUMNS:
        raise ValueError(f"{path}: header must be {','.join(COLUMNS)}; got {','.join(map(str, table.columns))}")
    if len(table) < 5:
        raise ValueError(f"{path}: {len(table)} points; a t-SNE map has at least 5")
    if len(table.drop_duplicates([*KEY, "n_test"])) != 1:
        raise ValueError(f"{path}: more than one run (dataset, method, variant, seed, n_test) in one map")
    xy = table[["x", "y"]].to_numpy(dtype=np.float64)
    if not np.isfinite(xy).all():
        raise ValueError(f"{path}: x and y must be finite numbers")
    if not all(pd.api.types.is_integer_dtype(table[c]) for c in ("seed", "n_test")):
        raise ValueError(f"{path}: seed and n_test must be integers")
    first = table.iloc[0]
    n_test = int(first.n_test)
    if n_test < len(table):
        raise ValueError(f"{path}: n_test = {n_test}, fewer than its {len(table)} points")
    key = {"dataset": str(first.dataset), "method": str(first.method), "variant": str(first.variant),
           "seed": int(first.seed)}
    return TsneMap(key, xy, table.label.to_numpy(), n_test)
