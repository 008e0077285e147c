"""The rows the authors'-code harness prints (bench/authors.py and its sections authors_schedule.py,
authors_eval.py): term, max |suite - authors|, tolerance, pass, note; one constructor, one table."""
from __future__ import annotations

from typing import Any


def row(term: str, diff: float, tolerance: float, note: str = "") -> dict[str, Any]:
    return {"term": term, "max_abs_diff": float(diff), "tolerance": tolerance, "passed": diff <= tolerance,
            "note": note}


def table(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["term"]) for r in rows)
    lines = [f"{'term':<{width}} | max |suite - authors| | tolerance | pass", "-" * (width + 45)]
    lines += [f"{r['term']:<{width}} | {r['max_abs_diff']:>20.3e} | {r['tolerance']:>9.2e} | "
              f"{'yes' if r['passed'] else 'NO'}" + (f"  ({r['note']})" if r.get("note") else "") for r in rows]
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]]) -> int:
    """Print the table; the exit status: 1 if any row failed."""
    print(table(rows))
    return 0 if all(r["passed"] for r in rows) else 1
