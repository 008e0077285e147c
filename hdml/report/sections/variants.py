"""The variants no other section shows, each with its seeds' interval and no test."""
from __future__ import annotations

from hdml.core.io import write_text
from hdml.report.conclude import paragraph
from hdml.report.inputs import SWEEPS, Inputs
from hdml.report.names import display
from hdml.report.page import Report
from hdml.report.rows import SELECTED
from hdml.report.sections import register_section
from hdml.report.sections.ablation import ABLATIONS
from hdml.report.settings import DEFAULT, changing, of
from hdml.report.table import summary_table


@register_section(order=90)
def other_variants_section(rep: Report, data: Inputs) -> None:
    summ = data.summ
    shown_above = {key for setting in ("protocol", *SWEEPS, *ABLATIONS) for key in changing(data.runs, setting)}
    known = (summ.variant == DEFAULT) | of(summ, shown_above)
    rest = summ[~known & ~summ.metric.str.startswith((SELECTED, "separated:"))]  # fold models: realitycheck.py
    if rest.empty:
        return
    rest = rest.assign(method=rest.method.map(display))
    table = summary_table(rest, "variants", "Other variants, last checkpoint", ["dataset", "method", "variant"],
                          ["Dataset", "Method", "Variant"], "Mean ± 95% CI over seeds, in %.")
    write_text(rep.out_dir / "tables" / "variants.md", table.markdown())
    count = rest.groupby(["dataset", "method", "variant"]).ngroups
    rep.section("variants", "Other variants", rep.table(table) + paragraph(
        f"{count} variant{'s' if count != 1 else ''} outside the sections above, each with its seeds' interval "
        "and no test against the default: these rows claim no difference."))
