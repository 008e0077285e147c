"""The report: the paper's Tables 1-3 beside ours, Figures 4-8 redrawn from our runs, costs.

Ours are last-checkpoint numbers, mean and Student-t 95% CI over seeds; an interval is shown
only from intervals.MIN_SEEDS seeds on, fewer are marked "(n=2)" and drawn seed by seed. The
authors' code kept the checkpoint with the best *test* NMI; that number is shown in its own
table, labelled as optimistic, never mixed into the main one. `report.html` is one
self-contained file (figures inlined as base64 PNG, each linked to its SVG copy); tables are
also written as Markdown and LaTeX under `tables/`, figures as PNG and SVG under `figures/`
(drawn by hdml/figures.py). A section without data in the results is replaced by a short note.
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hdml.aggregate import COSTS_COLUMNS, CURVES_COLUMNS, METRICS_COLUMNS, RUNS_COLUMNS, run_key  # noqa: E402
from hdml.figures import Series, curve_grid, encode, loss_grid, recall_grid, sweep_figure  # noqa: E402
from hdml.intervals import MIN_SEEDS, shown, summary  # noqa: E402
from hdml.io import write_text, write_with  # noqa: E402
from hdml.selection import selection_note  # noqa: E402

DISPLAY = {
    "contrastive": "Contrastive", "ddml": "DDML", "lifted": "Lifted", "angular": "Angular",
    "triplet": "Triplet", "semihard": "Triplet hard", "triplet-hard": "Triplet hard",
    "daml-triplet": "DAML (Triplet)", "hdml-triplet": "HDML (Triplet)",
    "npair": "N-pair", "daml-npair": "DAML (N-pair)", "hdml-npair": "HDML (N-pair)",
    "multisimilarity": "Multi-Similarity",  # beyond the paper (issue 20): no row in Tables 1-3
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


# ---------------------------------------------------------------- formatting

def fmt_pct(x: float) -> str:
    return DASH if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def fmt_mean_ci(mean: float, ci: float, n: int) -> str:
    """'62.6 ± 0.8' in percent; from fewer than MIN_SEEDS seeds the mean marked '(n=2)' instead."""
    if shown(n) and np.isfinite(ci):
        return f"{100 * mean:.1f} ± {100 * ci:.1f}"
    return f"{fmt_pct(mean)} (n={n})"


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
    marks: bool = False  # whether the note explains the paper's marks (best, bold)

    def caption(self, fmt: str) -> str:
        """The note in words that fit the format: HTML shows the best cell in red, Markdown with †."""
        parts = [self.note.strip()] if self.note else []
        if self.marks:
            best = "Red" if fmt == "html" else "†"
            parts.append(f"{best}: best of the column; bold: HDML beats the same loss without HDML "
                         "(the paper's marks, applied to each column separately).")
        if any(re.fullmatch(r"\S+ \(n=\d+\)", c.text) for row in self.rows for c in row):
            parts.append(f"(n=k): the mean of k < {MIN_SEEDS} seeds, too few for a 95% interval, "
                         "so none is given.")
        return " ".join(parts)

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
        if self.caption("markdown"):
            lines += ["", self.caption("markdown")]
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
                ours_cells.append(Cell(fmt_mean_ci(hit.mean, hit.ci, hit.n) if hit else DASH))
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
        beyond = [label for label in labels_of if label not in set(ref.method)]
        if beyond:
            table.note += f"Paper {DASH}: beyond the paper, no published number ({', '.join(beyond)}). "
    else:
        table.note += "No published numbers for this dataset. "
    table.marks = True
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
        cells += [fmt_mean_ci(by_metric[m].mean, by_metric[m].ci, by_metric[m].n) if m in by_metric else DASH
                  for m in metrics]
        rows.append(cells)
    return simple_table(key, title, [*stub_names, "seeds", *map(metric_label, metrics)], rows,
                        stub=len(stub_names), note=note)


# ---------------------------------------------------------------- figures

def tsne_figure(path: Path, max_points: int = TSNE_MAX_POINTS) -> tuple[plt.Figure, str]:
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
        ax.legend(title="class", fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    key = run_key(path.parent)
    title = (f"{DATASET_TITLES.get(key['dataset'], key['dataset'])}: {display(key['method'])}, "
             f"{key['variant']}, seed {key['seed']}")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    caption = (f"Barnes-Hut t-SNE of {len(z)} test embeddings ({len(classes)} classes"
               f"{', random subsample' if subsampled else ''}) of {title}; one colour per class.")
    return fig, caption


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


LOSS_SMOOTH = 40  # a running mean over 1/40 of the steps: a readable line at 200 or 8,000 steps
LOSS_POINTS = 400  # per run, at most: keeps the SVGs small
# HDML's own terms in losses.csv (beside J_m), as the spec names them; the rest is bookkeeping.
HDML_TERMS = {"j_syn": "J_syn (synthetics)", "j_gen": "J_gen (generator)", "j_recon": "J_recon",
              "j_soft": "J_soft", "j_cls": "J_cls (classifier)", "lambda0": "λ0 (hardness)"}


def read_losses(paths: list[Path]) -> pd.DataFrame | None:
    """Losses per step of each run (long: dataset, method, variant, seed, step, metric, value),
    each smoothed by a running mean over 1/LOSS_SMOOTH of the run's steps: `j_m`, the metric loss
    (a baseline's `loss`), and HDML's HDML_TERMS."""
    frames = []
    for path in map(Path, paths):
        key = run_key(path.parent)
        table = pd.read_csv(path)
        column = "j_m" if "j_m" in table.columns else "loss"
        if not {"step", column} <= set(table.columns) or table.empty:
            raise ValueError(f"{path}: needs rows and the columns step and loss (or j_m); "
                             f"got {','.join(map(str, table.columns))}")
        table = table.sort_values("step")
        terms = {column: "j_m", **{t: t for t in HDML_TERMS if t in table.columns}}
        smooth = table[list(terms)].rolling(max(1, round(len(table) / LOSS_SMOOTH)), min_periods=1).mean()
        smooth = smooth.rename(columns=terms).assign(step=table.step.to_numpy())
        smooth = smooth.iloc[::math.ceil(len(table) / LOSS_POINTS)]
        frames.append(smooth.melt(id_vars="step", var_name="metric", value_name="value").assign(**key))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["variant"] = out.variant.astype(str)
    return out


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

    def figure(self, name: str, fig: plt.Figure, caption: str) -> str:
        """Save `fig` as figures/NAME.png and .svg; inline the PNG, link both files."""
        files = encode(fig)
        for fmt, data in files.items():
            write_with(self.out_dir / "figures" / f"{name}.{fmt}", lambda p, d=data: p.write_bytes(d))
        links = " ".join(f'<a href="figures/{name}.{fmt}">{fmt.upper()}</a>' for fmt in files)
        return (f'<figure id="fig-{name}"><img alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{base64.b64encode(files["png"]).decode()}">'
                f'<figcaption>{html.escape(caption)} <span class="files">[{links}]</span></figcaption></figure>')

    def table(self, table: Table) -> str:
        text = table.caption("html")
        note = f'<p class="note">{html.escape(text)}</p>' if text else ""
        return f'<h3>{html.escape(table.title)}</h3>\n{table.html()}\n{note}'


def note(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def render(metrics_csv: Path, out_dir: Path, curves_csv: Path | None = None, runs_csv: Path | None = None,
           costs_csv: Path | None = None, embeddings: list[Path] | None = None,
           losses: list[Path] | None = None) -> Path:
    """Write report.html, tables/ and figures/ under `out_dir`; returns the HTML path. `losses`:
    the runs' losses.csv (in their run directories), for the training-loss figures."""
    out_dir = Path(out_dir)
    metrics = read_metrics(Path(metrics_csv))
    curves = read_table(Path(curves_csv), CURVES_COLUMNS) if curves_csv else None
    if curves is not None:
        curves["variant"] = curves.variant.astype(str)
    runs = read_table(Path(runs_csv), RUNS_COLUMNS) if runs_csv else None
    if runs is not None:
        check_variant_settings(runs, Path(runs_csv))
    costs = read_table(Path(costs_csv), COSTS_COLUMNS) if costs_csv else None
    loss_table = read_losses(losses or [])
    summ = summary(metrics, ["dataset", "method", "variant", "metric"])
    paper = paper_table()
    for sub in ("figures", "tables"):  # both exist even when empty: Snakemake directory() outputs
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir)
    datasets = dataset_sort(metrics.dataset)

    main_tables(rep, summ, metrics, paper, datasets, curves, loss_table)
    fidelity_section(rep)
    ablation_section(rep, summ, paper, curves, datasets)
    for param in SWEEPS:
        sweep_section(rep, summ, metrics, runs, datasets, param)
    tsne_section(rep, [Path(p) for p in embeddings or []])
    protocol_section(rep, summ, paper, datasets)
    other_variants_section(rep, summ)
    costs_section(rep, costs)

    toc = "".join(f'<li><a href="#{k}">{html.escape(t)}</a></li>' for k, t in rep.toc)
    n_runs = metrics.groupby(["dataset", "method", "variant", "seed"]).ngroups
    intro = (f"<p>{n_runs} runs over {len(datasets)} dataset(s): {', '.join(datasets)}. "
             "Our numbers are from the <b>last checkpoint</b>: mean ± 95% confidence interval over seeds "
             f"(Student t, n − 1 degrees of freedom), in %, given from {MIN_SEEDS} seeds on: fewer seeds give the "
             "mean marked (n=2) in tables, and each seed, with no band, in figures. The authors' code kept the "
             "checkpoint with the best <i>test</i> NMI; that number is reported separately, labelled as "
             "test-selected and optimistic. “Triplet hard” is the paper's name for its semi-hard triplet "
             "baseline (method <code>semihard</code> here: FaceNet's semi-hard mining, the closest negative "
             "farther from the anchor than the positive).</p>")
    intro += selection_note(runs)  # runs reporting another checkpoint than the last, labelled
    page = PAGE.format(intro=intro, toc=toc, body="\n".join(rep.sections))
    out = out_dir / "report.html"
    write_text(out, page)
    return out


SEEDS_KEY = (f"Thick line: the mean over seeds; thin lines: each seed; shaded: the 95% CI, drawn only from "
             f"{MIN_SEEDS} seeds on (a panel with fewer says so); grey: the other panels' means.")
CURVE_KEY = (f"{SEEDS_KEY} Dashed: an HDML method's base loss; dotted: the paper's value after its 8,000 steps, "
             "where it has one.")
POINTS_KEY = (f"Line: the mean over seeds; points: each seed; shaded: the 95% CI, drawn only from {MIN_SEEDS} "
              "seeds on.")
SWEEP_KEY = (f"Line: the mean over seeds; points: each seed; error bars: the 95% CI, drawn only from {MIN_SEEDS} "
             "seeds on (a legend entry says where there are fewer); the metrics sit side by side around each value.")
LOSS_SMOOTHING = f"each seed smoothed by a running mean over 1/{LOSS_SMOOTH} of its steps"


def method_order(methods, paper: pd.DataFrame) -> list[str]:
    """The paper's row order (Contrastive ... HDML (N-pair)), then any other method by name."""
    known = list(dict.fromkeys(paper.method))
    return sorted(set(methods), key=lambda m: (known.index(display(m)) if display(m) in known else len(known),
                                                display(m).lower()))


def paper_values(paper: pd.DataFrame, dataset: str, method: str) -> dict[str, float]:
    """{metric: %} of `method` in the paper's table for `dataset`; empty where it has none."""
    mine = paper[(paper.dataset == dataset) & (paper.method == display(method))]
    return {r.metric: float(r.value) for r in mine.itertuples()}


def method_series(methods: list[str], paper: pd.DataFrame, dataset: str) -> list[Series]:
    """One panel per method: HDML (X) beside X, and the paper's numbers where it has them."""
    out = []
    for m in methods:
        base = m.removeprefix("hdml-") if m.startswith("hdml-") else None
        out.append(Series(m, "default", display(m), display(base) if base in methods else None,
                          paper_values(paper, dataset, m)))
    return out


def curve_metrics(curves: pd.DataFrame) -> list[tuple[str, str]]:
    return [(m, metric_label(m)) for m in CURVE_METRICS if m in set(curves.metric)]


def recall_points(metrics: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per-seed last-checkpoint Recall@K of the default variant, with K as a number."""
    r = metrics[(metrics.dataset == dataset) & (metrics.variant == "default")
                & metrics.metric.str.fullmatch(r"recall@\d+")]
    return r.assign(k=r.metric.str.removeprefix("recall@").astype(int))


def main_tables(rep: Report, summ: pd.DataFrame, metrics: pd.DataFrame, paper: pd.DataFrame, datasets: list[str],
                curves: pd.DataFrame | None, losses: pd.DataFrame | None) -> None:
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
        name = DATASET_TITLES.get(dataset, dataset)
        data = None if curves is None else curves[(curves.dataset == dataset) & (curves.variant == "default")]
        methods = method_order(metrics[(metrics.dataset == dataset) & (metrics.variant == "default")].method, paper)
        series = method_series(methods, paper, dataset)
        if data is not None and len(data) and set(CURVE_METRICS) & set(data.metric):
            fig = curve_grid(data, [s for s in series if s.method in set(data.method)], curve_metrics(data),
                             f"{name}: learning curves, default variant")
            parts.append(rep.figure(f"curves_{dataset}", fig, f"Learning curves on {dataset}, one row per method "
                                    f"(default variant). {CURVE_KEY}"))
        else:
            parts.append(note("No learning curves for this dataset in these results."))
        mine = None if losses is None else losses[(losses.dataset == dataset) & (losses.variant == "default")]
        if mine is not None and len(mine):
            j_m = mine[mine.metric == "j_m"]
            fig = loss_grid(j_m, [s for s in series if s.method in set(j_m.method)], "J_m",
                            f"{name}: training loss J_m, default variant")
            parts.append(rep.figure(f"losses_{dataset}", fig, f"Training loss on {dataset} (losses.csv), one panel "
                                    f"per method: the metric loss J_m with the weight penalty, {LOSS_SMOOTHING}. "
                                    "HDML's J_m is the same loss as its base method's (dashed), on real samples."))
            terms = [(t, label) for t, label in HDML_TERMS.items() if t in set(mine.metric)]
            with_terms = set(mine[mine.metric.isin(HDML_TERMS)].method)
            hdml = [replace(s, base=None, paper={}) for s in series if s.method in with_terms]
            if hdml:
                fig = curve_grid(mine, hdml, terms, f"{name}: HDML's own losses, default variant", percent=False)
                parts.append(rep.figure(f"losses-hdml_{dataset}", fig, f"HDML's own terms on {dataset} "
                                        f"(losses.csv), one row per HDML method, {LOSS_SMOOTHING}: J_syn, the metric "
                                        "loss on the synthetic samples; J_gen, the generator's (J_recon and J_soft "
                                        "combined as the protocol says); J_cls, the classifier's; λ0, the hardness. "
                                        f"{SEEDS_KEY}"))
        else:
            parts.append(note("No training losses (losses.csv) for this dataset given to the report."))
        recall = recall_points(metrics, dataset)
        if len(recall):
            by_k = [replace(s, paper={int(m.split("@")[1]): v for m, v in s.paper.items() if m.startswith("recall@")})
                    for s in series if s.method in set(recall.method)]
            fig = recall_grid(recall, by_k, f"{name}: Recall@K against K, last checkpoint")
            paper_note = (f"Dotted: the paper's Table {PAPER_TABLE[dataset]}." if dataset in PAPER_TABLE
                          else "The paper has no numbers for this dataset.")
            parts.append(rep.figure(f"recall_{dataset}", fig, f"Recall@K against K on {dataset}, one panel per "
                                    f"method (last checkpoint, default variant). {POINTS_KEY} Grey: the other "
                                    f"panels' means. {paper_note}"))
        number = PAPER_TABLE.get(dataset)
        title = f"{DATASET_TITLES.get(dataset, dataset)}" + (f" (paper Table {number})" if number else "")
        rep.section(f"dataset-{dataset}", title, "\n".join(parts))


def ablation_section(rep: Report, summ: pd.DataFrame, paper: pd.DataFrame, curves: pd.DataFrame | None,
                     datasets: list[str]) -> None:
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
            base_label = f"{display(base)} (baseline)" if base else None
            lines = [Series(base, "default", base_label, paper=paper_values(paper, dataset, base))] if base else []
            lines.append(Series(method, "default", display(method), base_label, paper_values(paper, dataset, method)))
            lines += [Series(method, v, f"{display(method)} {label}", base_label) for v, label in ABLATIONS.items()]
            present = [s for s in lines if ((summ.dataset == dataset) & (summ.method == s.method)
                                            & (summ.variant == s.variant)).any()]
            name = f"{dataset}-{method}"
            data = None if curves is None else curves[(curves.dataset == dataset)]
            if data is not None and set(CURVE_METRICS) & set(data.metric):
                fig = curve_grid(data, present, curve_metrics(data),
                                 f"{DATASET_TITLES.get(dataset, dataset)}: ablation of {display(method)}")
                parts.append(rep.figure(f"ablation_{name}", fig,
                                        f"Learning curves of the ablation on {dataset}, one row per setting: NMI and "
                                        f"F1 (clustering, Figure 4), Recall@1 (retrieval, Figure 5). {CURVE_KEY}"))
            else:
                parts.append(note(f"No learning curves for the ablation on {dataset}."))
            last = pd.concat([summ[(summ.dataset == dataset) & (summ.method == s.method) & (summ.variant == s.variant)
                                   & ~summ.metric.str.startswith(SELECTED)].assign(setting=s.label)
                              for s in present])
            parts.append(rep.table(summary_table(last, f"ablation-{name}",
                                                 f"Ablation on {DATASET_TITLES.get(dataset, dataset)}: last checkpoint",
                                                 ["setting"], ["Setting"],
                                                 "Mean ± 95% CI over seeds, in %.")))
    rep.section("ablation", title, "\n".join(parts))


def sweep_panels(metrics) -> list[tuple[str, list[tuple[str, str]]]]:
    """Figures 6-7's two panels: clustering (NMI, F1) and retrieval (Recall@K)."""
    panels = [("Clustering", [(m, metric_label(m)) for m in ("nmi", "f1") if m in set(metrics)]),
              ("Retrieval", [(m, metric_label(m)) for m in metric_order(metrics) if m.startswith("recall@")])]
    return [(name, ms) for name, ms in panels if ms]


def sweep_section(rep: Report, summ: pd.DataFrame, metrics: pd.DataFrame, runs: pd.DataFrame | None,
                  datasets: list[str], param: str) -> None:
    """Figures 6-7 (alpha) and the fixed-lambda0 sweep: last-checkpoint metrics vs swept value.
    Table rows follow the swept value, the default at its alpha (after all values for lambda0,
    whose default adapts)."""
    prefix = f"{param}="
    title = ("Sweep of HDML's pulling factor α (paper Figures 6-7)" if param == "alpha"
             else "Sweep of a fixed hardness λ0, no adaptation (beyond the paper)")
    last = ~summ.metric.str.startswith(SELECTED)
    swept = summ[summ.variant.str.startswith(prefix) & last]
    if swept.empty:
        rep.section(f"sweep-{param}", title, note(f"No {prefix}<value> variants in these results."))
        return
    swept = swept.assign(x=[variant_value(v, param) for v in swept.variant])
    seeds = metrics[metrics.variant.str.startswith(prefix) & ~metrics.metric.str.startswith(SELECTED)]
    seeds = seeds.assign(x=[variant_value(v, param) for v in seeds.variant])
    parts = []
    if param == "alpha":
        parts.append("<p>α = 0 applies no hardness synthesis; the star is the default variant at its α.</p>")
    else:
        parts.append("<p>The dashed line is the default, adaptive λ = 1 − exp(−α / J_avg), its seeds and "
                     "interval at the right edge.</p>")
    for dataset in datasets:
        for method in swept[swept.dataset == dataset].method.unique():
            mine = (metrics.dataset == dataset) & (metrics.method == method) & ~metrics.metric.str.startswith(SELECTED)
            points = swept[(swept.dataset == dataset) & (swept.method == method)]
            default = summ[(summ.dataset == dataset) & (summ.method == method) & (summ.variant == "default") & last]
            x0 = default_alpha(runs, dataset, method) if param == "alpha" and len(default) else None
            label = (f"default (α = {x0:g})" if x0 is not None
                     else "default (adaptive)" if param == "lambda0" else "default")
            name = f"{dataset}-{method}"
            symbol = "α" if param == "alpha" else "λ0"
            fig = sweep_figure(seeds[(seeds.dataset == dataset) & (seeds.method == method)],
                               metrics[mine & (metrics.variant == "default")], sweep_panels(points.metric.unique()),
                               SWEEPS[param], x0, label.replace("α", symbol),
                               f"{DATASET_TITLES.get(dataset, dataset)}, {display(method)}: "
                               f"last checkpoint vs {SWEEPS[param]}")
            parts.append(rep.figure(f"sweep-{param}_{name}", fig,
                                    f"Last-checkpoint metrics of {display(method)} on {dataset} against "
                                    f"{SWEEPS[param]}. {SWEEP_KEY}"))
            rows = points.assign(setting=points.x.map(lambda v: f"{v:g}"))
            if len(default):
                rows = pd.concat([rows, default.assign(x=math.inf if x0 is None else x0, setting=label)])
            parts.append(rep.table(summary_table(rows.sort_values("x", kind="stable"), f"sweep-{param}-{name}",
                                                 f"{display(method)} on {DATASET_TITLES.get(dataset, dataset)}: "
                                                 f"{SWEEPS[param]}", ["setting"], [symbol],
                                                 "Last checkpoint, mean ± 95% CI over seeds, in %; rows by "
                                                 f"{symbol}.")))
    rep.section(f"sweep-{param}", title, "\n".join(parts))


def tsne_section(rep: Report, embeddings: list[Path]) -> None:
    title = "t-SNE of the test embeddings (paper Figure 8)"
    chosen = pick_embeddings(embeddings)
    if chosen is None:
        rep.section("tsne", title, note("No test embeddings given to the report."))
        return
    fig, caption = tsne_figure(chosen)
    key = run_key(chosen.parent)
    rep.section("tsne", title, rep.figure(f"tsne_{key['dataset']}", fig, caption))


def with_n(r) -> str:
    """A summary row as '56.0 ± 2.5 (n=3)': this table has no seeds column."""
    text = fmt_mean_ci(r.mean, r.ci, r.n)
    return text if text.endswith(")") else f"{text} (n={r.n})"


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
                             with_n(c) if c else "not run", with_n(o) if o else "not run",
                             fmt_diff(100 * (o.mean - c.mean)) if c and o else DASH,
                             f"{ref.value.iloc[0]:.1f}" if len(ref) else DASH])
    table = simple_table("protocol", "Code protocol (default) vs paper protocol, last checkpoint",
                         ["Dataset", "Method", "Metric", "code", "paper protocol", "Δ (paper − code)",
                          "paper reports"], rows, stub=3,
                         note="Mean ± 95% CI over seeds, in %; Δ in points. The protocols differ where the "
                              "authors' code and the paper disagree (J_avg, J_gen, learning rates, ...): the "
                              "fidelity ledger, docs/fidelity.md, lists each difference and which protocol follows "
                              "which source.")
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
figcaption span.files {{ white-space: nowrap; }}
nav li {{ margin: 0.1em 0; }}
</style></head><body>
<h1>Hardness-Aware Deep Metric Learning (Zheng et al., CVPR 2019): reproduction report</h1>
{intro}
<nav><ul>{toc}</ul></nav>
{body}
</body></html>
"""
