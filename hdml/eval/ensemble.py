"""Final models per fold, as the reality check reports them (Musgrave et al., "A Metric Learning
Reality Check", ECCV 2020): a variant with `folds: K` trains, per seed, one model per validation
fold F (runs `VARIANT.foldF`, run-config `val_fold: F`, each selecting its checkpoint on its own
fold), and its seed folder `VARIANT/seedN` holds the K models evaluated two ways:

- separated: each fold model's test metrics, averaged over the K models (their "separated
  128-dim" figure with 128-d models);
- concatenated: the K models' test embeddings, each L2-normalised per model, joined into one
  K x d embedding (their "concatenated 512-dim" figure), evaluated as one model. The per-model
  normalisation is powerful-benchmarker's `ConcatenateEmbeddings(normalize_embeddings=True)`;
  the metrics normalise the joined vector again, which scales every row alike (norm sqrt(K)).

The seed folder looks like a run folder to `hdml aggregate` (evaluation.json, curve.csv,
losses.csv, config.yaml, embeddings.npz): its `metrics` are the concatenated ones, `separated`
the mean over folds (metrics.csv `separated:<metric>`), `test_selected`, the curve and the
losses the mean over the fold models, so a fold-model variant reads like any other.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hdml.core.io import write_json, write_text, write_with
from hdml.eval.evaluate import Embeddings, load_embeddings
from hdml.eval.metrics import l2_normalise

SEPARATED = "separated:"  # metrics.csv prefix of the fold models' mean


def concatenate(parts: list[Embeddings]) -> Embeddings:
    """The fold models' embeddings of the same images, each L2-normalised, joined side by side."""
    first = parts[0]
    for i, part in enumerate(parts[1:], 1):
        same = np.array_equal(part.labels, first.labels) and (
            (part.gallery_labels is None) == (first.gallery_labels is None)) and (
            first.gallery_labels is None or np.array_equal(part.gallery_labels, first.gallery_labels))
        if not same:
            raise ValueError(f"fold model {i} embedded other images than fold model 0 (labels differ); "
                             f"the concatenated embedding needs the same test images in the same order")

    def join(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([l2_normalise(np.asarray(a, dtype=np.float32)) for a in arrays], axis=1)

    if first.gallery is None:
        return Embeddings(join([p.query for p in parts]), first.labels)
    return Embeddings(join([p.query for p in parts]), first.labels, join([p.gallery for p in parts]),
                      first.gallery_labels)


def mean_metrics(records: list[dict[str, float]]) -> dict[str, float]:
    """The mean over fold models of each metric all of them have."""
    keys = [k for k in records[0] if all(k in r for r in records)]
    return {k: float(np.mean([r[k] for r in records])) for k in keys}


def _mean_by_step(tables: list[pd.DataFrame]) -> pd.DataFrame:
    joined = pd.concat(tables, ignore_index=True)
    return joined.groupby("step", sort=True).mean(numeric_only=True).reset_index()


def ensemble_run(parts: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Evaluate the fold models in `parts` (fold 0 first) separated and concatenated; write the
    seed folder `out`. Returns its evaluation.json record."""
    parts, out = [Path(p) for p in parts], Path(out)
    if len(parts) < 2:
        raise ValueError(f"an ensemble needs at least 2 fold models, got {len(parts)}")
    evaluations = [json.loads((p / "evaluation.json").read_text()) for p in parts]
    configs = [yaml.safe_load((p / "config.yaml").read_text()) for p in parts]
    config = {k: v for k, v in configs[0].items() if k != "val_fold"}
    joined = concatenate([load_embeddings(p / "embeddings.npz") for p in parts])
    concatenated = joined.evaluate(config["eval_ks"], config["seed"], config.get("eval_kmeans", "kmeans++"))
    separated = mean_metrics([e["metrics"] for e in evaluations])
    selection = dict(evaluations[0].get("selection") or {"mode": "last"})
    selection.update(folds=len(parts), step=None, score=None,
                     fold_steps=[(e.get("selection") or {}).get("step") for e in evaluations],
                     fold_scores=[(e.get("selection") or {}).get("score") for e in evaluations])
    selection.pop("val_classes", None)
    record = {"metrics": concatenated, "metrics_source": f"concatenated: {len(parts)} fold models, "
                                                         f"{joined.query.shape[1]} dimensions",
              "separated": separated, "folds": [e["metrics"] for e in evaluations],
              # each fold model picks its own test-selected step: their mean is no step (runs.csv wants one)
              "test_selected": mean_metrics([{k: v for k, v in e["test_selected"].items() if k != "step"}
                                             for e in evaluations]),
              "selection": selection, "parts": [str(p) for p in parts]}
    out.mkdir(parents=True, exist_ok=True)
    write_with(out / "embeddings.npz", joined.save)
    curve = _mean_by_step([pd.read_csv(p / "curve.csv") for p in parts])
    write_with(out / "curve.csv", lambda path: curve.to_csv(path, index=False))
    losses = _mean_by_step([pd.read_csv(p / "losses.csv") for p in parts])
    write_with(out / "losses.csv", lambda path: losses.to_csv(path, index=False))
    config["ensemble"] = {"folds": len(parts), "embedding_dim": int(joined.query.shape[1])}
    write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_json(out / "evaluation.json", record)
    write_json(out / "metrics.json", {"metrics": concatenated, "separated": separated, "selection": selection})
    return record
