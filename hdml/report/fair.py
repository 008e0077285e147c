"""Report section "Paper protocol vs fair protocol": does HDML's gain survive the reality check?

Musgrave, Belongie and Lim ("A Metric Learning Reality Check", ECCV 2020) found that much of
2016-2019's progress in deep metric learning shrinks once checkpoints are chosen on validation
classes rather than on the test classes. Per dataset and method this section shows the paper's
number beside two of ours:

- paper protocol: the `default` variant's runs whose `selection` is not `val` (the last
  checkpoint unless configured otherwise), trained on all training classes;
- fair protocol: the runs whose runs.csv `selection` is `val`, whatever their variant is named:
  trained on the training classes less the validation classes (hdml.valsplit), their checkpoint
  chosen on the validation classes, never on test labels.

It ranks the methods under each protocol and gives HDML's gain over its base loss (the base is
the HDML plug-in's `base`) from seeds paired across the two methods: the mean of the
per-seed differences with its Student-t 95% interval (n − 1 degrees of freedom), and whether
that interval excludes zero. Pairing by seed removes what a seed shares between the two runs
(initial weights, data order where the samplers agree), so the paired interval is the one that
answers "does HDML beat its base on the same seeds?".
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hdml.aggregate import KEYS
from hdml.io import write_text
from hdml.report.inputs import Inputs
from hdml.report.names import dataset_title, display, families
from hdml.report.page import Report, note
from hdml.report.sections import SELECTED, method_order, paper_values, register_section
from hdml.report.stats import ci95, shown
from hdml.report.table import DASH, Cell, Table, fmt_mean_ci, metric_label, simple_table

PROTOCOLS = {"paper": "paper protocol", "fair": "fair protocol"}
METRICS = ["recall@1", "nmi", "map@r"]  # the paper's headline pair, and the reality check's MAP@R
RANK_METRIC = "recall@1"  # the one metric the paper, and both protocols of ours, all have
TITLE = "Paper protocol vs fair protocol (beyond the paper)"


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
    tagged = pd.concat([runs[paper].assign(protocol_kind="paper"), runs[fair].assign(protocol_kind="fair")])
    keep, notes = [], []
    for (dataset, method, _kind), group in tagged.groupby(["dataset", "method", "protocol_kind"], sort=False):
        variants = sorted(group.variant.unique(), key=lambda v: (v != "default", v))
        keep.append(group[group.variant == variants[0]])
        if len(variants) > 1:
            notes.append(f"{dataset}/{method}: fair protocol from variant {variants[0]!r}; also ran with "
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
    """HDML − base over paired seeds, as fractions; `half` NaN below two pairs."""

    mean: float
    half: float
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def excludes_zero(self) -> bool | None:
        """Whether the 95% interval excludes 0; None when there are too few pairs for one."""
        if not (shown(self.n) and math.isfinite(self.half)):
            return None
        return bool(self.mean - self.half > 0 or self.mean + self.half < 0)


def paired_gain(hdml: pd.Series, base: pd.Series) -> Gain | None:
    """Gain from two {seed: value} series over the seeds both have; None without a common seed."""
    seeds = sorted(set(hdml.index) & set(base.index))
    if not seeds:
        return None
    d = np.array([hdml[s] - base[s] for s in seeds], dtype=float)
    return Gain(float(d.mean()), ci95(d), tuple(int(s) for s in seeds), tuple(map(float, d)))


def gains(seeds: pd.DataFrame) -> list[tuple[str, str, str, str, str, Gain]]:
    """(dataset, HDML method, base, metric, protocol kind, gain) wherever both ran, for METRICS
    only: three intervals per dataset and protocol, not one per Recall@K."""
    out = []
    seeds = seeds[seeds.metric.isin(METRICS)]
    for (dataset, kind, metric), group in seeds.groupby(["dataset", "protocol_kind", "metric"], sort=False):
        by_method = {m: g.set_index("seed").value for m, g in group.groupby("method")}
        for method in sorted(by_method):
            base = base_loss(method)
            if base in by_method and (gain := paired_gain(by_method[method], by_method[base])) is not None:
                out.append((dataset, method, base, metric, kind, gain))
    return out


def fmt_gain(g: Gain) -> str:
    if shown(g.n) and math.isfinite(g.half):
        return f"{100 * g.mean:+.1f} ± {100 * g.half:.1f}"
    return f"{100 * g.mean:+.1f} (n={g.n})"


def excludes_text(g: Gain) -> str:
    verdict = g.excludes_zero()
    if verdict is None:
        return "no interval (fewer than 3 paired seeds)"
    return "yes: " + ("HDML better" if g.mean > 0 else "HDML worse") if verdict else "no"


def ranks(values: dict[str, float]) -> dict[str, int]:
    """Competition ranking (1 = highest; ties share the better rank) of the finite values."""
    finite = pd.Series({k: v for k, v in values.items() if np.isfinite(v)}, dtype=float)
    return finite.rank(method="min", ascending=False).astype(int).to_dict()


def comparison_table(dataset: str, seeds: pd.DataFrame, paper: pd.DataFrame) -> Table:
    """Per method: paper, ours under each protocol (mean ± CI) for METRICS, and the ranks."""
    here = seeds[seeds.dataset == dataset]
    methods = method_order(here.method.unique(), paper)
    metrics = [m for m in METRICS if m in set(here.metric)]
    groups = [(metric_label(m), ["paper", PROTOCOLS["paper"], PROTOCOLS["fair"]]) for m in metrics]
    groups.append((f"rank by {metric_label(RANK_METRIC)}", ["paper", PROTOCOLS["paper"], PROTOCOLS["fair"]]))
    table = Table(f"fair-{dataset}", f"{dataset_title(dataset)}: the paper, and ours under each protocol",
                  ["Method", "seeds (paper protocol / fair)"], groups)
    cell = {}
    for (method, kind, metric), g in here.groupby(["method", "protocol_kind", "metric"]):
        v = g.value.to_numpy()
        cell[method, kind, metric] = (float(v.mean()), ci95(v), len(v))
    count = here.groupby(["method", "protocol_kind"]).seed.nunique().to_dict()
    rank_of = {"published": ranks({m: paper_values(paper, dataset, m).get(RANK_METRIC, math.nan) for m in methods})}
    for kind in PROTOCOLS:
        rank_of[kind] = ranks({m: cell.get((m, kind, RANK_METRIC), (math.nan,))[0] for m in methods})
    for method in methods:
        row = [Cell(display(method)), Cell(" / ".join(str(count.get((method, k), 0)) for k in PROTOCOLS))]
        published = paper_values(paper, dataset, method)
        for metric in metrics:
            row.append(Cell(f"{published[metric]:.1f}" if metric in published else DASH))
            for kind in PROTOCOLS:
                hit = cell.get((method, kind, metric))
                row.append(Cell(fmt_mean_ci(*hit) if hit else "not run", muted=hit is None))
        row += [Cell(str(rank_of[k][method]) if method in rank_of[k] else DASH) for k in ("published", *PROTOCOLS)]
        table.rows.append(row)
    table.note = ("Ours: mean ± 95% CI (Student t) over seeds, in %. Paper: Zheng et al. 2019, Tables 1-3 "
                  f"({DASH}: no published number). Ranks: 1 = best {metric_label(RANK_METRIC)} among the methods "
                  "with a number in that column.")
    return table


def gain_rows(found: list[tuple[str, str, str, str, str, Gain]]) -> list[list[str]]:
    rows = []
    for dataset, method, base, metric, kind, g in sorted(
            found, key=lambda r: (r[0], r[1], METRICS.index(r[3]) if r[3] in METRICS else 99, r[3],
                                  list(PROTOCOLS).index(r[4]))):
        rows.append([dataset, display(method), display(base), metric_label(metric), PROTOCOLS[kind],
                     ", ".join(map(str, g.seeds)), fmt_gain(g), excludes_text(g)])
    return rows


GAIN_HEADER = ["Dataset", "HDML", "over base", "Metric", "Protocol", "paired seeds", "gain (points)",
               "95% interval excludes 0?"]


def gain_figure(found: list[tuple[str, str, str, str, str, Gain]], datasets: list[str]) -> plt.Figure:
    """One panel per metric; per dataset, each HDML method's gain under both protocols (filled:
    paper protocol, hollow: fair), mean with its 95% interval and each seed pair's difference."""
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
    """What each protocol's runs are, from runs.csv: selection, metric and steps."""
    parts = []
    for kind, label in PROTOCOLS.items():
        mine = tagged[tagged.protocol_kind == kind]
        if mine.empty:
            continue
        selections = ", ".join(sorted(set(mine.selection)))
        steps = ", ".join(str(int(s)) for s in sorted(set(mine.steps.dropna())))
        what = (f"by {', '.join(sorted(set(mine.selection_metric.dropna())))} on the validation classes"
                if kind == "fair" else "")
        parts.append(f"{label}: selection {selections}{' ' + what if what else ''}, {steps} steps")
    return "; ".join(parts)


@register_section
def fair_protocol_section(rep: Report, data: Inputs) -> None:
    """The paper's number, ours under the paper's protocol and under the fair one, HDML's gains."""
    runs = data.runs
    if runs is None:
        rep.section("fair", TITLE, note("No runs table (runs.csv) given: the fair protocol's runs are the ones "
                                        "whose selection is val, which only runs.csv records."))
        return
    tagged, notes = protocol_runs(runs)
    if not (tagged.protocol_kind == "fair").any():
        rep.section("fair", TITLE, note("No fair-protocol runs in these results (no run with selection: val, "
                                        "trained without the validation classes and selected on them). "
                                        "Nothing here says whether HDML's gain holds under a fair protocol."))
        return
    seeds = per_seed(data.metrics, tagged)
    intro = ("<p>Paper protocol: the default runs, trained on all training classes, reporting the checkpoint "
             "their selection names (the last, as the paper states). Fair protocol (after Musgrave et al., "
             "\"A Metric Learning Reality Check\", ECCV 2020): runs that train on the training classes less the "
             "validation classes carved from them (hdml.valsplit) and report the checkpoint best on those "
             "validation classes; test labels choose nothing. Runs: "
             f"{html.escape(protocol_note(tagged))}.</p>")
    parts = [intro, *(f'<p class="note">{html.escape(n)}</p>' for n in notes)]
    md = []
    datasets = [d for d in data.datasets if d in set(seeds.dataset)]
    for dataset in datasets:
        table = comparison_table(dataset, seeds, data.paper)
        parts.append(rep.table(table))
        md.append(table.markdown())
    found = gains(seeds)
    if found:
        gain_table = simple_table("fair-gain", "HDML's gain over its base loss under each protocol", GAIN_HEADER,
                                  gain_rows(found), stub=5,
                                  note="HDML − base loss on the same seeds, in points: the mean of the per-seed "
                                       "differences ± the paired Student-t 95% interval (n − 1 degrees of freedom). "
                                       "An interval that excludes 0 is a gain (or loss) the seeds support.")
        parts.append(rep.table(gain_table))
        md.append(gain_table.markdown())
        parts.append(rep.figure("fair-gain", gain_figure(found, [d for d in datasets if any(r[0] == d for r in found)]),
                                "HDML's gain over its base loss per dataset, paper protocol (filled) and fair "
                                "protocol (hollow): mean of the paired per-seed differences with its 95% interval "
                                "(from 3 paired seeds on), small dots each seed pair's difference, in points."))
    else:
        parts.append(note("No HDML method ran beside its base loss under a common protocol: no gain to show."))
    write_text(rep.out_dir / "tables" / "fair.md", "\n".join(md))
    rep.section("fair", TITLE, "\n".join(parts))
