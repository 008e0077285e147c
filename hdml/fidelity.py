"""The fidelity ledger (hdml/fidelity.md): one row per element of HDML and its baselines, with
the paper's statement, the authors' code, this suite, the test that pins it, how it is proven
(`executed` beside the authors' code, or `read`) and a status.

The ledger is package data, its only copy, so that the report of an installed (non-editable)
hdml renders it too; people read it at hdml/fidelity.md.

The report renders its summary (how many elements match the authors' code, differ by a
documented choice, or follow the paper; how many were executed) beside the result tables, so a
reader knows what "reproduced" means; this module reads it, checks every row has a known proof
and status, and resolves every citation into the suite (`unresolved`: each table's suite and test
columns, and the prose), so that a renamed function cannot leave the ledger pointing at nothing.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LEDGER = Path(__file__).resolve().parent / "fidelity.md"
STATUSES = ("match", "documented difference", "follows paper")
PROOFS = ("executed", "read")
# the folders of this repository a citation may point into; any other path is someone else's code
SUITE_DIRS = ("hdml", "baselines", "bench", "config", "workflow", "tests")
TEST_COLUMN = "test"
# A file citation, backquoted or not: `path`, `path::symbol` (a name, `Class.method`, a dotted YAML
# key), `path:line`, or `::symbol` alone, which continues the last path before it in its cell
CITATION = re.compile(r"(?<![\w./-])(?=[\w./-]+\.(?:py|yaml)\b|::\w)(?P<path>[\w./-]+\.(?:py|yaml))?"
                      r"(?:::(?P<symbol>[\w.=-]*\w))?(?P<line>:\d+(?:[-,]\d+)*)?")
BARE_TEST = re.compile(r"(?<![\w:/.])test_\w+")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # `\|` is a pipe inside a cell


@dataclass(frozen=True)
class Row:
    element: str
    proof: str  # "" in a table without proof and status columns (DDML's, Multi-Similarity's)
    status: str
    line: int
    cells: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Table:
    """A table whose header starts '| element |': HDML's ledger first, then those of the other
    methods, each with its suite columns (headers starting 'suite' or 'this suite') and `test`."""
    line: int
    header: list[str]
    rows: list[Row]

    @property
    def suite_columns(self) -> list[str]:
        return [c for c in self.header if c.startswith(("suite", "this suite"))]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in CELL_SEPARATOR.split(line.strip().removeprefix("|").removesuffix("|"))]


def read_tables(path: Path = LEDGER) -> list[Table]:
    """Every element table of the ledger, in order; a row of the wrong width or an unknown proof
    or status is an error naming the line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tables, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("| element |"):
            i += 1
            continue
        start, header = i + 1, _cells(lines[i])
        table = Table(start, header, [])
        proofed = header[-2:] == ["proof", "status"]
        i += 2
        while i < len(lines) and lines[i].startswith(("|", "<!--")):
            line, i = lines[i], i + 1
            if line.startswith("<!--"):
                continue
            cells, number = _cells(line), i
            if len(cells) != len(header):
                raise ValueError(f"{path}:{number}: {len(cells)} cells, the header has {len(header)}")
            proof, status = cells[-2:] if proofed else ("", "")
            if proofed and status not in STATUSES:
                raise ValueError(f"{path}:{number}: status {status!r} of {cells[0]!r} is not one of {list(STATUSES)}")
            if proofed and proof not in PROOFS:
                raise ValueError(f"{path}:{number}: proof {proof!r} of {cells[0]!r} is not one of {list(PROOFS)}")
            table.rows.append(Row(cells[0], proof, status, number, dict(zip(header, cells, strict=True))))
        if not table.rows:
            raise ValueError(f"{path}:{start}: the table has no rows")
        tables.append(table)
    if not tables:
        raise ValueError(f"{path}: no ledger table (a header row starting '| element |')")
    return tables


def read_ledger(path: Path = LEDGER) -> list[Row]:
    """The rows of HDML's ledger, the first table (the one the report counts), in order."""
    first = read_tables(path)[0]
    if first.header[-2:] != ["proof", "status"]:
        raise ValueError(f"{path}:{first.line}: the ledger's last columns must be 'proof', 'status', "
                         f"got {first.header[-2:]}")
    return first.rows


def summary(rows: list[Row]) -> dict[str, list[str]]:
    """Elements per status, every status present (possibly empty), in STATUSES order."""
    return {s: [r.element for r in rows if r.status == s] for s in STATUSES}


def proofs(rows: list[Row]) -> dict[str, list[str]]:
    """Elements per proof, in PROOFS order."""
    return {p: [r.element for r in rows if r.proof == p] for p in PROOFS}


def python_symbols(path: Path) -> set[str]:
    """Module-level functions, classes and assigned names of a .py file, and the members of its
    classes as `Class.member` (`Outer.Inner.member` for nested classes)."""
    names: set[str] = set()

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return [node.name]
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            names.update(prefix + name for name in targets(node))
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, "")
    return names


def yaml_has(path: Path, dotted: str) -> bool:
    node = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


class _Resolver:
    """Resolves citations under the repository `root`, reading each file once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = sorted(p.relative_to(root).as_posix() for d in SUITE_DIRS if (root / d).is_dir()
                            for p in (root / d).rglob("*") if p.suffix in (".py", ".yaml"))
        self.symbols: dict[str, set[str]] = {}

    def suite_file(self, path: str) -> str | None:
        """The suite's file `path` names: itself, or the one it is the tail of (`ddml.py`)."""
        if path.split("/")[0] in SUITE_DIRS:
            return path
        return next((f for f in self.files if f.endswith("/" + path)), None)

    def problem(self, path: str, symbol: str, line: str, *, kind: str) -> str | None:
        """What is wrong with one citation of a suite file, None if it resolves. `kind` is 'suite'
        (a symbol is required), 'test' (a test file, or a test in it) or 'prose' (a bare path is fine)."""
        cited = f"`{path}{'::' + symbol if symbol else ''}{line}`"
        if line:
            return f"{cited} cites a line, which goes stale; write `{path}::name`"
        file = self.root / path
        if not file.is_file():
            return f"{'test file ' if path.startswith('tests/') else ''}{path} does not exist"
        if not symbol:
            return f"{cited} cites no symbol; write `{path}::name`" if kind == "suite" else None
        if path.endswith(".yaml"):
            return None if yaml_has(file, symbol) else f"{path} has no key {symbol}"
        if path not in self.symbols:
            self.symbols[path] = python_symbols(file)
        if symbol not in self.symbols[path]:
            return f"{path} has no test {symbol}" if kind == "test" else f"{path} defines no {symbol}"
        if kind == "test" and path.startswith("tests/") and not symbol.split(".")[-1].startswith("test"):
            return f"{path}::{symbol} is not a test"
        return None

    def cell(self, text: str, kind: str) -> Iterator[str]:
        """The problems of one cell (or paragraph): `::symbol` alone continues the last path."""
        last = None
        for m in CITATION.finditer(text):
            path, symbol, line = m["path"], m["symbol"] or "", m["line"] or ""
            if path is None:
                if last is None:
                    yield f"`::{symbol}` follows no file; write `path::{symbol}`"
                    continue
                path = last
            own = self.suite_file(path)
            if own == path:
                last = path
            if own is None:  # someone else's code (torchvision's, the authors')
                if symbol and kind != "prose":
                    yield f"`{path}::{symbol}` is not a path of this repository ({', '.join(SUITE_DIRS)})"
                continue
            if own != path:
                if line or kind != "prose":
                    yield f"`{path}{line}` is the suite's {own}: write `{own}::name`"
                continue
            if (found := self.problem(path, symbol, line, kind=kind)) is not None:
                yield found
        if kind == "test":
            yield from (f"`{m[0]}` names no test file; write `tests/test_x.py::{m[0]}`"
                        for m in BARE_TEST.finditer(CITATION.sub("", text)))


def unresolved(root: Path, path: Path = LEDGER) -> list[str]:
    """The citations of the ledger at `path` that point at nothing under the repository `root`,
    each named with its line: in every table's suite columns a `path::symbol` whose file is
    missing or lacks the symbol (`Class.method` included), a suite path without a symbol, or a
    `path:line` (a line goes stale); in its test column a test file or test that is not there;
    in the prose around them a `path::symbol` or suite `path:line` likewise."""
    resolver, problems = _Resolver(root), []
    in_table: set[int] = set()
    for table in read_tables(path):
        in_table.update(range(table.line, table.rows[-1].line + 1))
        if not table.suite_columns or TEST_COLUMN not in table.header:
            problems.append(f"line {table.line}: the table has no suite column ('suite...' or 'this suite...') or "
                            f"no '{TEST_COLUMN}' column, so its citations go unchecked")
        for row in table.rows:
            for column in table.suite_columns:
                problems += [f"line {row.line} ({row.element}), {column}: {p}"
                             for p in resolver.cell(row.cells[column], "suite")]
            problems += [f"line {row.line} ({row.element}), {TEST_COLUMN}: {p}"
                         for p in resolver.cell(row.cells.get(TEST_COLUMN, ""), "test")]
    paragraph: list[tuple[int, str]] = []
    for number, line in [*enumerate(path.read_text(encoding="utf-8").splitlines(), 1), (0, "")]:
        if line.strip() and number not in in_table:
            paragraph.append((number, line))
            continue
        if paragraph:
            text = " ".join(text for _, text in paragraph)
            problems += [f"line {paragraph[0][0]} (prose): {p}" for p in resolver.cell(text, "prose")]
        paragraph = []
    return problems
