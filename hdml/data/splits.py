"""Named splits of a prepared dataset: which names split.csv may use and which of them a run
evaluates on.

`train` trains. Evaluation reads either `test`, searched as its own gallery (each query left
out of its own neighbours), or a `query` split searched against a `gallery` split, for datasets
that publish them (In-Shop Clothes, for instance). `val` is a held-out split for model
selection; its classes, like every evaluation split's, are disjoint from the training classes
(zero-shot retrieval).
"""
from __future__ import annotations

from collections.abc import Iterable

SPLITS = ("train", "val", "test", "query", "gallery")  # in the order caches and listings use


def check_split_names(names: Iterable[str], source: str) -> list[str]:
    """The split names present, in `SPLITS` order; an unknown name, no `train`, or no evaluation
    split (`test`, or `query` with `gallery`) is an error naming `source`."""
    present = set(names)
    unknown = present - set(SPLITS)
    if unknown:
        raise ValueError(f"{source}: column split has values {sorted(unknown)}; expected some of "
                         f"{', '.join(SPLITS)}")
    if "train" not in present:
        raise ValueError(f"{source}: no train images")
    if ("query" in present) != ("gallery" in present):
        raise ValueError(f"{source}: a query split needs a gallery split and a gallery split a query split")
    if "test" not in present and "query" not in present:
        raise ValueError(f"{source}: no test images (nor a query and a gallery split)")
    return present_splits(present)


def present_splits(names: Iterable[str]) -> list[str]:
    """The distinct split names among `names`, in `SPLITS` order."""
    present = set(names)
    return [name for name in SPLITS if name in present]


def evaluation_splits(names: Iterable[str]) -> tuple[str, str | None]:
    """(query split, gallery split or None): `query` against `gallery` where the dataset has
    them, else `test` as its own gallery."""
    present = set(names)
    return ("query", "gallery") if {"query", "gallery"} <= present else ("test", None)
