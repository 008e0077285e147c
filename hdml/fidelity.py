"""The fidelity ledger (hdml/fidelity.md): one row per element of HDML and its baselines, with
the paper's statement, the authors' code, this suite, the test that pins it, and a status.

The ledger is package data, its only copy, so that the report of an installed (non-editable)
hdml renders it too; people read it at hdml/fidelity.md.

The report renders its summary (how many elements match the authors' code, differ by a
documented choice, or follow the paper) beside the result tables, so a reader knows what
"reproduced" means; this module reads it and checks every row has a known status.
"""
from __future__ import annotations

from pathlib import Path

LEDGER = Path(__file__).resolve().parent / "fidelity.md"
STATUSES = ("match", "documented difference", "follows paper")


def read_ledger(path: Path = LEDGER) -> list[tuple[str, str]]:
    """(element, status) of every row of the ledger's table, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("| element |"))
    except StopIteration:
        raise ValueError(f"{path}: no ledger table (a header row starting '| element |')") from None
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    if header[-1] != "status":
        raise ValueError(f"{path}:{start + 1}: the ledger's last column must be 'status', got {header[-1]!r}")
    rows = []
    for number, line in enumerate(lines[start + 2:], start + 3):
        if line.startswith("<!--"):
            continue
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"{path}:{number}: {len(cells)} cells, the header has {len(header)}")
        if cells[-1] not in STATUSES:
            raise ValueError(f"{path}:{number}: status {cells[-1]!r} of {cells[0]!r} is not one of {list(STATUSES)}")
        rows.append((cells[0], cells[-1]))
    if not rows:
        raise ValueError(f"{path}: the ledger table has no rows")
    return rows


def summary(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Elements per status, every status present (possibly empty), in STATUSES order."""
    return {s: [e for e, status in rows if status == s] for s in STATUSES}
