"""Which checkpoint a run reports (run-config key `selection`).

- `last`: the final step's model (the suite's default, and the paper's stated protocol).
- `val`: the evaluation point with the best `selection_metric` on the validation classes
  (`hdml.data.valsplit`), never reading test labels to choose; the run trains without those classes.
- `test`: the evaluation point with the best `selection_metric` on the test classes: the
  authors' procedure (their code kept the best test NMI), reported as test-selected.

The trainer evaluates on the validation split only at its evaluation points, so the cost is per
evaluation, not per step (bench/val.py measures it). Higher is better for every metric the suite
computes.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hdml.core.metricnames import is_retrieval
from hdml.eval import metrics

if TYPE_CHECKING:
    import pandas as pd

SELECTIONS = ("last", "val", "test")
LABELS = {"last": "last checkpoint", "val": "best on validation classes",
          "test": "best on test classes (the authors' procedure; test-selected)"}


def score_val(z: np.ndarray, labels: np.ndarray, metric: str, ks: list[int], seed: int, kmeans: str) -> float:
    """`metric` of validation embeddings; retrieval metrics skip the clustering."""
    if is_retrieval(metric):
        _, codes = np.unique(labels, return_inverse=True)
        return metrics.retrieval_metrics(metrics.l2_normalise(z), codes, ks)[metric]
    return metrics.evaluate(z, labels, ks, seed=seed, kmeans_algorithm=kmeans)[metric]


@dataclass
class Best:
    """The best evaluation point so far: its step, score, test metrics and test embeddings.
    Ties keep the earlier point, so a flat curve selects its first step."""

    step: int | None = None
    score: float = -np.inf
    row: dict[str, Any] = field(default_factory=dict)
    z: np.ndarray | None = None

    def offer(self, step: int, score: float, row: dict[str, Any], z: np.ndarray) -> bool:
        if not np.isfinite(score) or score <= self.score:
            return False
        self.step, self.score, self.row, self.z = step, float(score), dict(row), z.copy()
        return True

    def state(self) -> dict[str, Any]:
        """For the checkpoint, which loads with `weights_only=True`: a tensor, not an ndarray."""
        return {"step": self.step, "score": self.score, "row": self.row,
                "z": None if self.z is None else torch.from_numpy(self.z)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Best:
        if not state:
            return cls()
        z = state["z"]
        return cls(state["step"], state["score"], state["row"], None if z is None else z.numpy())

    def reported(self) -> tuple[dict[str, Any], np.ndarray]:
        """(curve row, test embeddings) of the chosen point."""
        if self.step is None or self.z is None:
            raise RuntimeError("no evaluation had a finite selection score; nothing to report")
        return self.row, self.z


def selected_step(curve: list[dict[str, Any]], selection: str, metric: str) -> int:
    """The step `selection` reports from a curve whose rows hold the test metrics and, for
    `val`, `val_<metric>`: the last row's step, or the first row with the highest score."""
    if selection == "last":
        return int(curve[-1]["step"])
    column = f"val_{metric}" if selection == "val" else metric
    best = Best()
    for row in curve:
        best.offer(int(row["step"]), float(row[column]), row, np.empty(0))
    if best.step is None:
        raise ValueError(f"selection {selection}: no finite {column} on the curve")
    return best.step


def summary(selection: str, metric: str, step: int, score: float | None, val_classes: list[int] | None,
            train_classes: int) -> dict[str, Any]:
    """The `selection` record of metrics.json and evaluation.json."""
    out: dict[str, Any] = {"mode": selection, "label": LABELS[selection], "metric": metric, "step": step,
                           "score": score, "train_classes": train_classes}
    if val_classes is not None:
        out["val_classes"] = val_classes
    return out


def selection_note(runs: pd.DataFrame | None) -> str:
    """A paragraph of the report naming the runs whose numbers are not from the last checkpoint
    (runs.csv `selection`), and what they were trained on; empty when every run reports its last."""
    if runs is None or "selection" not in runs:
        return ""
    parts = []
    for (mode, metric), group in runs[runs["selection"] != "last"].groupby(["selection", "selection_metric"]):
        names = sorted({f"{r.dataset}/{r.method}/{r.variant}" for r in group.itertuples()})
        trained = (" They train on the training classes less the validation classes carved from them "
                   "(hdml.data.valsplit)." if mode == "val" else "")
        parts.append(f"{len(group)} run(s) report the checkpoint {LABELS[mode]} by {metric}, not the last: "
                     f"{', '.join(names)}.{trained}")
    return "".join(f"<p>{html.escape(p)}</p>" for p in parts)
