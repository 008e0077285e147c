"""The HTML report: per-dataset tables (ours beside the paper's), learning curves, costs.

Everything is inlined (figures as base64 PNG) so `report.html` is one self-contained file;
the same tables are written as Markdown under `tables/` and figures as PNG under `figures/`.
"""
from __future__ import annotations

import base64
import html
import io
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hdml.io import write_text, write_with  # noqa: E402

DISPLAY = {
    "contrastive": "Contrastive", "triplet": "Triplet", "semihard": "Triplet hard", "npair": "N-pair",
    "lifted": "Lifted", "angular": "Angular", "hdml-triplet": "HDML (Triplet)", "hdml-npair": "HDML (N-pair)",
}
DATASET_TITLES = {"digits": "Digits (embedded demo)", "cub200": "CUB-200-2011 (Table 1)",
                  "cars196": "Cars196 (Table 2)", "sop": "Stanford Online Products (Table 3)"}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def paper_table() -> pd.DataFrame:
    with resources.files("hdml").joinpath("data/paper_tables.csv").open() as fh:
        return pd.read_csv(fh)


def ci95(values: np.ndarray) -> float:
    """Half-width of the Student-t 95% interval of the mean (0 for a single seed)."""
    n = len(values)
    if n < 2:
        return 0.0
    return float(T95.get(n - 1, 1.96) * values.std(ddof=1) / np.sqrt(n))


def summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95% CI and seed count per (dataset, method, variant, metric), in percent."""
    g = metrics.groupby(["dataset", "method", "variant", "metric"])["value"]
    out = g.agg(mean="mean", n="count").reset_index()
    out["ci"] = g.apply(lambda v: ci95(v.to_numpy())).to_numpy()
    out[["mean", "ci"]] *= 100
    return out


def metric_order(names: list[str]) -> list[str]:
    def key(m: str) -> tuple[int, int]:
        if m.startswith("recall@"):
            return (2, int(m.split("@")[1]))
        return ({"nmi": 0, "f1": 1, "map@r": 3, "r_precision": 4}.get(m, 5), 0)

    return sorted(names, key=key)


def dataset_table(summ: pd.DataFrame, paper: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """One row per method (variant default): 'ours ± CI (paper, Δ)' per metric."""
    ours = summ[(summ.dataset == dataset) & (summ.variant == "default") & ~summ.metric.str.startswith("selected:")]
    cols = metric_order(list(ours.metric.unique()))
    rows = []
    for method, group in ours.groupby("method", sort=False):
        label = DISPLAY.get(method, method)
        row = {"method": label, "seeds": int(group.n.max())}
        for m in cols:
            hit = group[group.metric == m]
            cell = f"{hit['mean'].iloc[0]:.1f} ± {hit['ci'].iloc[0]:.1f}" if len(hit) else "—"
            ref = paper[(paper.dataset == dataset) & (paper.method == label) & (paper.metric == m)]
            if len(ref):
                cell += f" (paper {ref.value.iloc[0]:.1f}, Δ {hit['mean'].iloc[0] - ref.value.iloc[0]:+.1f})"
            row[m] = cell
        rows.append(row)
    return pd.DataFrame(rows)


def figure_png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves_figure(curves: pd.DataFrame, dataset: str) -> bytes:
    data = curves[(curves.dataset == dataset) & (curves.variant == "default")]
    panels = [m for m in ("nmi", "f1", "recall@1") if m in set(data.metric)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        sub = data[data.metric == metric]
        for method, g in sub.groupby("method"):
            mean = g.groupby("step")["value"].mean() * 100
            ax.plot(mean.index, mean.values, marker="o", ms=3, label=DISPLAY.get(method, method))
        ax.set_title(metric.upper() if metric != "recall@1" else "Recall@1")
        ax.set_xlabel("step")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)}: learning curves (mean over seeds)")
    return figure_png(fig)


def render(metrics_csv: Path, curves_csv: Path, out_dir: Path) -> Path:
    metrics = pd.read_csv(metrics_csv)
    curves = pd.read_csv(curves_csv)
    summ = summary(metrics)
    paper = paper_table()
    sections = []
    for dataset in metrics.dataset.unique():
        table = dataset_table(summ, paper, dataset)
        write_text(out_dir / "tables" / f"{dataset}.md", table.to_markdown(index=False) + "\n")
        png = curves_figure(curves, dataset)
        write_with(out_dir / "figures" / f"curves_{dataset}.png", lambda p, b=png: p.write_bytes(b))
        sections.append(
            f"<h2>{html.escape(DATASET_TITLES.get(dataset, dataset))}</h2>\n"
            f"<p>Last checkpoint, mean ± 95% CI over seeds, in %.</p>\n"
            + table.to_html(index=False, classes="results", border=0)
            + f'\n<figure><img alt="learning curves {dataset}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}"><figcaption>Learning curves, {html.escape(dataset)}'
            f"</figcaption></figure>"
        )
    page = PAGE.format(body="\n".join(sections))
    out = out_dir / "report.html"
    write_text(out, page)
    return out


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hdml-repro report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table.results {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
table.results th, table.results td {{ padding: 0.3em 0.6em; border-bottom: 1px solid #ddd; text-align: left; }}
figure img {{ max-width: 100%; }}
</style></head><body>
<h1>Hardness-Aware Deep Metric Learning: reproduction report</h1>
{body}
</body></html>
"""
