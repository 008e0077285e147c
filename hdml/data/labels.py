"""Class labels of a split: integer class ids, training classes disjoint from every other split's.

Checked where a split is written (`hdml prepare`) and where it is read (`hdml train`,
`hdml cache`): a split edited by hand or made by another tool gets the same checks.
"""
from __future__ import annotations

import pandas as pd


def check_labels(df: pd.DataFrame, source: str) -> pd.Series:
    """The label column as integers, the train classes disjoint from those of every other split
    (zero-shot: evaluation classes are unseen); a non-integer label or a shared class is an
    error, not a new class."""
    text = df["label"].astype(str).str.strip()
    bad = ~text.str.fullmatch(r"[+-]?\d+")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ValueError(f"{source}: label {text.iloc[row]!r} (row {row + 1}) is not an integer class id")
    labels = text.astype("int64")
    train = set(labels[df["split"] == "train"])
    for split in sorted(set(df["split"]) - {"train"}):
        shared = train & set(labels[df["split"] == split])
        if shared:
            raise ValueError(f"{source}: classes in both train and {split}: {sorted(shared)[:5]} (zero-shot needs "
                             f"disjoint classes)")
    return labels
