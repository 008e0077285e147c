"""Report section "Paper evaluation vs fair evaluation": does HDML's gain survive the reality check?

Musgrave, Belongie and Lim ("A Metric Learning Reality Check", ECCV 2020) found that much of
2016-2019's progress in deep metric learning shrinks once checkpoints are chosen on validation
classes rather than on the test classes. Per dataset and method this section shows the paper's
number beside two of ours ("evaluation" here; "protocol" is the formula choice, code or paper):

- paper evaluation: the `default` variant's runs whose `selection` is not `val` (the last
  checkpoint unless configured otherwise), trained on all training classes;
- fair evaluation: the runs whose runs.csv `selection` is `val`, whatever their variant is named:
  trained on the training classes less the validation classes (hdml.data.valsplit), their checkpoint
  chosen on the validation classes, never on test labels.

It gives HDML's gain over its base loss (the base is the HDML plug-in's `base`) from seeds
paired across the two methods: the mean of the per-seed differences with its Student-t 95%
interval (n − 1 degrees of freedom), and whether it excludes zero after Holm's correction over
all the table's gains (stats.paired_tests). Pairing by seed removes what a seed shares between
the two runs (initial weights, data order where the samplers agree), so the paired interval is
the one that answers "does HDML beat its base on the same seeds?". The methods are not ranked:
a rank of means hides how much of it the seeds support. The untrained reference (hdml.core.reference)
is the same network under both evaluations (it selects nothing).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hdml.core import reference
from hdml.core.io import write_text
from hdml.eval.aggregate import KEYS
from hdml.report.conclude import paragraph, verdict
from hdml.report.inputs import Inputs
from hdml.report.names import dataset_title, display, families
from hdml.report.page import Report, note
from hdml.report.rows import SELECTED, method_order, paper_values
from hdml.report.sections import register_section
from hdml.report.stats import PairedTest, ci95, paired_tests, shown
from hdml.report.table import DASH, Cell, Table, fmt_mean_ci, metric_label, simple_table

PROTOCOLS = {"paper": "paper evaluation", "fair": "fair evaluation"}
METRICS = ["recall@1", "nmi", "map@r"]  # the paper's headline pair, and the reality check's MAP@R
TITLE = "Paper evaluation vs fair evaluation (beyond the paper)"


def base_loss(method: str) -> str | None:
    """The loss an HDML method wraps (its plug-in's `base`, for the plug-ins of family "HDML");
    None for any other method, DAML's included."""
    return {m: base for base, m in families("HDML").items()}.get(method)


def protocol_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """runs.csv's keys with a `protocol_kind` column (paper | fair), one variant per (dataset,
    method, kind); and notes naming any fair variant left out. Where several variants of a method
    ran with `selection: val`, `default` is taken if among them, else the first by name."""
    fair = runs.selection == "val"
    paper = (runs.variant == "default") & ~fair
    untrained = runs.method == reference.NAME  # selects nothing: the same network under both
    tagged = pd.concat([runs[paper].assign(protocol_kind="paper"), runs[fair].assign(protocol_kind="fair"),
                        runs[untrained & (runs.variant == "default")].assign(protocol_kind="fair")])
    keep, notes = [], []
    for (dataset, method, _kind), group in tagged.groupby(["dataset", "method", "protocol_kind"], sort=False):
        variants = sorted(group.variant.unique(), key=lambda v: (v != "default", v))
        keep.append(group[group.variant == variants[0]])
        if len(variants) > 1:
            notes.append(f"{dataset}/{method}: fair evaluation from variant {variants[0]!r}; also ran with "
                         f"selection val: {', '.join(map(repr, variants[1:]))}.")
    columns = [*KEYS, "protocol_kind", "steps", "selection", "selection_metric"]
    out = pd.concat(keep)[columns] if keep else pd.DataFrame(columns=columns)
    return out, notes


def per_seed(metrics: pd.DataFrame, tagged: pd.DataFrame) -> pd.DataFrame:
    """Each tagged run's reported metrics (no test-selected ones), with its protocol kind."""
    reported = metrics[~metrics.metric.str.startswith(SELECTED)]
    return reported.merge(tagged[[*KEYS, "protocol_kind"]], on=KEYS, how="inner")


@dataclass(frozen=True)
class Gain:
    """HDML − base over paired seeds, as fractions; `half` (the raw 95% interval) NaN below two
    pairs; `test`, the paired test Holm-corrected over the section's gains (`gains`)."""

    mean: float
    half: float
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    test: PairedTest | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def comparisons(self) -> int:
        return self.test.comparisons if self.test else 0

    def raw_excludes_zero(self) -> bool | None:
        """Whether the uncorrected 95% interval excludes 0; None with too few pairs for one."""
        if not (shown(self.n) and math.isfinite(self.half)):
            return None
        return bool(self.mean - self.half > 0 or self.mean + self.half < 0)

    def excludes_zero(self) -> bool | None:
        """The verdict after Holm's correction (the raw one before `gains` corrects)."""
        return self.test.excludes_zero() if self.test else self.raw_excludes_zero()


def paired_gain(hdml: pd.Series, base: pd.Series) -> Gain | None:
    """Gain from two {seed: value} series over the seeds both have; None without a common seed."""
    seeds = sorted(set(hdml.index) & set(base.index))
    if not seeds:
        return None
    d = np.array([hdml[s] - base[s] for s in seeds], dtype=float)
    return Gain(float(d.mean()), ci95(d), tuple(int(s) for s in seeds), tuple(map(float, d)))


def gains(seeds: pd.DataFrame) -> list[tuple[str, str, str, str, str, Gain]]:
    """(dataset, HDML method, base, metric, protocol kind, gain) wherever both ran, for METRICS
    only: three intervals per dataset and protocol, not one per Recall@K; each gain's verdict
    Holm-corrected over all of them."""
    out = []
    seeds = seeds[seeds.metric.isin(METRICS)]
    for (dataset, kind, metric), group in seeds.groupby(["dataset", "protocol_kind", "metric"], sort=False):
        by_method = {m: g.set_index("seed").value for m, g in group.groupby("method")}
        for method in sorted(by_method):
            base = base_loss(method)
            if base in by_method and (gain := paired_gain(by_method[method], by_method[base])) is not None:
                out.append((dataset, method, base, metric, kind, gain))
    tests = paired_tests([np.array(r[5].diffs) for r in out])
    return [(*r[:5], replace(r[5], test=t)) for r, t in zip(out, tests, strict=True)]


def fmt_gain(g: Gain) -> str:
    if shown(g.n) and math.isfinite(g.half):
        return f"{100 * g.mean:+.1f} ± {100 * g.half:.1f}"
    return f"{100 * g.mean:+.1f} (n={g.n})"


def excludes_text(g: Gain) -> str:
    decided = g.excludes_zero()
    if decided is None:
        return "not tested (fewer than 3 paired seeds)"
    return "yes: " + ("HDML better" if g.mean > 0 else "HDML worse") if decided else "no"


def corrected_text(g: Gain) -> str:
    """Holm's adjusted p-value and the interval at the level Holm tests the gain at."""
    t = g.test
    if t is None or not math.isfinite(t.p_holm):
        return DASH
    return f"p = {t.p_holm:.3f}; {100 * t.mean:+.1f} ± {100 * t.half_corrected:.1f} ({100 * (1 - t.level):.1f}%)"


def comparison_table(dataset: str, seeds: pd.DataFrame, paper: pd.DataFrame) -> Table:
    """Per method: paper, ours under each evaluation (mean ± CI) for METRICS."""
    here = seeds[seeds.dataset == dataset]
    methods = method_order(here.method.unique(), paper)
    metrics = [m for m in METRICS if m in set(here.metric)]
    groups = [(metric_label(m), ["paper", PROTOCOLS["paper"], PROTOCOLS["fair"]]) for m in metrics]
    table = Table(f"fair-{dataset}", f"{dataset_title(dataset)}: the paper, and ours under each evaluation",
                  ["Method", "seeds (paper evaluation / fair)"], groups)
    cell = {}
    for (method, kind, metric), g in here.groupby(["method", "protocol_kind", "metric"]):
        v = g.value.to_numpy()
        cell[method, kind, metric] = (float(v.mean()), ci95(v), len(v))
    count = here.groupby(["method", "protocol_kind"]).seed.nunique().to_dict()
    for method in methods:
        row = [Cell(display(method), muted=method == reference.NAME),
               Cell(" / ".join(str(count.get((method, k), 0)) for k in PROTOCOLS))]
        published = paper_values(paper, dataset, method)
        for metric in metrics:
            row.append(Cell(f"{published[metric]:.1f}" if metric in published else DASH))
            for kind in PROTOCOLS:
                hit = cell.get((method, kind, metric))
                row.append(Cell(fmt_mean_ci(*hit) if hit else "not run", muted=hit is None))
        table.rows.append(row)
    table.note = ("Ours: mean ± 95% CI (Student t) over seeds, in %. Paper: Zheng et al. 2019, Tables 1-3 "
                  f"({DASH}: no published number). No ranks: the gain table below says which differences the "
                  "seeds support.")
    return table


def gain_rows(found: list[tuple[str, str, str, str, str, Gain]]) -> list[list[str]]:
    rows = []
    for dataset, method, base, metric, kind, g in sorted(
            found, key=lambda r: (r[0], r[1], METRICS.index(r[3]) if r[3] in METRICS else 99, r[3],
                                  list(PROTOCOLS).index(r[4]))):
        rows.append([dataset, display(method), display(base), metric_label(metric), PROTOCOLS[kind],
                     ", ".join(map(str, g.seeds)), fmt_gain(g), corrected_text(g), excludes_text(g)])
    return rows


def gain_header(m: int) -> list[str]:
    return ["Dataset", "HDML", "over base", "Metric", "Evaluation", "paired seeds", "gain ± raw 95% (points)",
            "Holm: adjusted p; interval at its level", f"excludes 0? (Holm, {m} comparisons)"]


def gain_figure(found: list[tuple[str, str, str, str, str, Gain]], datasets: list[str]) -> plt.Figure:
    """One panel per metric; per dataset, each HDML method's gain under both evaluations (filled:
    paper evaluation, hollow: fair), mean with its raw 95% interval and each seed pair's difference."""
    metrics = [m for m in METRICS if any(r[3] == m for r in found)]
    methods = sorted({r[1] for r in found})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 0.6, 3.4), squeeze=False,
                             layout="constrained")
    slots = [(m, k) for m in methods for k in PROTOCOLS]
    width = 0.8 / len(slots)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, dataset in enumerate(datasets):
            for j, (method, kind) in enumerate(slots):
                hit = [r[5] for r in found if r[:2] == (dataset, method) and r[3] == metric and r[4] == kind]
                if not hit:
                    continue
                g, x = hit[0], i - 0.4 + width * (j + 0.5)
                colour = plt.cm.tab10(methods.index(method))
                half = 100 * g.half if shown(g.n) and math.isfinite(g.half) else None
                ax.errorbar([x], [100 * g.mean], yerr=None if half is None else [[half], [half]], fmt="o",
                            color=colour, mfc=colour if kind == "paper" else "white", ms=6, capsize=3)
                ax.plot([x] * g.n, [100 * d for d in g.diffs], ".", color=colour, alpha=0.5, ms=4)
        ax.axhline(0, color="0.4", linewidth=0.8)
        ax.set_xticks(range(len(datasets)), [dataset_title(d) for d in datasets], fontsize=8)
        ax.set_xlim(-0.6, len(datasets) - 0.4)
        ax.set_title(metric_label(metric), fontsize=9)
        ax.set_ylabel("HDML − base loss (points)", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="none", color=plt.cm.tab10(methods.index(m)),
                          mfc=plt.cm.tab10(methods.index(m)) if k == "paper" else "white",
                          label=f"{display(m)}, {PROTOCOLS[k]}") for m, k in slots]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle("HDML's gain over its base loss, paired seeds", fontsize=10)
    return fig


def protocol_note(tagged: pd.DataFrame) -> str:
    """What each evaluation's runs are, from runs.csv: selection, metric and steps (the untrained
    reference aside)."""
    parts = []
    for kind, label in PROTOCOLS.items():
        mine = tagged[(tagged.protocol_kind == kind) & (tagged.method != reference.NAME)]
        if mine.empty:
            continue
        selections = ", ".join(sorted(set(mine.selection)))
        steps = ", ".join(str(int(s)) for s in sorted(set(mine.steps.dropna())))
        what = (f"by {', '.join(sorted(set(mine.selection_metric.dropna())))} on the validation classes"
                if kind == "fair" else "")
        parts.append(f"{label}: selection {selections}{' ' + what if what else ''}, {steps} steps")
    return "; ".join(parts)


def tuning_note(tuning: pd.DataFrame | None, tagged: pd.DataFrame) -> str:
    """The tuning budget of the fair runs' methods, from their studies (Inputs.tuning): trials x
    steps per (dataset, method), or that the report was not given the studies."""
    fair = tagged[(tagged.protocol_kind == "fair") & (tagged.method != reference.NAME)]
    if tuning is None or tuning.empty:
        return "Tuning budget: not given to the report (hdml report --tuning results/tune/*/*/best.yaml)."
    mine = tuning.merge(fair[["dataset", "method"]].drop_duplicates(), on=["dataset", "method"])
    if mine.empty:
        return "Tuning budget: none of the fair runs' methods was tuned in the studies given."
    budgets = mine.groupby(["trials", "steps"], dropna=False).apply(
        lambda g: ", ".join(f"{display(m)} on {d}" for d, m in zip(g.dataset, g.method, strict=True)),
        include_groups=False)
    spent = "; ".join(f"{int(t)} trials of {fmt_steps(st)} steps ({who})" for (t, st), who in budgets.items())
    return f"Tuning budget: {spent} (the same budget for every method of a dataset is what makes the comparison fair)."


def fmt_steps(steps: float) -> str:
    return "?" if not math.isfinite(steps) else f"{int(steps):,}"


def fair_conclusion(found: list[tuple[str, str, str, str, str, Gain]]) -> str:
    """One sentence per evaluation: how many of HDML's gains the corrected intervals support."""
    out = []
    for kind, label in PROTOCOLS.items():
        mine = [r[5] for r in found if r[4] == kind]
        if mine:
            out.append(verdict(f"Under {label}, HDML against its base loss", mine, "HDML better", "HDML worse",
                               f"Under {label}, HDML's gain over its base loss is inside the seeds' noise"))
    return " ".join(out)


@register_section(order=110)
def fair_protocol_section(rep: Report, data: Inputs) -> None:
    """The paper's number, ours under the paper's evaluation and under the fair one, HDML's gains."""
    runs = data.runs
    if runs is None:
        rep.section("fair", TITLE, note("No runs table (runs.csv) given: the fair evaluation's runs are the ones "
                                        "whose selection is val, which only runs.csv records."))
        return
    tagged, notes = protocol_runs(runs)
    if not ((tagged.protocol_kind == "fair") & (tagged.method != reference.NAME)).any():
        rep.section("fair", TITLE, note("No fair-evaluation runs in these results (no run with selection: val, "
                                        "trained without the validation classes and selected on them). "
                                        "Nothing here says whether HDML's gain holds under a fair evaluation."))
        return
    seeds = per_seed(data.metrics, tagged)
    intro = ("<p>Paper evaluation: the default runs, trained on all training classes, reporting the checkpoint "
             "their selection names (the last, as the paper states). Fair evaluation (after Musgrave et al., "
             "\"A Metric Learning Reality Check\", ECCV 2020): runs that train on the training classes less the "
             "validation classes carved from them (hdml.data.valsplit) and report the checkpoint best on those "
             "validation classes; test labels choose nothing. Runs: "
             f"{html.escape(protocol_note(tagged))}. {html.escape(tuning_note(data.tuning, tagged))}</p>")
    parts = [intro, *(f'<p class="note">{html.escape(n)}</p>' for n in notes)]
    md = []
    datasets = [d for d in data.datasets if d in set(seeds.dataset)]
    for dataset in datasets:
        table = comparison_table(dataset, seeds, data.paper)
        parts.append(rep.table(table))
        md.append(table.markdown())
    found = gains(seeds)
    if found:
        m = max(r[5].comparisons for r in found)
        gain_table = simple_table("fair-gain", "HDML's gain over its base loss under each evaluation", gain_header(m),
                                  gain_rows(found), stub=5,
                                  note="HDML − base loss on the same seeds, in points: the mean of the per-seed "
                                       "differences ± the paired Student-t 95% interval (n − 1 degrees of freedom), "
                                       f"uncorrected. The verdict is Holm-corrected over the table's {m} tested "
                                       "comparisons: Holm's adjusted p-value, and the paired interval at the level "
                                       "Holm tests that comparison at, which excludes 0 exactly when the verdict "
                                       "says so.")
        for row in gain_table.rows:
            if row[-1].text.startswith("yes"):
                row[-1].bold = row[6].bold = True
        parts.append(rep.table(gain_table))
        md.append(gain_table.markdown())
        parts.append(rep.figure("fair-gain", gain_figure(found, [d for d in datasets if any(r[0] == d for r in found)]),
                                "HDML's gain over its base loss per dataset, paper evaluation (filled) and fair "
                                "evaluation (hollow): mean of the paired per-seed differences with its raw 95% "
                                "interval (from 3 paired seeds on; the table gives the corrected verdict), small "
                                "dots each seed pair's difference, in points."))
        parts.append(paragraph(fair_conclusion(found)))
    else:
        parts.append(note("No HDML method ran beside its base loss under a common evaluation: no gain to show."))
    write_text(rep.out_dir / "tables" / "fair.md", "\n".join(md))
    rep.section("fair", TITLE, "\n".join(parts))
