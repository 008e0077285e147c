"""The names of the metrics the evaluation computes, for checking a config before anything runs
(`selection_metric`) without importing the evaluation (faiss, scikit-learn)."""
from __future__ import annotations

RETRIEVAL = ("map@r", "r_precision")  # with recall@K: computed without clustering, so cheap on val


def is_retrieval(metric: str) -> bool:
    return metric in RETRIEVAL or metric.startswith("recall@")


def check_metric(metric: str, ks: list[int]) -> None:
    """`metric` must be one the evaluation computes."""
    known = [*RETRIEVAL, "nmi", "f1", *(f"recall@{k}" for k in ks)]
    if metric not in known:
        raise ValueError(f"selection_metric: {metric!r} is not computed; expected one of {', '.join(known)}")
