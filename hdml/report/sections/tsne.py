"""Figure 8: the t-SNE map of one run's test embeddings."""
from __future__ import annotations

import numpy as np

from hdml.eval.tsne import TsneMap
from hdml.report.conclude import paragraph
from hdml.report.figures import tsne_figure
from hdml.report.inputs import Inputs
from hdml.report.names import TSNE_PAPER_ROW, dataset_rank, display, paper_row
from hdml.report.page import Report, note
from hdml.report.sections import register_section
from hdml.report.table import DASH


def pick_tsne(maps: list[TsneMap]) -> TsneMap | None:
    """Figure 8's run among the maps given: HDML (N-pair), default, CUB first, lowest seed."""
    if not maps:
        return None

    def rank(m: TsneMap) -> tuple:
        k = m.key
        return (paper_row(k["method"]) != TSNE_PAPER_ROW, k["variant"] != "default",
                dataset_rank(k["dataset"])[0], k["seed"],
                k["dataset"], k["method"], k["variant"])

    return min(maps, key=rank)


@register_section(order=60)
def tsne_section(rep: Report, data: Inputs) -> None:
    title = "t-SNE of the test embeddings (paper Figure 8)"
    chosen = pick_tsne(list(data.tsne))
    if chosen is None:
        rep.section("tsne", title, note("No t-SNE map of test embeddings (hdml tsne) given to the report."))
        return
    fig, caption = tsne_figure(chosen)
    classes = len(np.unique(chosen.labels))
    rep.section("tsne", title, rep.figure(f"tsne_{chosen.key['dataset']}", fig, caption) + paragraph(
        f"A picture of one run ({display(chosen.key['method'])}, seed {chosen.key.get('seed', DASH)}): "
        f"{len(chosen.xy)} of its {chosen.n_test} test embeddings, {classes} classes; it shows which classes "
        "the embedding keeps apart, and supports no comparison between methods."))
