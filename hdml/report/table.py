"""The report's tables: cells with the paper's marks, and one table written three ways (HTML for
the page, Markdown and LaTeX under tables/); the number formats every table shares."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hdml.report.stats import MIN_SEEDS, shown

DASH = "—"


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


def hdml_base(label: str) -> str | None:
    """'HDML (N-pair)' -> 'N-pair': the row the paper's bold marks compare against."""
    found = re.fullmatch(r"HDML \((.+)\)", label)
    return found.group(1) if found else None


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
    tests: dict = field(default_factory=dict)  # the comparisons behind the marks (stats.PairedTest), by key

    def caption(self, fmt: str) -> str:
        """The note in words that fit the format: HTML shows the best cell in red, Markdown with †."""
        parts = [self.note.strip()] if self.note else []
        if self.marks:
            best = "Red" if fmt == "html" else "†"
            parts.append(f"{best}: best of the column; bold: HDML (X) above X (the paper's marks). In our columns "
                         "only where the seeds support them: the best row's paired (by seed) difference with every "
                         "other row, and HDML's with its base loss, exclude 0 after Holm's correction; in the paper's "
                         "columns, as the paper marks its published numbers.")
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


def paper_marks(cells: list[Cell], values: list[float], labels: list[str]) -> None:
    """The paper's marks on its published numbers, one column: red for the best, bold where HDML
    (X) is above X. Our own columns are marked on evidence instead (sections.results_table)."""
    finite = [v for v in values if np.isfinite(v)]
    if len(finite) < 2:  # nothing to compare with
        return
    best = max(finite)
    by_label = dict(zip(labels, values, strict=True))
    for cell, value, label in zip(cells, values, labels, strict=True):
        cell.best = bool(np.isfinite(value) and np.isclose(value, best))
        base = hdml_base(label)
        if base is not None and np.isfinite(value) and np.isfinite(by_label.get(base, np.nan)):
            cell.bold = bool(value > by_label[base])


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

