"""The fidelity ledger (hdml/fidelity.md): one row per element of HDML and its baselines, with
the paper's statement, the authors' code, this suite, the test that pins it, how it is proven
(`executed` beside the authors' code, or `read`) and a status.

The ledger is package data, its only copy, so that the report of an installed (non-editable)
hdml renders it too; people read it at hdml/fidelity.md.

The report renders its summary (how many elements match the authors' code, differ by a
documented choice, or follow the paper; how many were executed) beside the result tables, so a
reader knows what "reproduced" means; this module reads it, checks every row has a known proof
and status, and resolves its citations into the suite (`unresolved`), so that a renamed function
cannot leave the ledger pointing at nothing.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LEDGER = Path(__file__).resolve().parent / "fidelity.md"
STATUSES = ("match", "documented difference", "follows paper")
PROOFS = ("executed", "read")
SUITE_COLUMNS = ("suite, protocol code", "suite, protocol paper")
TEST_COLUMN = "test"
# A suite path in backquotes, with its symbol: `hdml/x.py::name`, `config/paper.yaml::a.b`
SUITE_PATH = r"(?:hdml|baselines|bench|config|workflow|tests)/[\w./-]+?\.(?:py|yaml)"
CITATION = re.compile(rf"`({SUITE_PATH})(?:::([^`\s]+))?(:\d[\d,-]*)?`")
TEST = re.compile(r"`(?:(tests/[\w/]+\.py))?(?:::(\w+)(?:\[[^\]]*\])?)?`")


@dataclass(frozen=True)
class Row:
    element: str
    proof: str
    status: str
    line: int
    cells: dict[str, str] = field(default_factory=dict, compare=False)


def read_ledger(path: Path = LEDGER) -> list[Row]:
    """Every row of the ledger's table, in order; an unknown proof or status is an error naming
    the line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("| element |"))
    except StopIteration:
        raise ValueError(f"{path}: no ledger table (a header row starting '| element |')") from None
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    if header[-2:] != ["proof", "status"]:
        raise ValueError(f"{path}:{start + 1}: the ledger's last columns must be 'proof', 'status', got {header[-2:]}")
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
        if cells[-2] not in PROOFS:
            raise ValueError(f"{path}:{number}: proof {cells[-2]!r} of {cells[0]!r} is not one of {list(PROOFS)}")
        rows.append(Row(cells[0], cells[-2], cells[-1], number, dict(zip(header, cells, strict=True))))
    if not rows:
        raise ValueError(f"{path}: the ledger table has no rows")
    return rows


def summary(rows: list[Row]) -> dict[str, list[str]]:
    """Elements per status, every status present (possibly empty), in STATUSES order."""
    return {s: [r.element for r in rows if r.status == s] for s in STATUSES}


def proofs(rows: list[Row]) -> dict[str, list[str]]:
    """Elements per proof, in PROOFS order."""
    return {p: [r.element for r in rows if r.proof == p] for p in PROOFS}


def python_symbols(path: Path) -> set[str]:
    """Module-level functions, classes and assigned names of a .py file, and `Class.member`."""
    names: set[str] = set()

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return [node.name]
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        names.update(targets(node))
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{member}" for child in node.body for member in targets(child))
    return names


def yaml_has(path: Path, dotted: str) -> bool:
    node = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def unresolved(rows: list[Row], root: Path) -> list[str]:
    """Citations of `rows` that point at nothing under the repository `root`: in the suite's
    columns a `path::symbol` whose file is missing or lacks the symbol, a path without a symbol,
    or a stale `path:line`; in the test column a test file or test function that is not there
    (`::name` alone continues the cell's last file)."""
    problems = []
    for row in rows:
        where = f"line {row.line} ({row.element})"
        for column in SUITE_COLUMNS:
            for path, symbol, line in CITATION.findall(row.cells.get(column, "")):
                file = root / path
                if line or not symbol:
                    problems.append(f"{where}: `{path}{line}` cites no symbol; write `{path}::name`")
                elif not file.is_file():
                    problems.append(f"{where}: {path} does not exist")
                elif path.endswith(".py") and symbol not in python_symbols(file):
                    problems.append(f"{where}: {path} defines no {symbol}")
                elif path.endswith(".yaml") and not yaml_has(file, symbol):
                    problems.append(f"{where}: {path} has no key {symbol}")
        last = None
        for path, name in TEST.findall(row.cells.get(TEST_COLUMN, "")):
            last = path or last
            if not path and not name:
                continue
            if last is None or not (root / last).is_file():
                problems.append(f"{where}: test file {last or '(none)'} does not exist")
            elif name and name not in python_symbols(root / last) and not _in_a_class(root / last, name):
                problems.append(f"{where}: {last} has no test {name}")
    return problems


def _in_a_class(path: Path, name: str) -> bool:
    return any(symbol.endswith(f".{name}") for symbol in python_symbols(path))
