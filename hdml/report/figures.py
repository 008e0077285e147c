"""The report's figures, as matplotlib Figures; `encode` turns one into PNG and SVG bytes.

Small multiples rather than overlays: one panel per method (or setting), the other methods
drawn thin and grey behind it for context and, for a method built on a base loss (HDML, DAML:
the plug-in's `base`), that loss dashed, so that eight methods' bands never cover each other. A
mean over seeds is a line, each seed a thin line or a point, and the 95% interval is shaded only
from stats.MIN_SEEDS seeds on; a panel whose seeds are too few says so in its title. The paper's
value, where it has one, is a dotted line. Legends sit below the panels, never on the data.
Metrics come in as fractions, drawn in %.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from hdml.eval.tsne import TsneMap, subsample  # noqa: E402
from hdml.report.names import dataset_title, display, loss_figure, loss_terms  # noqa: E402
from hdml.report.stats import MIN_SEEDS, shown, summary  # noqa: E402

FORMATS = ("png", "svg")
# What the lines of a seeds figure mean, for the captions of the sections that draw them.

SEEDS_KEY = (f"Thick line: the mean over seeds; thin lines: each seed; shaded: the 95% CI, drawn only from "
             f"{MIN_SEEDS} seeds on (a panel with fewer says so); grey: the other panels' means.")
CURVE_KEY = (f"{SEEDS_KEY} Dashed: an HDML method's base loss; dotted: the paper's value after its 8,000 steps, "
             "where it has one.")
CONTEXT = "0.78"
BASE = "0.2"
PAPER = dict(color="black", linestyle=":", linewidth=1.3)
SEEDS_LINE = dict(linewidth=0.7, alpha=0.5)
SEEDS_POINT = dict(marker="o", ms=3, alpha=0.55, linestyle="none")
BAND_ALPHA = 0.2


@dataclass(frozen=True)
class Series:
    """The subject of one panel (row): the runs of `method` under `variant`."""

    method: str
    variant: str
    label: str
    base: str | None = None  # label of another Series, drawn dashed beside this one
    paper: dict = field(default_factory=dict)  # metric (or K) -> the paper's value, in %


def own_terms(losses: pd.DataFrame, series: list[Series], figure: str) -> tuple[list[Series], list[tuple[str, str]]]:
    """The series whose plug-in draws its own terms in `figure` (`Method.loss_figure`) and has some
    in `losses`, without base or paper lines; the terms they declare and logged, in declared order."""
    mine = [s for s in series if loss_figure(s.method) == figure
            and set(loss_terms(s.method)) & set(losses[losses.method == s.method].metric)]
    logged = set(losses[losses.method.isin([s.method for s in mine])].metric)
    declared = {t: label for s in mine for t, label in loss_terms(s.method).items()}
    return [replace(s, base=None, paper={}) for s in mine], [(t, lab) for t, lab in declared.items() if t in logged]


def encode(fig: plt.Figure) -> dict[str, bytes]:
    """PNG (for the page) and SVG (vector, for a paper), byte-identical across reruns."""
    out = {}
    with plt.rc_context({"svg.hashsalt": "hdml-report", "svg.fonttype": "none"}):
        for fmt in FORMATS:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=100, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
            out[fmt] = buf.getvalue()
    plt.close(fig)
    return out


PALETTE = [c for k, c in enumerate(plt.get_cmap("tab10").colors) if k != 7]  # tab10 without its grey (context)


def colour(i: int) -> tuple:
    return PALETTE[i % len(PALETTE)]


def pick(data: pd.DataFrame, s: Series) -> pd.DataFrame:
    return data[(data.method == s.method) & (data.variant == s.variant)]


def draw(ax: plt.Axes, long: pd.DataFrame, x: str, c, label: str | None, points: bool = False,
         percent: bool = True) -> int:
    """Each seed (thin line, or points), the mean over seeds, and the 95% band where at least
    MIN_SEEDS seeds back it; returns the fewest seeds at any x."""
    scale = 100.0 if percent else 1.0
    for _, one in long.groupby("seed"):
        one = one.sort_values(x)
        ax.plot(one[x], scale * one.value, color=c, **(SEEDS_POINT if points else SEEDS_LINE))
    s = summary(long, [x]).sort_values(x)
    ax.plot(s[x], scale * s["mean"], color=c, marker="o", ms=2.5, linewidth=1.6, label=label)
    ok = s.n.map(shown).to_numpy(dtype=bool)
    if ok.any():
        half = scale * np.nan_to_num(s.ci.to_numpy())
        low, high = scale * s["mean"].to_numpy() - half, scale * s["mean"].to_numpy() + half
        if percent:  # a metric cannot leave [0, 100]
            low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
        ax.fill_between(s[x].to_numpy(dtype=float), low, high, where=ok, color=c, alpha=BAND_ALPHA, linewidth=0)
    return int(s.n.min())


def mean_line(ax: plt.Axes, long: pd.DataFrame, x: str, percent: bool = True, **style) -> None:
    m = long.groupby(x)["value"].mean().sort_index()
    ax.plot(m.index, (100.0 if percent else 1.0) * m.to_numpy(), **style)


def too_few(n: int) -> str:
    """The title suffix of a panel drawn without an interval."""
    return "" if shown(n) else f"\n({n} seed{'s' if n != 1 else ''}: no interval)"


def legend(fig: plt.Figure, *, context: bool, base: bool, paper: bool, points: bool = False) -> None:
    """One key below all panels (grey proxies: the colours only tell panels apart)."""
    handles = [Line2D([], [], color=BASE, marker="o", ms=2.5, linewidth=1.6, label="mean over seeds"),
               (Line2D([], [], color=BASE, **SEEDS_POINT, label="each seed") if points
                else Line2D([], [], color=BASE, **SEEDS_LINE, label="each seed")),
               Patch(color=BASE, alpha=BAND_ALPHA, label=f"95% CI (from {MIN_SEEDS} seeds on)")]
    if context:
        handles.append(Line2D([], [], color=CONTEXT, linewidth=0.9, label="the other panels' means"))
    if base:
        handles.append(Line2D([], [], color=BASE, linestyle="--", linewidth=1,
                              label="its base loss (HDML, DAML panels)"))
    if paper:
        handles.append(Line2D([], [], **PAPER, label="the paper's value"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)


def grid(n: int, ncols: int, width: float, height: float, title: str, **kw) -> tuple[plt.Figure, np.ndarray]:
    """n panels in rows of ncols; unused cells hidden."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 1.0), squeeze=False,
                             layout="constrained", **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig, axes


def curve_grid(curves: pd.DataFrame, series: list[Series], metrics: list[tuple[str, str]], title: str,
               percent: bool = True) -> plt.Figure:
    """Curves over training steps (long: method, variant, seed, step, metric, value): one row per
    series, one column per (metric, name); y shared per column for metrics in %, not for losses.
    Losses get no grey context from the other rows either: objectives of different methods (DAML's
    J_gen beside HDML's) differ by orders of magnitude, and the other's line would set the scale."""
    fig, axes = grid(len(series) * len(metrics), len(metrics), 3.3, 1.75, title, sharex=True,
                     sharey="col" if percent else False)
    axes = axes.reshape(len(series), len(metrics))
    by_label = {s.label: s for s in series}
    for i, s in enumerate(series):
        base = by_label.get(s.base) if s.base else None
        for j, (metric, name) in enumerate(metrics):
            ax = axes[i, j]
            of_metric = curves[curves.metric == metric]
            for other in series if percent else []:
                if other is not s and other is not base and len(o := pick(of_metric, other)):
                    mean_line(ax, o, "step", percent, color=CONTEXT, linewidth=0.8, zorder=1)
            if base is not None and len(b := pick(of_metric, base)):
                mean_line(ax, b, "step", percent, color=BASE, linestyle="--", linewidth=1, zorder=2)
            if metric in s.paper:
                ax.axhline(s.paper[metric], **PAPER)
            mine = pick(of_metric, s)
            n = draw(ax, mine, "step", colour(i), s.label, percent=percent) if len(mine) else MIN_SEEDS
            ax.set_title(f"{s.label}: {name}{too_few(n)}", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if j == 0 and percent:
                ax.set_ylabel("%", fontsize=8)
            if i == len(series) - 1:
                ax.set_xlabel("training step", fontsize=8)
    legend(fig, context=percent and len(series) > 1, base=any(s.base for s in series),
           paper=any(s.paper for s in series))
    return fig


def loss_grid(losses: pd.DataFrame, series: list[Series], ylabel: str, title: str) -> plt.Figure:
    """Training losses (long: method, variant, seed, step, value), one panel per series; each
    panel has its own y scale, as losses of different methods are not comparable."""
    fig, axes = grid(len(series), 4, 3.3, 2.4, title, sharex=True)
    by_label = {s.label: s for s in series}
    for i, (ax, s) in enumerate(zip(axes.flat, series, strict=False)):
        base = by_label.get(s.base) if s.base else None
        if base is not None and len(b := pick(losses, base)):
            mean_line(ax, b, "step", percent=False, color=BASE, linestyle="--", linewidth=1, zorder=2)
        mine = pick(losses, s)
        n = draw(ax, mine, "step", colour(i), s.label, percent=False) if len(mine) else MIN_SEEDS
        ax.set_title(f"{s.label}{too_few(n)}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    legend(fig, context=False, base=any(s.base for s in series), paper=False)
    return fig


def recall_grid(points: pd.DataFrame, series: list[Series], title: str) -> plt.Figure:
    """Recall@K against K (long: method, variant, seed, k, value), one panel per series; the
    paper's Recall@K where it has them (Series.paper keyed by K)."""
    fig, axes = grid(len(series), 4, 3.0, 2.5, title, sharey=True)
    ks = sorted(set(points.k) | {k for s in series for k in s.paper})
    for i, (ax, s) in enumerate(zip(axes.flat, series, strict=False)):
        for other in series:
            if other is not s and len(o := pick(points, other)):
                mean_line(ax, o, "k", color=CONTEXT, linewidth=0.8, zorder=1)
        if s.paper:
            k = sorted(s.paper)
            ax.plot(k, [s.paper[x] for x in k], marker="s", ms=4, markerfacecolor="none", **PAPER)
        mine = pick(points, s)
        n = draw(ax, mine, "k", colour(i), s.label, points=True) if len(mine) else MIN_SEEDS
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_title(f"{s.label}{too_few(n)}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("K", fontsize=8)
        ax.set_ylabel("Recall@K (%)", fontsize=8)
    legend(fig, context=len(series) > 1, base=False, paper=any(s.paper for s in series), points=True)
    return fig


def sweep_figure(points: pd.DataFrame, default: pd.DataFrame, panels: list[tuple[str, list[tuple[str, str]]]],
                 xlabel: str, default_x: float | None, default_label: str, title: str) -> plt.Figure:
    """Last-checkpoint metrics (long, per seed: metric, x, seed, value) against the swept value,
    one panel per group of (metric, name) (paper Figures 6-7): each seed a point, the mean a line,
    the 95% CI an error bar from MIN_SEEDS seeds on; the metrics of a panel sit side by side
    around each value so that their bars do not cover each other. The default variant (long:
    metric, seed, value) at a fixed value `default_x` is a point of the line (a star), at no
    fixed value (adaptive) a hollow diamond beyond a dotted divider, labelled, apart from the
    swept values."""
    fig, axes = grid(len(panels), len(panels), 5.0, 3.4, title)
    xs = sorted(set(points.x) | ({default_x} if default_x is not None else set()))
    span = (xs[-1] - xs[0]) or 1.0
    right = xs[-1] + 0.22 * span  # where an adaptive default goes, past the divider
    for ax, (name, metrics) in zip(axes.flat, panels, strict=False):
        dodge = 0.012 * span
        for i, (metric, label) in enumerate(metrics):
            c, shift = colour(i), (i - (len(metrics) - 1) / 2) * dodge
            mine = points[points.metric == metric]
            d = default[default.metric == metric]
            if default_x is not None and len(d):  # the default is a point of the sweep: on the line
                mine = pd.concat([mine, d.assign(x=default_x)])
            ax.plot(mine.x + shift, 100 * mine.value, color=c, **SEEDS_POINT)
            s = summary(mine, ["x"]).sort_values("x")
            ok = s.n.map(shown).to_numpy(dtype=bool)
            ax.plot(s.x + shift, 100 * s["mean"], color=c, marker="o", ms=4, linewidth=1.4)
            if ok.any():
                ax.errorbar(s.x[ok] + shift, 100 * s["mean"][ok], yerr=100 * s.ci[ok], color=c, capsize=3,
                            linestyle="none")
            n = int(s.n.min())
            if len(d):
                k, m = len(d), 100 * d.value.mean()
                ci = 100 * summary(d, ["metric"]).ci.iloc[0] if shown(k) else None
                n = min(n, k)
                x = (default_x if default_x is not None else right) + shift
                if default_x is None:  # apart from the line: its own seeds and bar
                    ax.plot([x] * k, 100 * d.value, color=c, **SEEDS_POINT)
                    ax.errorbar([x], [m], yerr=ci, marker="D", ms=7, capsize=3, color=c, mfc="white",
                                markeredgecolor=c, linestyle="none")
                else:  # on the line, whose bar it already has: the star marks which point is the default
                    ax.plot([x], [m], marker="*", ms=12, color=c, markeredgecolor="black", linestyle="none")
            ax.plot([], [], color=c, marker="o", ms=4, label=label + ("" if shown(n) else f" ({n} seeds: no interval)"))
        if default_x is None and not default.empty:
            divider = xs[-1] + 0.11 * span
            ax.axvline(divider, color="0.5", linestyle=":", linewidth=1)
            ax.set_xticks([*xs, right], [*(f"{v:g}" for v in xs), "adaptive\n(default)"])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if not default.empty:
            style = (dict(marker="*", ms=12, markeredgecolor="black", linestyle="none", color="grey")
                     if default_x is not None else dict(marker="D", ms=7, mfc="white", linestyle="none", color="grey"))
            handles.append(Line2D([], [], **style))
            labels.append(default_label)
        handles += [Line2D([], [], color=BASE, **SEEDS_POINT),
                    Line2D([], [], color=BASE, marker="|", ms=10, linestyle="none")]
        labels += ["each seed", f"95% CI (from {MIN_SEEDS} seeds on)"]
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    return fig


def tsne_figure(m: TsneMap) -> tuple[plt.Figure, str]:
    """The t-SNE map of a run's test embeddings (`hdml tsne`), coloured by class (Figure 8)."""
    xy, labels = m.xy, m.labels
    _, rng = subsample(m.n_test, len(xy))  # the generator after the map's subsample: its colours
    classes, idx = np.unique(labels, return_inverse=True)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "nipy_spectral")(
        np.linspace(0, 1, len(classes)) if len(classes) > 10 else np.arange(len(classes)))
    colours = colours[rng.permutation(len(classes))] if len(classes) > 10 else colours
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(xy[:, 0], xy[:, 1], c=colours[idx], s=6 if len(xy) > 500 else 14, linewidths=0)
    if len(classes) <= 10:
        for k, c in enumerate(classes):
            ax.scatter([], [], color=colours[k], label=str(c))
        ax.legend(title="class", fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    title = (f"{dataset_title(m.key['dataset'])}: {display(m.key['method'])}, "
             f"{m.key['variant']}, seed {m.key['seed']}")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    caption = (f"Barnes-Hut t-SNE of {len(xy)} test embeddings ({len(classes)} classes"
               f"{', random subsample' if m.subsampled else ''}) of {title}; one colour per class.")
    return fig, caption
