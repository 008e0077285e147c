"""CONTRIBUTING.md's recipes stay true: every file, folder and `path::symbol` a recipe names exists, every
recipe cites a proof test that exists, and the places a recipe says to drop a new file are the places the
code discovers plug-ins in (so following a recipe is enough, and a recipe goes stale loudly)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hdml.core import registry
from hdml.fidelity import python_symbols

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "CONTRIBUTING.md").read_text()
# a repository path has a folder (bare names like `config.yaml` are a run folder's files) or is the Snakefile
PATH = re.compile(r"`((?:[\w.-]+/)+[\w.<>-]*(?:\.(?:py|yaml|md|smk|sh)|/)|Snakefile)(?:::([\w.]+))?`")
PLACEHOLDER = re.compile(r"<\w+>|(?<![A-Za-z])[A-Z]{3,}(?![a-z])")  # `<name>`, `NAME`, `MYSECTION`


def recipes() -> dict[str, str]:
    """Section title -> text, for every '## Adding a ...' section."""
    parts = re.split(r"^## ", TEXT, flags=re.M)
    return {p.splitlines()[0]: p for p in parts[1:] if p.startswith("Adding ")}


def named(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in PATH.finditer(text)]


def test_the_recipes_are_there():
    assert {"Adding a loss", "Adding a dataset", "Adding a report section"} <= set(recipes())


def missing_paths(text: str) -> list[str]:
    """The paths and `path::symbol`s `text` names that are not in the tree (a path with a placeholder,
    a file to create, needs its folder)."""
    missing = []
    for path, symbol in named(text):
        if PLACEHOLDER.search(path):  # a file to create: its folder must exist
            folder = ROOT / PLACEHOLDER.split(path)[0]
            if not folder.parent.is_dir() and not folder.is_dir():
                missing.append(f"{path}: no folder {folder.parent.relative_to(ROOT)}")
            continue
        target = ROOT / path
        if not target.exists():
            missing.append(f"{path}: does not exist")
        elif symbol and target.suffix == ".py" and symbol not in python_symbols(target):
            missing.append(f"{path}::{symbol}: no such symbol")
    return missing


@pytest.mark.parametrize("title", sorted(recipes()))
def test_every_path_a_recipe_names_exists(title):
    missing = missing_paths(recipes()[title])
    assert not missing, f"CONTRIBUTING.md, '{title}':\n" + "\n".join(missing)


def test_every_path_the_architecture_names_exists():
    missing = missing_paths((ROOT / "docs" / "architecture.md").read_text())
    assert not missing, "docs/architecture.md:\n" + "\n".join(missing)


@pytest.mark.parametrize("title", sorted(recipes()))
def test_every_recipe_cites_a_proof_that_exists(title):
    proofs = [(p, s) for p, s in named(recipes()[title]) if p.startswith("tests/test_")]
    assert proofs, f"CONTRIBUTING.md, '{title}': names no test that proves the recipe"
    for path, symbol in proofs:
        if symbol:
            assert symbol in python_symbols(ROOT / path), f"'{title}': {path}::{symbol} does not exist"


def test_a_loss_file_goes_where_the_registry_looks():
    text = recipes()["Adding a loss"]
    for package in registry.PLUGIN_PACKAGES:
        assert f"`{package}/<name>.py`" in text or f"**`{package}/<name>.py`**" in text
    assert registry.PLUGIN_PACKAGES == ("baselines",)


def test_a_dataset_file_goes_where_the_datasets_are_discovered():
    from hdml.data import datasets

    folder = Path(datasets.__file__).parent.relative_to(ROOT).as_posix()
    assert f"`{folder}/NAME.py`" in recipes()["Adding a dataset"]


def test_the_path_check_sees_a_stale_path_and_symbol():
    text = ("`hdml/no_such.py`, `baselines/<name>.py`, `hdml/core/config.py::no_such`, "
            "`hdml/core/errors.py::ConfigError`")
    assert missing_paths(text) == ["hdml/no_such.py: does not exist", "hdml/core/config.py::no_such: no such symbol"]
