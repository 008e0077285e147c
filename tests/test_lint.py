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
