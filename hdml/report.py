"""The report: the paper's Tables 1-3 beside ours, Figures 4-8 redrawn from our runs, costs.

Ours are last-checkpoint numbers, mean and Student-t 95% CI over seeds. The authors' code kept
the checkpoint with the best *test* NMI; that number is shown in its own table, labelled as
optimistic, never mixed into the main one. `report.html` is one self-contained file (figures
inlined as base64 PNG); tables are also written as Markdown and LaTeX under `tables/`, figures
as PNG under `figures/`. A section without data in the results is replaced by a short note.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from hdml.aggregate import COSTS_COLUMNS, CURVES_COLUMNS, METRICS_COLUMNS, RUNS_COLUMNS, run_key  # noqa: E402
from hdml.io import write_text, write_with  # noqa: E402

DISPLAY = {
    "contrastive": "Contrastive", "ddml": "DDML", "lifted": "Lifted", "angular": "Angular",
    "triplet": "Triplet", "semihard": "Triplet hard", "triplet-hard": "Triplet hard",
    "daml-triplet": "DAML (Triplet)", "hdml-triplet": "HDML (Triplet)",
    "npair": "N-pair", "daml-npair": "DAML (N-pair)", "hdml-npair": "HDML (N-pair)",
}
DATASET_ORDER = ["cub200", "cars196", "sop", "digits"]
DATASET_TITLES = {"cub200": "CUB-200-2011", "cars196": "Cars196", "sop": "Stanford Online Products",
                  "digits": "Digits (embedded demo)"}
PAPER_TABLE = {"cub200": 1, "cars196": 2, "sop": 3}
# The paper's pulling factors (spec section 2), used where a run's config leaves hdml.alpha null.
PAPER_ALPHA = {"hdml-triplet": 7.0, "hdml-npair": 90.0}
ABLATIONS = {"no-softmax": "w/o softmax loss", "no-recon": "w/o reconstruction loss"}
SWEEPS = {"alpha": "α (pulling factor)", "lambda0": "λ0 (fixed hardness, no adaptation)"}
PROTOCOL_VARIANT = "protocol=paper"
CURVE_METRICS = ["nmi", "f1", "recall@1"]
TSNE_MAX_POINTS = 2000
SELECTED = "selected:"
DASH = "—"


# ---------------------------------------------------------------- statistics and formatting

def ci95(values: np.ndarray) -> float:
    """Half-width of the Student-t 95% interval of the mean; NaN for fewer than two seeds."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def summary(long: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width and count of `value` per group (fractions, as given)."""
    g = long.groupby(by, sort=False)["value"]
    out = g.agg(mean="mean", n="count").reset_index()
    out["ci"] = g.apply(lambda v: ci95(v.to_numpy())).to_numpy()
    return out


def fmt_pct(x: float) -> str:
    return DASH if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def fmt_mean_ci(mean: float, ci: float) -> str:
    """'62.6 ± 0.8' in percent; the mean alone when there is no interval (one seed)."""
    return fmt_pct(mean) if not np.isfinite(ci) else f"{100 * mean:.1f} ± {100 * ci:.1f}"


def fmt_diff(points: float) -> str:
    return f"{points:+.1f}"


def metric_label(m: str) -> str:
    if m.startswith("recall@"):
        return "R@" + m.split("@", 1)[1]
    return {"nmi": "NMI", "f1": "F1", "map@r": "MAP@R", "r_precision": "R-Prec"}.get(m, m)


def metric_order(names) -> list[str]:
    """The paper's column order: NMI, F1, R@K by K, then MAP@R, R-precision, anything else."""
    def key(m: str) -> tuple:
        if m.startswith("recall@") and m.split("@", 1)[1].isdigit():
            return (2, int(m.split("@", 1)[1]), m)
        return ({"nmi": 0, "f1": 1, "map@r": 3, "r_precision": 4}.get(m, 5), 0, m)

    return sorted(set(names), key=key)


def display(method: str) -> str:
    return DISPLAY.get(method, method)


def dataset_sort(names) -> list[str]:
    return sorted(set(names), key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 99, d))


def hdml_base(label: str) -> str | None:
    """'HDML (N-pair)' -> 'N-pair': the row the paper's bold marks compare against."""
    found = re.fullmatch(r"HDML \((.+)\)", label)
    return found.group(1) if found else None


# ---------------------------------------------------------------- tables

@dataclass
class Cell:
    text: str
    best: bool = False  # red in the paper: the best of the column
    bold: bool = False  # bold in the paper: HDML beats the same loss without HDML
    muted: bool = False


@dataclass
class Table:
    """A table with leading label columns and metric groups of one or more sub-columns."""

    key: str
    title: str
    stub: list[str]
    groups: list[tuple[str, list[str]]]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""

    @property
    def two_level(self) -> bool:
        return any(subs != [""] for _, subs in self.groups)

    @property
    def columns(self) -> int:
        return len(self.stub) + sum(len(s) for _, s in self.groups)

    def flat_header(self) -> list[str]:
        return [*self.stub, *[f"{g} {s}".strip() for g, subs in self.groups for s in subs]]

    def html(self) -> str:
        out = [f'<div class="scroll"><table class="results" id="{html.escape(self.key)}">']
        if self.two_level:
            top = "".join(f'<th rowspan="2">{html.escape(s)}</th>' for s in self.stub)
            top += "".join(f'<th colspan="{len(subs)}" class="group">{html.escape(g)}</th>'
                           for g, subs in self.groups)
            sub = "".join(f'<th class="sub">{html.escape(s)}</th>' for _, subs in self.groups for s in subs)
            out.append(f"<thead><tr>{top}</tr><tr>{sub}</tr></thead>")
        else:
            out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in self.flat_header())
                       + "</tr></thead>")
        out.append("<tbody>")
        starts = group_starts(self) if self.two_level else set()
        for row in self.rows:
            cells = []
            for i, c in enumerate(row):
                cls = [n for n, on in (("stub", i < len(self.stub)), ("best", c.best), ("bold", c.bold),
                                       ("muted", c.muted), ("gs", i in starts)) if on]
                attr = f' class="{" ".join(cls)}"' if cls else ""
                cells.append(f"<td{attr}>{html.escape(c.text)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        return "\n".join(out)

    def markdown(self) -> str:
        def md(c: Cell) -> str:
            text = c.text.replace("|", "\\|")
            if c.bold and text:
                text = f"**{text}**"
            return text + (" †" if c.best else "")

        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.flat_header()) + " |")
        lines.append("|" + "|".join(["---"] * len(self.stub) + ["---:"] * (self.columns - len(self.stub))) + "|")
        lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        spec = "l" * len(self.stub) + "".join("|" + "r" * len(subs) for _, subs in self.groups)
        lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\hline"]
        if self.two_level:
            head = [tex(s) for s in self.stub]
            head += [rf"\multicolumn{{{len(subs)}}}{{c}}{{{tex(g)}}}" if len(subs) > 1 else tex(g)
                     for g, subs in self.groups]
            lines.append(" & ".join(head) + r" \\")
            lines.append(" & ".join([""] * len(self.stub) + [tex(s) for _, subs in self.groups for s in subs])
                         + r" \\")
        else:
            lines.append(" & ".join(tex(h) for h in self.flat_header()) + r" \\")
        lines.append(r"\hline")
        for row in self.rows:
            cells = []
            for c in row:
                text = tex(c.text)
                if c.bold and text:
                    text = rf"\textbf{{{text}}}"
                if c.best and text:
                    text = rf"\textcolor{{red}}{{{text}}}"
                cells.append(text)
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\hline", r"\end{tabular}", rf"\caption{{{tex(self.title)}}}",
                  rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', self.key)}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def group_starts(table: Table) -> set[int]:
    """Column indices where a metric group begins (drawn with a left rule)."""
    starts, i = set(), len(table.stub)
    for _, subs in table.groups:
        starts.add(i)
        i += len(subs)
    return starts


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "$": r"\$", "^": r"\^{}", "~": r"\~{}"}
TEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "α": r"$\alpha$", "λ": r"$\lambda$", "—": "--",
               "†": r"$\dagger$", "−": "-"}


def tex(text: str) -> str:
    out = "".join(TEX_ESCAPES.get(ch, ch) for ch in text)
    for symbol, macro in TEX_SYMBOLS.items():
        out = out.replace(symbol, macro)
    return out


def simple_table(key: str, title: str, header: list[str], rows: list[list[str]], stub: int = 1,
                 note: str = "") -> Table:
    table = Table(key, title, header[:stub], [(h, [""]) for h in header[stub:]], note=note)
    table.rows = [[Cell(t) for t in r] for r in rows]
    return table


def mark_column(cells: list[Cell], values: list[float], labels: list[str]) -> None:
    """The paper's marks within one column: red for the best, bold where HDML (X) beats X."""
    finite = [v for v in values if np.isfinite(v)]
    if len(finite) < 2:  # nothing to compare with
        return
    best = max(finite)
    by_label = dict(zip(labels, values))
    for cell, value, label in zip(cells, values, labels):
        cell.best = bool(np.isfinite(value) and np.isclose(value, best))
        base = hdml_base(label)
        if base is not None and np.isfinite(value) and np.isfinite(by_label.get(base, np.nan)):
            cell.bold = bool(value > by_label[base])


def results_table(summ: pd.DataFrame, paper: pd.DataFrame, dataset: str, selected: bool) -> Table | None:
    """Tables 1-3: per method and metric, ours (mean ± CI), the paper's value and ours - paper.

    `selected` builds the same table from the test-selected checkpoint instead of the last.
    """
    rows = summ[(summ.dataset == dataset) & (summ.variant == "default")]
    rows = rows[rows.metric.str.startswith(SELECTED) == selected]
    if rows.empty:
        return None
    rows = rows.assign(metric=rows.metric.str.removeprefix(SELECTED) if selected else rows.metric)
    ref = paper[paper.dataset == dataset]
    labels_of = {}
    for method in rows.method.unique():
        label = display(method)
        if label in labels_of:
            raise ValueError(f"methods {labels_of[label]!r} and {method!r} both display as {label!r}")
        labels_of[label] = method
    ours = {(display(r.method), r.metric): r for r in rows.itertuples()}
    seeds = rows.groupby("method")["n"].max()
    ours_metrics = set(rows.metric)
    compared = metric_order(set(ref.metric) | {m for m in ours_metrics if m.startswith("recall@")}
                            | ({"nmi", "f1"} & ours_metrics)) if len(ref) else []
    extra = metric_order(ours_metrics - set(compared))
    paper_value = {(r.method, r.metric): float(r.value) for r in ref.itertuples()}
    known = list(dict.fromkeys(paper.method))
    labels = [lab for lab in known if lab in set(ref.method) or lab in labels_of]
    labels += sorted(set(labels_of) - set(labels), key=str.lower)

    if selected:
        title = f"{DATASET_TITLES.get(dataset, dataset)}: test-selected checkpoint (as the authors' code; optimistic)"
        key = f"table-{dataset}-selected"
    else:
        number = PAPER_TABLE.get(dataset)
        title = (f"Table {number}: " if number else "") + f"{DATASET_TITLES.get(dataset, dataset)}, last checkpoint"
        key = f"table-{dataset}"
    groups = [(metric_label(m), ["ours", "paper", "Δ"]) for m in compared]
    groups += [(metric_label(m), ["ours"] if compared else [""]) for m in extra]
    table = Table(key, title, ["Method", "seeds"], groups)
    columns: list[list[Cell]] = []
    rows_body = [[Cell(label), Cell(str(int(seeds[labels_of[label]])) if label in labels_of else DASH)]
                 for label in labels]
    for m in compared + extra:
        ours_cells, ours_vals, paper_cells, paper_vals, diff_cells = [], [], [], [], []
        for label in labels:
            hit = ours.get((label, m))
            ref_value = paper_value.get((label, m), math.nan)
            if label not in labels_of:
                ours_cells.append(Cell("not run", muted=True))
            else:
                ours_cells.append(Cell(fmt_mean_ci(hit.mean, hit.ci) if hit else DASH))
            ours_vals.append(100 * hit.mean if hit else math.nan)
            paper_cells.append(Cell(f"{ref_value:.1f}" if np.isfinite(ref_value) else DASH))
            paper_vals.append(ref_value)
            diff_cells.append(Cell(fmt_diff(100 * hit.mean - ref_value) if hit and np.isfinite(ref_value) else "",
                                   muted=True))
        mark_column(ours_cells, ours_vals, labels)
        columns.append(ours_cells)
        if m in compared:
            mark_column(paper_cells, paper_vals, labels)
            columns += [paper_cells, diff_cells]
    body = [row + [cells[i] for cells in columns] for i, row in enumerate(rows_body)]
    table.rows = body
    what = "test-selected (best test NMI over the curve)" if selected else "last checkpoint"
    table.note = f"Ours: {what}, mean ± 95% CI (Student t) over seeds, in %. "
    if dataset in PAPER_TABLE:
        table.note += (f"Paper: Table {PAPER_TABLE[dataset]} of Zheng et al. 2019; Δ = ours − paper, in points; "
                       "'not run': a method of the paper this suite did not run. ")
    else:
        table.note += "No published numbers for this dataset. "
    table.note += ("Red (†): best of the column; bold: HDML beats the same loss without HDML "
                   "(the paper's marks, applied to each column separately).")
    return table


def summary_table(summ: pd.DataFrame, key: str, title: str, stub_cols: list[str], stub_names: list[str],
                  note: str = "") -> Table:
    """Mean ± CI per metric for each group of `stub_cols` (one row each)."""
    metrics = metric_order(summ.metric.unique())
    rows = []
    for stub_values, g in summ.groupby(stub_cols, sort=False):
        by_metric = {r.metric: r for r in g.itertuples()}
        cells = [str(v) for v in (stub_values if isinstance(stub_values, tuple) else (stub_values,))]
        cells.append(str(int(g.n.max())))
        cells += [fmt_mean_ci(by_metric[m].mean, by_metric[m].ci) if m in by_metric else DASH for m in metrics]
        rows.append(cells)
    return simple_table(key, title, [*stub_names, "seeds", *map(metric_label, metrics)], rows,
                        stub=len(stub_names), note=note)


# ---------------------------------------------------------------- figures

def figure_png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def band(ax: plt.Axes, long: pd.DataFrame, label: str, **style) -> None:
    """Mean over seeds per step with its 95% CI as a shaded band, in %."""
    s = summary(long, ["step"]).sort_values("step")
    line, = ax.plot(s.step, 100 * s["mean"], marker="o", ms=3, label=label, **style)
    low, high = ci_bounds(s["mean"].to_numpy(), s.ci.to_numpy())
    ax.fill_between(s.step, low, high, color=line.get_color(), alpha=0.15)


def ci_bounds(mean: np.ndarray, ci: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interval in %, clipped to [0, 100] where few seeds make it wider than a metric can go."""
    ci = np.nan_to_num(ci)
    return np.clip(100 * (mean - ci), 0, 100), np.clip(100 * (mean + ci), 0, 100)


def curve_figure(curves: pd.DataFrame, lines: list[tuple[str, str, str]], title: str) -> bytes:
    """NMI, F1, R@1 over training steps for (method, variant, label) lines."""
    panels = [m for m in CURVE_METRICS if m in set(curves.metric)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.3), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for method, variant, label in lines:
            sub = curves[(curves.method == method) & (curves.variant == variant) & (curves.metric == metric)]
            if len(sub):
                band(ax, sub, label)
        ax.set_title(metric_label(metric))
        ax.set_xlabel("training step")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.legend(list(legend.values()), list(legend), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(legend), 4), fontsize=8, frameon=False)
    return figure_png(fig)


def sweep_figure(points: pd.DataFrame, default: pd.DataFrame, param: str, default_x: float | None,
                 title: str) -> bytes:
    """Last-checkpoint metrics against the swept value, with CI error bars (Figures 6-7).

    The default variant is a separate marker at its alpha; for lambda0 (default: adaptive, no
    fixed value) a dashed line with its CI band.
    """
    panels = [("Clustering", [m for m in ("nmi", "f1") if m in set(points.metric)]),
              ("Retrieval", [m for m in metric_order(points.metric.unique()) if m.startswith("recall@")])]
    panels = [(name, ms) for name, ms in panels if ms]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    symbol = "α" if param == "alpha" else "λ0"
    for ax, (name, metrics) in zip(axes[0], panels):
        for metric in metrics:
            s = points[points.metric == metric].sort_values("x")
            y = 100 * s["mean"].to_numpy()
            low, high = ci_bounds(s["mean"].to_numpy(), s.ci.to_numpy())
            bars = ax.errorbar(s.x, y, yerr=[y - low, high - y], marker="o", ms=4, capsize=3,
                               label=metric_label(metric))
            colour = bars[0].get_color()
            d = default[default.metric == metric]
            if d.empty:
                continue
            mean = 100 * d["mean"].iloc[0]
            (low,), (high,) = ci_bounds(d["mean"].to_numpy()[:1], d.ci.to_numpy()[:1])
            if default_x is not None:
                ax.errorbar([default_x], [mean], yerr=[[mean - low], [high - mean]], marker="*", ms=12, capsize=3,
                            color=colour, markeredgecolor="black", linestyle="none")
            else:
                ax.axhline(mean, color=colour, linestyle="--", linewidth=1)
                ax.axhspan(low, high, color=colour, alpha=0.1)
        ax.set_title(name)
        ax.set_xlabel(SWEEPS[param])
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if not default.empty:
            style = (dict(marker="*", ms=12, markeredgecolor="black", linestyle="none", color="grey")
                     if default_x is not None else dict(linestyle="--", color="grey"))
            handles.append(plt.Line2D([], [], **style))
            labels.append(f"default ({symbol} = {default_x:g})" if default_x is not None
                          else "default (adaptive)" if param == "lambda0" else "default")
        ax.legend(handles, labels, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def tsne_figure(path: Path, max_points: int = TSNE_MAX_POINTS) -> tuple[bytes, str]:
    """Barnes-Hut t-SNE of L2-normalised test embeddings, coloured by class (Figure 8)."""
    from sklearn.manifold import TSNE

    with np.load(path) as data:
        for k in ("embeddings", "labels"):
            if k not in data:
                raise ValueError(f"{path}: no array {k!r}")
        z, labels = data["embeddings"].astype(np.float64), data["labels"]
    if z.ndim != 2 or len(z) != len(labels) or len(z) < 5:
        raise ValueError(f"{path}: need an n x d 'embeddings' (n >= 5) and n 'labels'; got {z.shape}, {labels.shape}")
    rng = np.random.default_rng(0)
    subsampled = len(z) > max_points
    if subsampled:
        keep = np.sort(rng.choice(len(z), max_points, replace=False))
        z, labels = z[keep], labels[keep]
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    xy = TSNE(n_components=2, method="barnes_hut", init="pca", random_state=0,
              perplexity=min(30.0, (len(z) - 1) / 3)).fit_transform(z)
    classes, idx = np.unique(labels, return_inverse=True)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "nipy_spectral")(
        np.linspace(0, 1, len(classes)) if len(classes) > 10 else np.arange(len(classes)))
    colours = colours[rng.permutation(len(classes))] if len(classes) > 10 else colours
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(xy[:, 0], xy[:, 1], c=colours[idx], s=6 if len(z) > 500 else 14, linewidths=0)
    if len(classes) <= 10:
        for k, c in enumerate(classes):
            ax.scatter([], [], color=colours[k], label=str(c))
        ax.legend(title="class", fontsize=7, markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    key = run_key(path.parent)
    title = (f"{DATASET_TITLES.get(key['dataset'], key['dataset'])}: {display(key['method'])}, "
             f"{key['variant']}, seed {key['seed']}")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    caption = (f"Barnes-Hut t-SNE of {len(z)} test embeddings ({len(classes)} classes"
               f"{', random subsample' if subsampled else ''}) of {title}; one colour per class.")
    return figure_png(fig), caption


# ---------------------------------------------------------------- inputs

def paper_table() -> pd.DataFrame:
    with resources.files("hdml").joinpath("data/paper_tables.csv").open() as fh:
        return pd.read_csv(fh)


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    table = pd.read_csv(path, keep_default_na=True)
    if list(table.columns) != columns:
        raise ValueError(f"{path}: header must be {','.join(columns)}; got {','.join(map(str, table.columns))}")
    return table


def read_metrics(path: Path) -> pd.DataFrame:
    table = read_table(path, METRICS_COLUMNS)
    bad = ~table.value.between(0, 1)
    if bad.any():
        r = table[bad].iloc[0]
        raise ValueError(f"{path}: {r.dataset}/{r.method}/{r.variant}/seed{r.seed} {r.metric} = {r.value}; "
                         f"values must be fractions in [0, 1]")
    table["variant"] = table.variant.astype(str)
    return table


def variant_value(variant: str, param: str) -> float:
    text = variant.split("=", 1)[1]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"variant {variant!r}: {param} must be a number") from None


def check_variant_settings(runs: pd.DataFrame, source: Path) -> None:
    """A sweep or protocol variant's name must match what its runs were configured with, since
    the figures read the swept value from the name."""
    for r in runs.itertuples():
        key, _, text = str(r.variant).partition("=")
        if key not in ("alpha", "lambda0", "protocol"):
            continue
        got = getattr(r, key)
        same = str(got) == text if key == "protocol" else (pd.notna(got) and np.isclose(float(got),
                                                                                         variant_value(r.variant, key)))
        if not same:
            raise ValueError(f"{source}: {r.dataset}/{r.method}/{r.variant}/seed{r.seed} ran with {key} = {got}; "
                             f"the variant name says {text}")


def default_alpha(runs: pd.DataFrame | None, dataset: str, method: str) -> float | None:
    """The alpha of the default variant: the configured value, else the paper's for the method."""
    if runs is not None:
        mine = runs[(runs.dataset == dataset) & (runs.method == method) & (runs.variant == "default")]
        values = mine.alpha.dropna().unique()
        if len(values) == 1:
            return float(values[0])
        if len(values) > 1:
            raise ValueError(f"runs table: {dataset}/{method}/default has several alphas {sorted(values)}")
    return PAPER_ALPHA.get(method)


def pick_embeddings(paths: list[Path]) -> Path | None:
    """Figure 8's run among those given: HDML (N-pair), default, CUB first, lowest seed."""
    if not paths:
        return None

    def rank(p: Path) -> tuple:
        k = run_key(p.parent)
        return (k["method"] != "hdml-npair", k["variant"] != "default",
                DATASET_ORDER.index(k["dataset"]) if k["dataset"] in DATASET_ORDER else 99, k["seed"], str(p))

    return min(paths, key=rank)


# ---------------------------------------------------------------- assembly

@dataclass
class Report:
    """The page being built: its sections and contents list; figures also go to out_dir/figures."""

    out_dir: Path
    sections: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)

    def section(self, key: str, title: str, body: str) -> None:
        self.toc.append((key, title))
        self.sections.append(f'<section id="{key}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>')

    def figure(self, name: str, png: bytes, caption: str) -> str:
        write_with(self.out_dir / "figures" / f"{name}.png", lambda p: p.write_bytes(png))
        return (f'<figure id="fig-{name}"><img alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, table: Table) -> str:
        note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
        return f'<h3>{html.escape(table.title)}</h3>\n{table.html()}\n{note}'


def note(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def render(metrics_csv: Path, out_dir: Path, curves_csv: Path | None = None, runs_csv: Path | None = None,
           costs_csv: Path | None = None, embeddings: list[Path] | None = None) -> Path:
    """Write report.html, tables/ and figures/ under `out_dir`; returns the HTML path."""
    out_dir = Path(out_dir)
    metrics = read_metrics(Path(metrics_csv))
    curves = read_table(Path(curves_csv), CURVES_COLUMNS) if curves_csv else None
    if curves is not None:
        curves["variant"] = curves.variant.astype(str)
    runs = read_table(Path(runs_csv), RUNS_COLUMNS) if runs_csv else None
    if runs is not None:
        check_variant_settings(runs, Path(runs_csv))
    costs = read_table(Path(costs_csv), COSTS_COLUMNS) if costs_csv else None
    summ = summary(metrics, ["dataset", "method", "variant", "metric"])
    paper = paper_table()
    for sub in ("figures", "tables"):  # both exist even when empty: Snakemake directory() outputs
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir)
    datasets = dataset_sort(metrics.dataset)

    main_tables(rep, summ, paper, datasets, curves)
    fidelity_section(rep)
    ablation_section(rep, summ, curves, datasets)
    for param in SWEEPS:
        sweep_section(rep, summ, runs, datasets, param)
    tsne_section(rep, [Path(p) for p in embeddings or []])
    protocol_section(rep, summ, paper, datasets)
    other_variants_section(rep, summ)
    costs_section(rep, costs)

    toc = "".join(f'<li><a href="#{k}">{html.escape(t)}</a></li>' for k, t in rep.toc)
    n_runs = metrics.groupby(["dataset", "method", "variant", "seed"]).ngroups
    intro = (f"<p>{n_runs} runs over {len(datasets)} dataset(s): {', '.join(datasets)}. "
             "Our numbers are from the <b>last checkpoint</b>: mean ± 95% confidence interval over seeds "
             "(Student t, n − 1 degrees of freedom), in %. The authors' code kept the checkpoint with the best "
             "<i>test</i> NMI; that number is reported separately, labelled as test-selected and optimistic.</p>")
    page = PAGE.format(intro=intro, toc=toc, body="\n".join(rep.sections))
    out = out_dir / "report.html"
    write_text(out, page)
    return out


def main_tables(rep: Report, summ: pd.DataFrame, paper: pd.DataFrame, datasets: list[str],
                curves: pd.DataFrame | None) -> None:
    for dataset in datasets:
        parts, md, tex_parts = [], [], []
        for selected in (False, True):
            table = results_table(summ, paper, dataset, selected)
            if table is None:
                parts.append(note("No test-selected numbers in these results." if selected
                                  else "No runs of the default variant on this dataset."))
                continue
            parts.append(rep.table(table))
            md.append(table.markdown())
            tex_parts.append(table.latex())
        write_text(rep.out_dir / "tables" / f"{dataset}.md", "\n".join(md) if md else "No default-variant runs.\n")
        write_text(rep.out_dir / "tables" / f"{dataset}.tex",
                   "% Needs \\usepackage{xcolor}.\n" + "\n".join(tex_parts))
        data = None if curves is None else curves[(curves.dataset == dataset) & (curves.variant == "default")]
        if data is not None and len(data) and set(CURVE_METRICS) & set(data.metric):
            lines = [(m, "default", display(m)) for m in data.method.unique()]
            png = curve_figure(data, lines, f"{DATASET_TITLES.get(dataset, dataset)}: learning curves, "
                                            "default variant (mean and 95% CI over seeds)")
            parts.append(rep.figure(f"curves_{dataset}", png, f"Learning curves on {dataset}, every method "
                                                              "(default variant); shaded: 95% CI over seeds."))
        else:
            parts.append(note("No learning curves for this dataset in these results."))
        number = PAPER_TABLE.get(dataset)
        title = f"{DATASET_TITLES.get(dataset, dataset)}" + (f" (paper Table {number})" if number else "")
        rep.section(f"dataset-{dataset}", title, "\n".join(parts))


def ablation_section(rep: Report, summ: pd.DataFrame, curves: pd.DataFrame | None, datasets: list[str]) -> None:
    """Figures 4-5: the baseline, HDML, HDML without J_soft, HDML without J_recon."""
    title = "Ablation: HDML without the softmax or reconstruction loss (paper Figures 4-5)"
    found = summ[summ.variant.isin(ABLATIONS)][["dataset", "method"]].drop_duplicates()
    if found.empty:
        rep.section("ablation", title, note("No ablation runs (variants no-softmax, no-recon) in these results."))
        return
    parts = []
    for dataset in datasets:
        for method in found[found.dataset == dataset].method:
            base = method.removeprefix("hdml-") if method.startswith("hdml-") else None
            lines = ([(base, "default", f"{display(base)} (baseline)")] if base else [])
            lines.append((method, "default", display(method)))
            lines += [(method, v, f"{display(method)} {label}") for v, label in ABLATIONS.items()]
            present = [(m, v, lab) for m, v, lab in lines
                       if ((summ.dataset == dataset) & (summ.method == m) & (summ.variant == v)).any()]
            name = f"{dataset}-{method}"
            data = None if curves is None else curves[(curves.dataset == dataset)]
            if data is not None and set(CURVE_METRICS) & set(data.metric):
                png = curve_figure(data, present, f"{DATASET_TITLES.get(dataset, dataset)}: ablation of "
                                                  f"{display(method)} (mean and 95% CI over seeds)")
                parts.append(rep.figure(f"ablation_{name}", png,
                                        f"Learning curves of the ablation on {dataset}: NMI and F1 (clustering, "
                                        "Figure 4), Recall@1 (retrieval, Figure 5)."))
            else:
                parts.append(note(f"No learning curves for the ablation on {dataset}."))
            last = pd.concat([summ[(summ.dataset == dataset) & (summ.method == m) & (summ.variant == v)
                                   & ~summ.metric.str.startswith(SELECTED)].assign(setting=lab)
                              for m, v, lab in present])
            parts.append(rep.table(summary_table(last, f"ablation-{name}",
                                                 f"Ablation on {DATASET_TITLES.get(dataset, dataset)}: last checkpoint",
                                                 ["setting"], ["Setting"],
                                                 "Mean ± 95% CI over seeds, in %.")))
    rep.section("ablation", title, "\n".join(parts))


def sweep_section(rep: Report, summ: pd.DataFrame, runs: pd.DataFrame | None, datasets: list[str],
                  param: str) -> None:
    """Figures 6-7 (alpha) and the fixed-lambda0 sweep: last-checkpoint metrics vs swept value."""
    prefix = f"{param}="
    title = ("Sweep of HDML's pulling factor α (paper Figures 6-7)" if param == "alpha"
             else "Sweep of a fixed hardness λ0, no adaptation (beyond the paper)")
    swept = summ[summ.variant.str.startswith(prefix) & ~summ.metric.str.startswith(SELECTED)]
    if swept.empty:
        rep.section(f"sweep-{param}", title, note(f"No {prefix}<value> variants in these results."))
        return
    swept = swept.assign(x=[variant_value(v, param) for v in swept.variant])
    parts = []
    if param == "alpha":
        parts.append("<p>α = 0 applies no hardness synthesis; the star is the default variant at its α.</p>")
    else:
        parts.append("<p>The dashed line and band are the default, adaptive λ = 1 − exp(−α / J_avg).</p>")
    for dataset in datasets:
        for method in swept[swept.dataset == dataset].method.unique():
            points = swept[(swept.dataset == dataset) & (swept.method == method)]
            default = summ[(summ.dataset == dataset) & (summ.method == method) & (summ.variant == "default")
                           & ~summ.metric.str.startswith(SELECTED)]
            x0 = default_alpha(runs, dataset, method) if param == "alpha" and len(default) else None
            name = f"{dataset}-{method}"
            png = sweep_figure(points, default, param, x0, f"{DATASET_TITLES.get(dataset, dataset)}, "
                                                           f"{display(method)}: last checkpoint vs {SWEEPS[param]}")
            parts.append(rep.figure(f"sweep-{param}_{name}", png,
                                    f"Last-checkpoint metrics of {display(method)} on {dataset} against "
                                    f"{SWEEPS[param]}; error bars: 95% CI over seeds."))
            rows = points.sort_values("x").assign(setting=lambda d: d.x.map(lambda v: f"{v:g}"))
            if len(default):
                label = (f"default (α = {x0:g})" if x0 is not None
                         else "default (adaptive)" if param == "lambda0" else "default")
                rows = pd.concat([rows, default.assign(setting=label)])
            parts.append(rep.table(summary_table(rows, f"sweep-{param}-{name}",
                                                 f"{display(method)} on {DATASET_TITLES.get(dataset, dataset)}: "
                                                 f"{SWEEPS[param]}", ["setting"], ["α" if param == "alpha" else "λ0"],
                                                 "Last checkpoint, mean ± 95% CI over seeds, in %.")))
    rep.section(f"sweep-{param}", title, "\n".join(parts))


def tsne_section(rep: Report, embeddings: list[Path]) -> None:
    title = "t-SNE of the test embeddings (paper Figure 8)"
    chosen = pick_embeddings(embeddings)
    if chosen is None:
        rep.section("tsne", title, note("No test embeddings given to the report."))
        return
    png, caption = tsne_figure(chosen)
    key = run_key(chosen.parent)
    rep.section("tsne", title, rep.figure(f"tsne_{key['dataset']}", png, caption))


def fidelity_section(rep: Report, ledger: Path | None = None) -> None:
    """The fidelity ledger's summary beside the result tables: what "reproduced" means here."""
    from hdml.fidelity import LEDGER, read_ledger
    from hdml.fidelity import summary as ledger_summary

    title = "Fidelity to the authors' code"
    path = ledger or LEDGER
    if not path.exists():
        rep.section("fidelity", title, note(f"No fidelity ledger at {path}."))
        return
    groups = ledger_summary(read_ledger(path))
    total = sum(len(v) for v in groups.values())
    rows = [[status, str(len(elements)), "; ".join(elements) or DASH] for status, elements in groups.items()]
    table = simple_table("fidelity", f"Fidelity ledger: {total} elements (docs/fidelity.md)",
                         ["Status", "Elements", "Which"], rows,
                         note="match: computed as the authors' TensorFlow code (github.com/wzzheng/HDML) computes "
                              "it; documented difference: a deliberate departure, argued in the ledger; follows "
                              "paper: where paper and code disagree, the default takes the paper's value. Each "
                              "row of the ledger cites the authors' file and line and the test that pins it.")
    write_text(rep.out_dir / "tables" / "fidelity.md", table.markdown())
    rep.section("fidelity", title, rep.table(table))


def protocol_section(rep: Report, summ: pd.DataFrame, paper: pd.DataFrame, datasets: list[str]) -> None:
    """Where the authors' code and the paper's text disagree: both protocols, side by side."""
    title = "Code protocol vs paper protocol"
    last = summ[~summ.metric.str.startswith(SELECTED)]
    alt = last[last.variant == PROTOCOL_VARIANT]
    if alt.empty:
        rep.section("protocol", title, note(f"No {PROTOCOL_VARIANT} variant in these results."))
        return
    rows = []
    for dataset in datasets:
        for method in alt[alt.dataset == dataset].method.unique():
            mine = last[(last.dataset == dataset) & (last.method == method)]
            code = {r.metric: r for r in mine[mine.variant == "default"].itertuples()}
            other = {r.metric: r for r in mine[mine.variant == PROTOCOL_VARIANT].itertuples()}
            for m in metric_order(set(code) | set(other)):
                c, o = code.get(m), other.get(m)
                ref = paper[(paper.dataset == dataset) & (paper.method == display(method)) & (paper.metric == m)]
                rows.append([dataset, display(method), metric_label(m),
                             f"{fmt_mean_ci(c.mean, c.ci)} (n={c.n})" if c else "not run",
                             f"{fmt_mean_ci(o.mean, o.ci)} (n={o.n})" if o else "not run",
                             fmt_diff(100 * (o.mean - c.mean)) if c and o else DASH,
                             f"{ref.value.iloc[0]:.1f}" if len(ref) else DASH])
    table = simple_table("protocol", "Code protocol (default) vs paper protocol, last checkpoint",
                         ["Dataset", "Method", "Metric", "code", "paper protocol", "Δ (paper − code)",
                          "paper reports"], rows, stub=3,
                         note="Mean ± 95% CI over seeds, in %; Δ in points. The protocols differ in the "
                              "places the method spec marks [differs] (J_avg, J_gen, learning rates, ...).")
    write_text(rep.out_dir / "tables" / "protocol.md", table.markdown())
    rep.section("protocol", title, rep.table(table))


def other_variants_section(rep: Report, summ: pd.DataFrame) -> None:
    known = summ.variant.isin(["default", PROTOCOL_VARIANT, *ABLATIONS]) | \
        summ.variant.str.startswith(tuple(f"{p}=" for p in SWEEPS))
    rest = summ[~known & ~summ.metric.str.startswith(SELECTED)]
    if rest.empty:
        return
    rest = rest.assign(method=rest.method.map(display))
    table = summary_table(rest, "variants", "Other variants, last checkpoint", ["dataset", "method", "variant"],
                          ["Dataset", "Method", "Variant"], "Mean ± 95% CI over seeds, in %.")
    write_text(rep.out_dir / "tables" / "variants.md", table.markdown())
    rep.section("variants", "Other variants", rep.table(table))


def hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return DASH
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def costs_section(rep: Report, costs: pd.DataFrame | None) -> None:
    title = "Costs: wall time and peak memory"
    if costs is None or costs.empty:
        rep.section("costs", title, note("No benchmark records in these results."))
        return
    rows = []
    datasets = dataset_sort(costs.dataset)
    groups = costs.groupby(["dataset", "method", "variant", "stage"], sort=False)
    for (dataset, method, variant, stage), g in sorted(
            groups, key=lambda kv: (datasets.index(kv[0][0]), display(kv[0][1]), kv[0][2] != "default", kv[0][2],
                                    kv[0][3] != "train")):
        rows.append([dataset, display(method), variant, stage, str(len(g)), hms(g.seconds.mean()),
                     hms(g.seconds.max()), fmt_mb(g.max_rss_mb.mean()), fmt_mb(g.max_rss_mb.max())])
    total = costs.seconds.sum() / 3600
    table = simple_table("costs", "Cost per run (from Snakemake benchmarks)",
                         ["Dataset", "Method", "Variant", "Stage", "runs", "wall mean", "wall max",
                          "peak RSS mean (MB)", "peak RSS max (MB)"], rows, stub=4,
                         note=f"Wall time h:mm:ss per run; peak resident memory of the job's processes (host "
                              f"memory, not GPU memory). Total wall time of all these jobs: {total:.2f} h.")
    write_text(rep.out_dir / "tables" / "costs.md", table.markdown())
    rep.section("costs", title, rep.table(table))


def fmt_mb(x: float) -> str:
    return DASH if not np.isfinite(x) else f"{x:.0f}"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hdml-repro report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1600px; margin: 1.5em auto; padding: 0 1em; color: #222; }}
h2 {{ border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }}
h3 {{ font-size: 1em; margin-bottom: 0.3em; }}
table.results {{ border-collapse: collapse; font-size: 0.8em; margin: 0.3em 0; }}
table.results th, table.results td {{ padding: 0.25em 0.35em; border-bottom: 1px solid #ddd; text-align: right;
  white-space: nowrap; }}
table.results th {{ background: #f3f3f3; text-align: center; }}
table.results th.sub {{ font-weight: normal; font-style: italic; }}
table.results td.stub {{ text-align: left; }}
div.scroll {{ overflow-x: auto; }}
table.results td.gs, table.results th.group {{ border-left: 1px solid #bbb; }}
td.best {{ color: #c00000; }}
td.bold {{ font-weight: bold; }}
td.muted {{ color: #888; }}
p.note {{ font-size: 0.8em; color: #555; margin-top: 0.2em; }}
p.missing {{ font-style: italic; color: #777; }}
figure {{ margin: 1em 0; }}
figure img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #444; }}
nav li {{ margin: 0.1em 0; }}
</style></head><body>
<h1>Hardness-Aware Deep Metric Learning (Zheng et al., CVPR 2019): reproduction report</h1>
{intro}
<nav><ul>{toc}</ul></nav>
{body}
</body></html>
"""
