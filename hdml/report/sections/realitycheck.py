"""Report section "Reality Check protocol": HDML under "A Metric Learning Reality Check"
(Musgrave, Belongie, Lim; ECCV 2020), beside that paper's published table.

Its runs are the seeds of variants with final models per fold (`hdml.eval.ensemble`; metrics.csv has
their `separated:` rows): each metric is shown concatenated (the fold models' embeddings joined,
the seed's `metrics`) and separated (the fold models' mean), as the Reality Check reports them,
beside its published number where `hdml/resources/reality_check.csv` has one (numbers as printed in
its tables, each with its source; the file says which it has).

HDML's gain over its base loss is the paired difference over seeds, per dataset, metric and
representation; all of them form one family, Holm-corrected (`hdml.report.stats.paired_tests`):
the table gives the raw 95% interval, the interval at the level Holm tests each comparison at,
the adjusted p-value, and marks a gain only where the corrected verdict rejects "no difference".
"""
from __future__ import annotations

import html
import io
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from hdml.core.io import write_text
from hdml.eval.ensemble import SEPARATED
from hdml.report.inputs import Inputs
from hdml.report.names import dataset_title, display
from hdml.report.page import Report, note
from hdml.report.rows import SELECTED, method_order
from hdml.report.sections import register_section
from hdml.report.sections.fair import base_loss
from hdml.report.stats import ALPHA, ci95, paired_tests, shown
from hdml.report.table import DASH, fmt_mean_ci, simple_table

TITLE = "Reality Check protocol (beyond the paper)"
METRICS = ["recall@1", "r_precision", "map@r"]  # their Precision@1 (one query: our recall@1), R-Precision, MAP@R
REPRESENTATIONS = {"concatenated": "", "separated": SEPARATED}
LABELS = {"recall@1": "P@1", "r_precision": "R-Prec", "map@r": "MAP@R"}  # their names
DATA = "resources/reality_check.csv"  # inside the hdml package
COLUMNS = ["dataset", "method", "their_method", "representation", "metric", "value", "source"]


def published_table(path: Path | None = None) -> pd.DataFrame:
    """The Reality Check's published numbers (package data, or `path`), checked."""
    text = Path(path).read_text() if path else resources.files("hdml").joinpath(DATA).read_text()
    table = pd.read_csv(io.StringIO(text), comment="#")
    where = path or f"hdml/{DATA}"
    if list(table.columns) != COLUMNS:
        raise ValueError(f"{where}: header must be {','.join(COLUMNS)}; got {','.join(map(str, table.columns))}")
    bad = table[~table.representation.isin(list(REPRESENTATIONS)) | ~table.metric.isin(METRICS)
                | ~table.value.between(0, 100) | table.source.isna()]
    if len(bad):
        r = bad.iloc[0]
        raise ValueError(f"{where}: row {r.dataset}/{r.method}/{r.representation}/{r.metric} = {r.value}: "
                         f"representation in {list(REPRESENTATIONS)}, metric in {METRICS}, a value in % and a "
                         f"source are required")
    return table


def fold_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-seed rows of the fold-model runs: (dataset, method, variant, seed, metric,
    representation, value) for METRICS."""
    keys = metrics[metrics.metric.str.startswith(SEPARATED)][["dataset", "method", "variant"]].drop_duplicates()
    mine = metrics.merge(keys, on=["dataset", "method", "variant"])
    mine = mine[~mine.metric.str.startswith(SELECTED)]
    separated = mine.metric.str.startswith(SEPARATED)
    out = mine.assign(representation=np.where(separated, "separated", "concatenated"),
                      metric=mine.metric.str.removeprefix(SEPARATED))
    return out[out.metric.isin(METRICS)]


def comparison_rows(dataset: str, seeds: pd.DataFrame, published: pd.DataFrame, paper: pd.DataFrame) -> list[list[str]]:
    here = seeds[seeds.dataset == dataset]
    pub = published[published.dataset == dataset]
    rows = []
    for method in method_order(here.method.unique(), paper):
        mine = here[here.method == method]
        for representation in REPRESENTATIONS:
            row = [display(method), representation, str(mine.seed.nunique())]
            for metric in METRICS:
                hit = pub[(pub.method == method) & (pub.representation == representation) & (pub.metric == metric)]
                row.append(f"{hit.value.iloc[0]:.2f}" if len(hit) else DASH)
                v = mine[(mine.representation == representation) & (mine.metric == metric)].value.to_numpy()
                row.append(fmt_mean_ci(float(v.mean()), ci95(v), len(v)) if len(v) else "not run")
            rows.append(row)
    return rows


def gain_family(seeds: pd.DataFrame) -> list[tuple[str, str, str, str, str, np.ndarray, list[int]]]:
    """(dataset, HDML method, base, metric, representation, per-seed differences, seeds) wherever
    both ran on common seeds: the family Holm corrects over."""
    out = []
    for (dataset, metric, representation), group in seeds.groupby(["dataset", "metric", "representation"], sort=True):
        by_method = {m: g.set_index("seed").value for m, g in group.groupby("method")}
        for method in sorted(by_method):
            base = base_loss(method)
            if base not in by_method:
                continue
            common = sorted(set(by_method[method].index) & set(by_method[base].index))
            if common:
                d = np.array([by_method[method][s] - by_method[base][s] for s in common], dtype=float)
                out.append((dataset, method, base, metric, representation, d, common))
    return out


def verdict(test) -> str:
    corrected = test.excludes_zero()
    if corrected is None:
        return "not tested (fewer than 3 paired seeds)"
    if not corrected:
        return "no"
    return "yes: HDML better" if test.mean > 0 else "yes: HDML worse"


def fmt_half(mean: float, half: float, n: int) -> str:
    if shown(n) and math.isfinite(half):
        return f"{100 * mean:+.1f} ± {100 * half:.1f}"
    return f"{100 * mean:+.1f} (n={n})"


@register_section(order=120)
def reality_check_section(rep: Report, data: Inputs) -> None:
    """Their published number, ours under their protocol, HDML's Holm-corrected gains."""
    seeds = fold_runs(data.metrics)
    if seeds.empty:
        rep.section("reality-check", TITLE, note("No runs with final models per fold (a variant with `folds`, "
                                                 "config/reality-check.yaml) in these results."))
        return
    published = published_table()
    parts = [f"<p>Runs of variants with final models per fold ({html.escape(', '.join(sorted(set(seeds.variant))))}"
             "): per seed one model per validation fold, each trained without its fold's classes and keeping its "
             "checkpoint best on them; concatenated: the fold models' embeddings, each L2-normalised, joined; "
             "separated: the mean of the fold models' metrics (hdml.eval.ensemble). Published: Musgrave et al., "
             f"ECCV 2020, where hdml/resources/reality_check.csv has the number ({len(published)} rows).</p>"]
    md = []
    header = ["Method", "representation", "seeds"] + [f"{LABELS[m]}: {w}" for m in METRICS
                                                      for w in ("published", "ours")]
    for dataset in [d for d in data.datasets if d in set(seeds.dataset)]:
        table = simple_table(f"rc-{dataset}", f"{dataset_title(dataset)}: the Reality Check's table and ours "
                             "under its protocol", header, comparison_rows(dataset, seeds, published, data.paper),
                             stub=3, note="Ours: mean ± 95% CI (Student t) over seeds, in %; published: as printed "
                                          f"({DASH}: no number in hdml/resources/reality_check.csv). P@1 is "
                                          "Precision@1, the suite's R@1 (one query).")
        parts.append(rep.table(table))
        md.append(table.markdown())
    family = gain_family(seeds)
    if family:
        tests = paired_tests([f[5] for f in family])
        m = tests[0].comparisons
        rows = [[dataset_title(d), display(h), display(b), LABELS[metric], rep_, ", ".join(map(str, s)),
                 fmt_half(t.mean, t.half, t.n), fmt_half(t.mean, t.half_corrected, t.n),
                 DASH if not math.isfinite(t.p_holm) else f"{t.p_holm:.3g}", verdict(t)]
                for (d, h, b, metric, rep_, _, s), t in zip(family, tests, strict=True)]
        gain = simple_table("rc-gain", "HDML's gain over its base loss under the Reality Check protocol",
                            ["Dataset", "HDML", "over base", "Metric", "representation", "paired seeds",
                             "gain, raw 95% CI", "gain, Holm-level CI", "Holm p", "corrected: differs?"], rows,
                            stub=5, note=f"HDML − base loss on the same seeds, in points. {m} comparison(s) "
                                         f"tested (3 paired seeds or more), Holm-Bonferroni at family-wise "
                                         f"{ALPHA:g}: a difference is marked only where the corrected test rejects "
                                         "it; the raw interval is shown beside it.")
        parts.append(rep.table(gain))
        md.append(gain.markdown())
    else:
        parts.append(note("No HDML method ran beside its base loss with final models per fold: no gain to show."))
    write_text(rep.out_dir / "tables" / "reality-check.md", "\n".join(md))
    rep.section("reality-check", TITLE, "\n".join(parts))
