"""The families of paired comparisons the sections test, each Holm-corrected as one family: an
HDML method against its base loss, the trained methods against the untrained network, variants
of a method against its default variant."""
from __future__ import annotations

import pandas as pd

from hdml.core import reference
from hdml.report.names import base_loss, family
from hdml.report.rows import seed_values
from hdml.report.stats import PairedTest, paired_diffs, paired_tests


def hdml_tests(per_seed: dict[tuple[str, str], pd.Series], methods: dict[str, str],
               metrics: list[str]) -> dict[tuple[str, str], PairedTest]:
    """Each (method, metric) of a method with a base loss beside its base: the paired test of
    method − base, Holm-corrected over all of them (the family of one table)."""
    keys, diffs = [], []
    present = set(methods.values())
    for method in methods.values():
        base = base_loss(method)
        if base not in present or family(method) != "HDML":
            continue
        for m in metrics:
            if (method, m) in per_seed and (base, m) in per_seed:
                keys.append((method, m))
                diffs.append(paired_diffs(per_seed[method, m], per_seed[base, m]))
    return dict(zip(keys, paired_tests(diffs), strict=True))


def reference_tests(per_seed: dict[tuple[str, str], pd.Series], metric: str) -> tuple[pd.Series | None,
                                                                                       list[PairedTest]]:
    """The untrained network's {seed: value} on `metric`, and each trained method's paired test
    against it (method − untrained), Holm-corrected over the methods."""
    ref = per_seed.get((reference.NAME, metric))
    if ref is None:
        return None, []
    others = [v for (method, m), v in sorted(per_seed.items()) if m == metric and method != reference.NAME]
    return ref, paired_tests([paired_diffs(v, ref) for v in others])


def variant_tests(metrics: pd.DataFrame, dataset: str, method: str, variants: list[str],
                  names: list[str]) -> list[PairedTest]:
    """Each variant of `method` against its default variant, per metric of `names`, paired by
    seed and Holm-corrected over all of them (one family per table)."""
    default = seed_values(metrics, dataset, "default")
    diffs = []
    for variant in variants:
        mine = seed_values(metrics, dataset, variant)
        diffs += [paired_diffs(mine[method, m], default[method, m]) for m in names
                  if (method, m) in mine and (method, m) in default]
    return paired_tests(diffs)
