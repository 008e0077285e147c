"""Class labels of a split: integer class ids, train and test classes disjoint.

Checked where a split is written (`hdml prepare`) and where it is read (`hdml train`,
`hdml cache`): a split edited by hand or made by another tool gets the same checks.
"""
from __future__ import annotations

import pandas as pd


def check_labels(df: pd.DataFrame, source: str) -> pd.Series:
    """The label column as integers, train and test classes disjoint (zero-shot: the test
    classes are unseen); a non-integer label or a shared class is an error, not a new class."""
    text = df["label"].astype(str).str.strip()
    bad = ~text.str.fullmatch(r"[+-]?\d+")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ValueError(f"{source}: label {text.iloc[row]!r} (row {row + 1}) is not an integer class id")
    labels = text.astype("int64")
    shared = set(labels[df["split"] == "train"]) & set(labels[df["split"] == "test"])
    if shared:
        raise ValueError(f"{source}: classes in both train and test: {sorted(shared)[:5]} (zero-shot needs "
                         f"disjoint classes)")
    return labels
