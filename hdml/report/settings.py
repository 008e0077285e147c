"""What a variant is, read from the settings its runs were configured with (runs.csv), never from
its name: the variants of config/*.yaml are named freely, so a section finds its variants by what
they change against the same method's `default` runs on the same dataset (the variant the plan
gives every method, hdml.workflow.plan). A variant that changes `protocol` alone is the paper's
formulas against the code's; one that changes `alpha` (or `lambda0`) alone is a point of that
sweep; one that turns HDML's `softmax` or `recon` off alone is an ablation; one that changes
several settings (the fair evaluation's tuned alpha and val selection) is none of these.
"""
from __future__ import annotations

import pandas as pd

DEFAULT = "default"
# runs.csv columns
SETTINGS = ["protocol", "alpha", "lambda0", "softmax", "recon", "steps", "selection", "selection_metric"]

Key = tuple[str, str, str]  # (dataset, method, variant)


def changed_settings(runs: pd.DataFrame | None) -> dict[Key, frozenset[str]]:
    """{(dataset, method, variant): the settings whose values over its runs differ from those of
    the default runs of the same dataset and method}; a variant without default runs beside it
    changes nothing it could be compared on and is left out (as is everything without runs.csv)."""
    if runs is None:
        return {}
    values = {key: {c: frozenset(map(str, g[c])) for c in SETTINGS}
              for key, g in runs.groupby(["dataset", "method", "variant"])}
    out = {}
    for (dataset, method, variant), mine in values.items():
        default = values.get((dataset, method, DEFAULT))
        if variant != DEFAULT and default is not None:
            out[dataset, method, variant] = frozenset(c for c in SETTINGS if mine[c] != default[c])
    return out


def changing(runs: pd.DataFrame | None, setting: str) -> set[Key]:
    """The variants whose runs change `setting` and nothing else of SETTINGS."""
    return {key for key, changed in changed_settings(runs).items() if changed == {setting}}


def of(frame: pd.DataFrame, keys: set[Key]) -> pd.Series:
    """Which rows of `frame` (with dataset, method and variant columns) belong to `keys`."""
    return pd.Series([key in keys for key in zip(frame.dataset, frame.method, frame.variant, strict=True)],
                     index=frame.index, dtype=bool)
