"""Evaluate a finished run from its saved test embeddings: the full metric set, and the
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
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hdml import metrics
from hdml.config import read_yaml
from hdml.io import write_json


def eval_due(step: int, cfg: dict[str, Any]) -> bool:
    """Whether training evaluates on the test split after `step` (1-based): at the last step,
    every `eval_every` steps, and under protocol code, once the first of those at or past
    `eval_late_from` is done, every `eval_every_late` steps instead: the cadence at which the
    authors' code looked for its best test NMI (main_npair.py:209, 246-247), so that the
    test-selected table reports what their procedure reports."""
    if step == cfg["steps"]:
        return True
    every = cfg["eval_every"]
    if not every:
        return False
    late = cfg["eval_every_late"]
    if cfg["protocol"] == "code" and late:
        switch = math.ceil(cfg["eval_late_from"] / every) * every
        if step > switch:
            return step % late == 0
    return step % every == 0


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: numpy would append .npz to a bare path
        np.savez_compressed(fh, **arrays)


def embeddings_digest(z: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of embeddings (as float32) and labels, dtypes and shapes included: ties the metrics
    in metrics.json to the exact arrays they were computed from."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(z, dtype=np.float32), np.ascontiguousarray(labels)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n x d) and labels (n) of a saved run; a damaged file is an error naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            z, labels = data["embeddings"], data["labels"]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: unreadable embeddings ({exc!r}); rerun the training to rewrite it") from None
    if z.ndim != 2 or labels.shape != (len(z),):
        raise ValueError(f"{path}: embeddings of shape {z.shape} with labels of shape {labels.shape}; expected "
                         f"n x d and n")
    return z, labels


def evaluate_run(run_dir: str | Path, recompute: bool = False) -> dict[str, Any]:
    run_dir = Path(run_dir)
    saved = read_yaml(run_dir / "config.yaml")
    z, labels = load_embeddings(run_dir / "embeddings.npz")
    trained = run_dir / "metrics.json"
    record = json.loads(trained.read_text()) if trained.exists() else {}
    if not recompute and record.get("embeddings_sha256") == embeddings_digest(z, labels):
        result, source = dict(record["metrics"]), "training"
    else:  # runs from before the choice existed evaluate with today's default
        result, source = metrics.evaluate(z, labels, saved["eval_ks"], seed=saved["seed"],
                                          kmeans_algorithm=saved.get("eval_kmeans", "kmeans++")), "recomputed"
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
