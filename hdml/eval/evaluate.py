"""Evaluate a finished run from its saved evaluation embeddings (the test split, or the query
split searched against the gallery split: `hdml.data.splits`): the full metric set, and the
test-selected numbers the authors' code reported (best test NMI over the curve), kept apart.

Kept apart from training so metrics can be recomputed, or new ones added, without retraining;
it needs neither torch nor the images. The training already evaluated its final embeddings: when
metrics.json names the SHA-256 of exactly the saved embeddings, those numbers are taken instead of
clustering again (at SOP's size the k-means is the costliest step of a run); `--recompute` forces
the computation.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hdml.core.config import read_yaml
from hdml.core.io import write_json
from hdml.eval import metrics


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: numpy would append .npz to a bare path
        np.savez_compressed(fh, **arrays)


@dataclass(frozen=True)
class Embeddings:
    """A run's evaluation embeddings (not yet normalised) and labels: the queries and, for a
    dataset with query/gallery splits, the gallery they search; without one (a `test` split)
    the queries are their own gallery. embeddings.npz holds `embeddings` and `labels` (the
    queries) and, only with a gallery, `gallery_embeddings` and `gallery_labels`."""

    query: np.ndarray
    labels: np.ndarray
    gallery: np.ndarray | None = None
    gallery_labels: np.ndarray | None = None

    @classmethod
    def stacked(cls, z: np.ndarray, labels: np.ndarray, gallery_labels: np.ndarray | None) -> Embeddings:
        """From one array of the query rows followed by the gallery rows (the form the trainer
        keeps and checkpoints)."""
        n = len(labels)
        return cls(z[:n], labels) if gallery_labels is None else cls(z[:n], labels, z[n:], gallery_labels)

    def evaluate(self, ks: list[int], seed: int, kmeans_algorithm: str) -> dict[str, float]:
        return metrics.evaluate(self.query, self.labels, ks, seed=seed, kmeans_algorithm=kmeans_algorithm,
                                gallery=self.gallery, gallery_labels=self.gallery_labels)

    def digest(self) -> str:
        """SHA-256 of the arrays as saved (float32 embeddings, labels; dtypes and shapes included):
        ties the metrics in metrics.json to the exact arrays they were computed from."""
        sha = hashlib.sha256()
        for array in (self.query, self.labels, self.gallery, self.gallery_labels):
            if array is not None:
                array = np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else None)
                sha.update(f"{array.dtype.str}{array.shape}".encode())
                sha.update(array.tobytes())
        return sha.hexdigest()

    def save(self, path: Path) -> None:
        arrays = {"embeddings": self.query.astype(np.float32), "labels": self.labels}
        if self.gallery is not None:
            arrays |= {"gallery_embeddings": self.gallery.astype(np.float32), "gallery_labels": self.gallery_labels}
        save_npz(path, **arrays)


def load_embeddings(path: Path) -> Embeddings:
    """The embeddings of a saved run; a damaged file is an error naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            z, labels = data["embeddings"], data["labels"]
            gallery = (data["gallery_embeddings"], data["gallery_labels"]) if "gallery_embeddings" in data else None
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: unreadable embeddings ({exc!r}); rerun the training to rewrite it") from None
    pairs = [("embeddings", z, "labels", labels)]
    if gallery is not None:
        pairs.append(("gallery_embeddings", gallery[0], "gallery_labels", gallery[1]))
    for what, x, tags, y in pairs:
        if x.ndim != 2 or y.shape != (len(x),):
            raise ValueError(f"{path}: {what} of shape {x.shape} with {tags} of shape {y.shape}; expected "
                             f"n x d and n")
    return Embeddings(z, labels) if gallery is None else Embeddings(z, labels, *gallery)


def read_trained(path: Path) -> dict[str, Any]:
    """A run's metrics.json, checked where `evaluate_run` relies on it: a JSON object whose
    `metrics` (if given) map names to numbers and whose `selection` (if given) is an object."""
    try:
        record = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({type(exc).__name__}); rerun the training to rewrite it") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: must be a JSON object, not {type(record).__name__}")
    found = record.get("metrics", {})
    if not isinstance(found, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in found.values()):
        raise ValueError(f"{path}: `metrics` must map metric names to numbers")
    sha = record.get("embeddings_sha256") or ""
    if not isinstance(record.get("selection") or {}, dict) or not isinstance(sha, str):
        raise ValueError(f"{path}: `selection` must be an object and `embeddings_sha256` a text")
    return record


def evaluate_run(run_dir: str | Path, recompute: bool = False) -> dict[str, Any]:
    run_dir = Path(run_dir)
    saved = read_yaml(run_dir / "config.yaml")
    embeddings = load_embeddings(run_dir / "embeddings.npz")
    trained = run_dir / "metrics.json"
    record = read_trained(trained) if trained.exists() else {}
    if not recompute and record.get("embeddings_sha256") == embeddings.digest():
        result, source = dict(record["metrics"]), "training"
    else:  # runs from before the choice existed evaluate with today's default
        result = embeddings.evaluate(saved["eval_ks"], saved["seed"], saved.get("eval_kmeans", "kmeans++"))
        source = "recomputed"
    curve = pd.read_csv(run_dir / "curve.csv")
    best = curve.loc[curve["nmi"].idxmax()]
    selected = {k: float(best[k]) for k in result if k in best.index}
    selected["step"] = float(best["step"])
    out = {"metrics": result, "metrics_source": source, "test_selected": selected}
    reported = record.get("selection")
    if reported is not None:  # embeddings.npz holds the checkpoint this selection chose
        out["selection"] = reported
    write_json(run_dir / "evaluation.json", out)
    return out
