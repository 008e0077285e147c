"""Where the authors' code and the paper's text disagree: the two formula protocols side by side."""
from __future__ import annotations

import math

import numpy as np

from hdml.core import reference
from hdml.core.io import write_text
from hdml.report.conclude import paragraph, span, verdict
from hdml.report.inputs import Inputs
from hdml.report.names import dataset_title, display, paper_row
from hdml.report.page import Report, note
from hdml.report.rows import SELECTED, headline, seed_values
from hdml.report.sections import register_section
from hdml.report.settings import DEFAULT, Key, changing, of
from hdml.report.stats import PairedTest, paired_diffs, paired_tests, shown
from hdml.report.table import DASH, fmt_mean_ci, metric_label, metric_order, simple_table


def with_n(r) -> str:
    """A summary row as '56.0 ± 2.5 (n=3)': this table has no seeds column."""
    text = fmt_mean_ci(r.mean, r.ci, r.n)
    return text if text.endswith(")") else f"{text} (n={r.n})"


@register_section(order=70)
def protocol_section(rep: Report, data: Inputs) -> None:
    """Where the authors' code and the paper's text disagree: both formula protocols side by side,
    the difference paired by seed with its interval, Holm-corrected over the table."""
    summ, paper, metrics = data.summ, data.paper, data.metrics
    title = "Code protocol vs paper protocol (the formulas)"
    if data.runs is None:
        rep.section("protocol", title, note("No runs table (runs.csv) given: which variant runs the other protocol "
                                            "comes from the protocol its runs were configured with."))
        return
    last = summ[~summ.metric.str.startswith(SELECTED)]
    variant_of = protocol_variants(data.runs)
    alt = last[of(last, set(variant_of.values()))]
    if alt.empty:
        rep.section("protocol", title, note("No variant in these results changes the protocol alone."))
        return
    found = []
    for dataset in data.datasets:
        code_seeds = seed_values(metrics, dataset, DEFAULT)
        for method in alt[alt.dataset == dataset].method.unique():
            variant = variant_of[dataset, method][2]
            paper_seeds = seed_values(metrics, dataset, variant)
            mine = last[(last.dataset == dataset) & (last.method == method)]
            code = {r.metric: r for r in mine[mine.variant == DEFAULT].itertuples()}
            other = {r.metric: r for r in mine[mine.variant == variant].itertuples()}
            for m in metric_order(set(code) | set(other)):
                pair = (paper_seeds.get((method, m)), code_seeds.get((method, m)))
                diffs = paired_diffs(*pair) if all(v is not None for v in pair) else np.array([])
                found.append((dataset, method, m, code.get(m), other.get(m), diffs))
    tests = paired_tests([f[5] for f in found])
    m_total = max((t.comparisons for t in tests), default=0)
    rows = []
    for (dataset, method, m, c, o, _), t in zip(found, tests, strict=True):
        ref = paper[(paper.dataset == dataset) & (paper.method == paper_row(method)) & (paper.metric == m)]
        untrained = last[(last.dataset == dataset) & (last.method == reference.NAME) & (last.variant == "default")
                         & (last.metric == m)]
        decided = t.excludes_zero()
        verdict_text = ("not tested (fewer than 3 paired seeds)" if decided is None else
                        ("yes: paper formulas " + ("better" if t.mean > 0 else "worse")) if decided else "no")
        rows.append([dataset, display(method), metric_label(m),
                     with_n(c) if c else "not run", with_n(o) if o else "not run",
                     fmt_paired(t) if t.n else DASH, verdict_text,
                     f"{ref.value.iloc[0]:.1f}" if len(ref) else DASH,
                     with_n(next(untrained.itertuples())) if len(untrained) else DASH])
    table = simple_table("protocol", "Code protocol (default) vs paper protocol, last checkpoint",
                         ["Dataset", "Method", "Metric", "code", "paper protocol", "Δ (paper − code) ± raw 95%",
                          f"excludes 0? (Holm, {m_total} comparisons)", "paper reports", "untrained (reference)"],
                         rows, stub=3,
                         note="Mean ± 95% CI over seeds, in %; Δ in points, paired by seed (the same seed starts "
                              "both runs from the same weights), its Student-t 95% interval uncorrected; the verdict "
                              f"is Holm-corrected over the table's {m_total} tested comparisons. The protocols differ "
                              "where the authors' code and the paper disagree (HDML: J_avg, J_gen, learning rates, "
                              "...; DAML: sums or means in J_gen, the generator's output layer, the metric's loss on "
                              "real and synthetic tuples): the fidelity ledger, hdml/fidelity.md, lists each "
                              "difference and which protocol follows which source. Untrained: the network before "
                              "metric learning, the same under both protocols.")
    for row in table.rows:
        row[5].bold = row[6].bold = row[6].text.startswith("yes")
    write_text(rep.out_dir / "tables" / "protocol.md", table.markdown())
    sentences = []
    for dataset in data.datasets:
        mine = [t for f, t in zip(found, tests, strict=True) if f[0] == dataset]
        head = [t for f, t in zip(found, tests, strict=True) if f[0] == dataset and f[2] == headline(
            {g[2] for g in found if g[0] == dataset})]
        if mine:
            label = metric_label(headline({g[2] for g in found if g[0] == dataset}))
            sentences.append(verdict(f"On {dataset_title(dataset)}, the paper's formulas against the code's "
                                     f"({label}: {span([t.mean for t in head])})", mine, "paper formulas better",
                                     "paper formulas worse", f"On {dataset_title(dataset)}, the paper's formulas "
                                     f"are inside the seeds' noise of the code's ({label}: "
                                     f"{span([t.mean for t in head])})"))
    rep.section("protocol", title, rep.table(table) + "\n" + paragraph(" ".join(sentences)))


def protocol_variants(runs) -> dict[tuple[str, str], Key]:
    """{(dataset, method): its variant that changes the protocol (code or paper formulas) and
    nothing else}; two such variants of one method are an error: the table has one column each."""
    out: dict[tuple[str, str], Key] = {}
    for key in sorted(changing(runs, "protocol")):
        if key[:2] in out:
            raise ValueError(f"runs table: {key[0]}/{key[1]} has two variants that change the protocol alone: "
                             f"{out[key[:2]][2]!r} and {key[2]!r}")
        out[key[:2]] = key
    return out


def fmt_paired(t: PairedTest) -> str:
    """'−6.1 ± 2.0' in points; '−6.1 (n=2)' below MIN_SEEDS pairs."""
    if shown(t.n) and math.isfinite(t.half):
        return f"{100 * t.mean:+.1f} ± {100 * t.half:.1f}"
    return f"{100 * t.mean:+.1f} (n={t.n})"
