"""The layering contract of docs/architecture.md, checked on the source: every import of `hdml/` and
`baselines/` (at module level or inside a function) goes to its own layer or a lower one, the import
graph has no cycle, and an import inside a function says why it is there (start-up time).

Plug-in discovery (`hdml.core.registry.load_plugins`, the dataset and report-section scans) imports
by name at run time, not by an import statement: it is how a lower layer finds the plug-ins without
depending on them, and is not an edge of this graph."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# bottom to top; a module may import its own layer and those before it
LAYERS = [
    ("core", ("hdml", "hdml.core", "hdml.fidelity")),
    ("data", ("hdml.data",)),
    ("model", ("hdml.model",)),
    ("methods", ("hdml.methods", "baselines")),
    ("eval", ("hdml.eval",)),
    ("train", ("hdml.train",)),
    ("report", ("hdml.report",)),
    ("workflow", ("hdml.workflow",)),
    ("cli", ("hdml.cli",)),
]


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank < 0:
        raise AssertionError(f"{module}: in no layer of the contract")
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> list[Path]:
    return sorted([*ROOT.glob("hdml/**/*.py"), *ROOT.glob("baselines/*.py")])


def project_imports(path: Path, text: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of a project module; `from X
    import y` counts as X.y where X.y is a module of the project, else as X."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    text = path.read_text() if text is None else text
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    is_module = (ROOT / (sub.replace(".", "/") + ".py")).exists() or (
                        ROOT / sub.replace(".", "/") / "__init__.py").exists()
                    found.append((sub if is_module else base, child.lineno, in_function))
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(text), False)
    return [(m, line, inner) for m, line, inner in found if m.split(".")[0] in ("hdml", "baselines")]


def test_the_contract_covers_every_module():
    for path in sources():
        layer_of(module_name(path))


def test_imports_only_go_down():
    upward = []
    for path in sources():
        src = module_name(path)
        for target, line, _ in project_imports(path):
            if layer_of(target) > layer_of(src):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {src} ({LAYERS[layer_of(src)][0]}) imports "
                              f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in sources():
        src = module_name(path)
        graph.setdefault(src, set()).update(t for t, _, _ in project_imports(path) if t != src)
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def silent_function_imports(text: str) -> list[int]:
    """First lines of the blocks of consecutive imports inside functions that give no reason: a
    comment on one of the block's lines or on the line just above it."""
    lines = text.splitlines()
    silent: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            block: list[ast.stmt] = []
            for stmt in [*getattr(node, field, []), None]:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    block.append(stmt)
                    continue
                if block and in_function:
                    first, last = block[0].lineno, block[-1].end_lineno or block[-1].lineno
                    said = any("#" in line for line in lines[first - 1:last])
                    if not said and not (first > 1 and lines[first - 2].strip().startswith("#")):
                        silent.append(first)
                block = []
                if stmt is not None:
                    visit(stmt, in_function or isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(text), False)
    return silent


def test_an_import_inside_a_function_says_why():
    silent = [f"{path.relative_to(ROOT)}:{line}: an import inside a function, without a comment saying why"
              for path in sources() for line in silent_function_imports(path.read_text())]
    assert not silent, "\n".join(silent)


def test_the_reason_check_sees_a_silent_block():
    text = ("def f():\n    import os\n    import sys\n\n\ndef g():\n    # start-up: no torch\n"
            "    import os\n    import sys\n")
    assert silent_function_imports(text) == [2]


@pytest.mark.parametrize("text, expect", [
    ("from hdml.report import table\n", ["hdml.report.table"]),
    ("def f():\n    from hdml.core.io import write_text  # start-up: no torch for --help\n", ["hdml.core.io"]),
])
def test_the_scan_sees_module_and_function_imports(text, expect):
    """The checks above see what they must: a submodule imported by name, an import in a function."""
    path = ROOT / "hdml" / "core" / "probe.py"  # not written: the text is given
    assert [m for m, _, _ in project_imports(path, text)] == expect


def test_no_module_is_over_400_lines():
    """A module over 400 lines holds more than one concept: split it (issue 28)."""
    long = {str(p.relative_to(ROOT)): n for p in sources() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_top_of_the_package_is_its_layers():
    """`hdml/` holds its layer packages and a few modules of its own, nothing flat beside them."""
    modules = sorted(p.name for p in (ROOT / "hdml").glob("*.py"))
    packages = {p.name for p in (ROOT / "hdml").iterdir() if (p / "__init__.py").exists()}
    assert len(modules) <= 8, modules
    layered = {prefix.split(".")[1] for _, prefixes in LAYERS for prefix in prefixes if prefix.count(".") == 1}
    assert packages == layered - {"fidelity"}, packages ^ layered


@pytest.mark.parametrize("module", ["hdml.cli", "hdml.eval.evaluate", "hdml.eval.aggregate", "hdml.eval.tsne",
                                    "hdml.eval.ensemble", "hdml.data.datasets", "hdml.data.cache"])
def test_what_trains_nothing_starts_without_torch(module):
    """The workflow's many short jobs (evaluate: one per run) and `hdml --help` pay no torch import
    (about 1 s each): a module-level import of the registry or the trainer would bring it back."""
    code = f"import importlib, sys; importlib.import_module({module!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", f"importing {module} imports torch"
