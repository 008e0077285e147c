"""Wall time and peak memory per run, from Snakemake's benchmark records."""
from __future__ import annotations

import numpy as np

from hdml.core import reference
from hdml.core.io import write_text
from hdml.report.conclude import paragraph
from hdml.report.inputs import Inputs
from hdml.report.names import dataset_sort, display
from hdml.report.page import Report, note
from hdml.report.sections import register_section
from hdml.report.table import DASH, simple_table


def hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return DASH
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@register_section(order=100)
def costs_section(rep: Report, data: Inputs) -> None:
    costs = data.costs
    title = "Costs: wall time and peak memory"
    if costs is None or costs.empty:
        rep.section("costs", title, note("No benchmark records in these results."))
        return
    rows = []
    datasets = dataset_sort(costs.dataset)
    rss = costs.max_rss_mb.where(costs.max_rss_mb >= MIN_RSS_MB)  # below: Snakemake sampled the shell only
    artefacts = int((costs.max_rss_mb < MIN_RSS_MB).sum())
    costs = costs.assign(max_rss_mb=rss)
    groups = costs.groupby(["dataset", "method", "variant", "stage"], sort=False)
    for (dataset, method, variant, stage), g in sorted(
            groups, key=lambda kv: (datasets.index(kv[0][0]), display(kv[0][1]), kv[0][2] != "default", kv[0][2],
                                    kv[0][3] != "train")):
        rows.append([dataset, display(method), variant, stage, str(len(g)), hms(g.seconds.mean()),
                     hms(g.seconds.max()), fmt_mb(g.max_rss_mb.mean()), fmt_mb(g.max_rss_mb.max())])
    total = costs.seconds.sum() / 3600
    dropped = (f" {artefacts} job(s) recorded a peak RSS under {MIN_RSS_MB} MB, less than a Python process that "
               "imports numpy holds: Snakemake's benchmark samples memory every few seconds and, for a job that "
               "ends sooner, saw only the shell that starts it. Those are shown as —, not measured."
               if artefacts else "")
    table = simple_table("costs", "Cost per run (from Snakemake benchmarks)",
                         ["Dataset", "Method", "Variant", "Stage", "runs", "wall mean", "wall max",
                          "peak RSS mean (MB)", "peak RSS max (MB)"], rows, stub=4,
                         note=f"Wall time h:mm:ss per run; peak resident memory of the job's processes (host "
                              f"memory, not GPU memory). Total wall time of all these jobs: {total:.2f} h.{dropped}")
    write_text(rep.out_dir / "tables" / "costs.md", table.markdown())
    by_stage = costs.groupby("stage").seconds.sum() / 3600
    train = costs[(costs.stage == "train") & (costs.method != reference.NAME)].groupby("method").seconds.mean()
    sentence = (f"The jobs here took {total:.2f} h of wall time in all ("
                + ", ".join(f"{stage} {h:.2f} h" for stage, h in by_stage.items()) + ")"
                + (f"; a training run took {hms(train.min())} ({display(train.idxmin())}) to {hms(train.max())} "
                   f"({display(train.idxmax())}) on average." if len(train) else "."))
    rep.section("costs", title, rep.table(table) + "\n" + paragraph(sentence))


MIN_RSS_MB = 20  # a Python job that imports numpy holds more; a smaller peak is a sampling artefact


def fmt_mb(x: float) -> str:
    return DASH if not np.isfinite(x) else f"{x:.0f}"
