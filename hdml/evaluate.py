"""Re-evaluate a finished run from its saved weights: full metrics, test embeddings, and the
test-selected number the authors' code reported (best test NMI over the curve), kept apart."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from hdml import metrics
from hdml.data import load_splits
from hdml.datasets import get_dataset
from hdml.io import write_json, write_with
from hdml.model import build_model
from hdml.trainer import embed, resolve_device


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: numpy would append .npz to a bare path
        np.savez_compressed(fh, **arrays)


def evaluate_run(run_dir: str | Path, root: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset, seed = saved.pop("dataset"), saved.pop("seed")
    saved.pop("method")
    spec = get_dataset(dataset)
    device = resolve_device(saved["device"])
    _, test_set, transform = load_splits(root, dataset, saved, spec.channels, device)
    model = build_model({**saved, "pretrained": False, "weights": None}, spec.channels).to(device)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    z = embed(model, test_set, transform, saved["eval_batch_size"])
    result = metrics.evaluate(z, test_set.labels, saved["eval_ks"], seed=seed)
    curve = pd.read_csv(run_dir / "curve.csv")
    best = curve.loc[curve["nmi"].idxmax()]
    selected = {k: float(best[k]) for k in result if k in best.index}
    selected["step"] = float(best["step"])
    out = {"metrics": result, "test_selected": selected}
    write_with(run_dir / "embeddings.npz", lambda p: save_npz(p, embeddings=z.astype(np.float32),
                                                              labels=test_set.labels))
    write_json(run_dir / "evaluation.json", out)
    return out
