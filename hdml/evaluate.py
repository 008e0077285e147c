"""Evaluate a finished run from its saved test embeddings: the full metric set, and the
test-selected numbers the authors' code reported (best test NMI over the curve), kept apart.

Kept apart from training so metrics can be recomputed, or new ones added, without retraining;
it needs neither torch nor the images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hdml import metrics
from hdml.io import write_json


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: numpy would append .npz to a bare path
        np.savez_compressed(fh, **arrays)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    with np.load(run_dir / "embeddings.npz") as data:
        z, labels = data["embeddings"], data["labels"]
    result = metrics.evaluate(z, labels, saved["eval_ks"], seed=saved["seed"])
    curve = pd.read_csv(run_dir / "curve.csv")
    best = curve.loc[curve["nmi"].idxmax()]
    selected = {k: float(best[k]) for k in result if k in best.index}
    selected["step"] = float(best["step"])
    out = {"metrics": result, "test_selected": selected}
    write_json(run_dir / "evaluation.json", out)
    return out
