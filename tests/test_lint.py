"""The linters CI runs (through this file, from .ci/run): ruff with the rule set in pyproject.toml,
Snakemake's own linter on the workflow, and snakefmt's formatting of it."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    done = run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_snakemake_lint_finds_nothing():
    done = run(str(BIN / "snakemake"), "--lint")
    assert done.returncode == 0 and "Lints for" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_workflow_is_snakefmt_formatted():
    done = run(str(BIN / "snakefmt"), "--check", "--diff", "Snakefile", "workflow")
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_named_by_the_workflow_package_and_readme_exist():
    """A pointer to a missing doc (the SLURM profile named docs/cluster.md) is a dead end."""
    import re

    sources = [REPO / "Snakefile", REPO / "README.md", REPO / "CONTRIBUTING.md",
               *(p for d in ("workflow", "hdml", "config") for p in (REPO / d).rglob("*") if p.is_file()
                 and p.suffix in {".py", ".yaml", ".smk", ".sh", ".rst", ".md"})]
    named = {(src.relative_to(REPO), doc) for src in sources
             for doc in re.findall(r"\bdocs/[\w.-]+\.md\b", src.read_text())}
    assert named, "no doc references found: the pattern is broken"
    missing = sorted((str(src), doc) for src, doc in named if not (REPO / doc).is_file())
    assert not missing
