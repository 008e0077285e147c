"""The fidelity ledger's summary (hdml/fidelity.md) beside the result tables."""
from __future__ import annotations

from pathlib import Path

from hdml.core.io import write_text
from hdml.fidelity import LEDGER, read_ledger
from hdml.fidelity import proofs as ledger_proofs
from hdml.fidelity import summary as ledger_summary
from hdml.report.conclude import paragraph
from hdml.report.inputs import Inputs
from hdml.report.page import Report, note
from hdml.report.sections import register_section
from hdml.report.table import DASH, simple_table


@register_section(order=20)
def fidelity_section(rep: Report, data: Inputs | None = None, ledger: Path | None = None) -> None:
    """The fidelity ledger's summary beside the result tables: what "reproduced" means here."""

    title = "Fidelity to the authors' code"
    path = ledger or LEDGER
    if not path.exists():
        rep.section("fidelity", title, note(f"No fidelity ledger at {path}."))
        return
    ledger_rows = read_ledger(path)
    groups, executed = ledger_summary(ledger_rows), set(ledger_proofs(ledger_rows)["executed"])
    total = sum(len(v) for v in groups.values())
    rows = [[status, str(len(elements)), str(len(executed.intersection(elements))), "; ".join(elements) or DASH]
            for status, elements in groups.items()]
    table = simple_table("fidelity", f"Fidelity ledger: {total} elements (hdml/fidelity.md), {len(executed)} executed "
                                     f"beside the authors' code, {total - len(executed)} read",
                         ["Status", "Elements", "Executed", "Which"], rows,
                         note="match: computed as the authors' TensorFlow code (github.com/wzzheng/HDML) computes "
                              "it; documented difference: a deliberate departure, argued in the ledger; follows "
                              "paper: where paper and code disagree, the default takes the paper's value. Executed: "
                              "the authors' code was run beside the suite's and agreed (bench/authors*.py); the "
                              "others were established by reading it. Each row of the ledger cites the authors' "
                              "file and line and the test that pins it.")
    write_text(rep.out_dir / "tables" / "fidelity.md", table.markdown())
    counts = ", ".join(f"{len(elements)} {status}" for status, elements in groups.items())
    rep.section("fidelity", title, rep.table(table) + "\n" + paragraph(
        f"Of the ledger's {total} elements: {counts}; {len(executed)} of them executed beside the authors' code, "
        f"the others read; what differs from the authors' code is listed there, each with its test."))
