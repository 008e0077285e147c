"""pyproject.toml (pip) and the conda environments (environment.yml for CPU-only machines,
environment-gpu.yml for NVIDIA GPUs) must name the same dependencies, from conda-forge alone."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {"environment.yml": "cpu", "environment-gpu.yml": "gpu"}
# conda package names that differ from PyPI's (None: conda-only, no PyPI counterpart to match)
CONDA_NAMES = {"pytorch": "torch", "faiss-gpu": "faiss", "faiss-cpu": "faiss", "pytorch-cpu": None,
               "pytorch-gpu": None, "pygments": None, "python": None, "pip": None}


def name(spec: str) -> str:
    return re.split(r"[<>=!\[ ]", spec, maxsplit=1)[0].lower()


def conda_deps(file: str) -> list:
    return yaml.safe_load((REPO / file).read_text())["dependencies"]


@pytest.mark.parametrize("file, kind", ENVIRONMENTS.items())
def test_environment_matches_pyproject(file, kind):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_deps = {name(d) for d in [*project["dependencies"], *extras["test"], *extras["slurm"]]}
    pip_deps = {"faiss" if d.startswith("faiss") else d for d in pip_deps}
    env = conda_deps(file)
    conda, pip_section = set(), set()
    for dep in env:
        if isinstance(dep, dict):
            pip_section |= {name(d) for d in dep["pip"] if not d.startswith("-e")}
        else:
            mapped = CONDA_NAMES.get(name(dep), name(dep))
            if mapped:
                conda.add(mapped)
    assert conda | pip_section == pip_deps
    names = {name(d) for d in env if isinstance(d, str)}
    other = "cpu" if kind == "gpu" else "gpu"
    assert {f"faiss-{kind}", f"pytorch-{kind}"} <= names and not {f"faiss-{other}", f"pytorch-{other}"} & names
    assert "pygments" in names, "snakemake --report needs pygments"


@pytest.mark.parametrize("file", ENVIRONMENTS)
def test_one_channel_that_publishes_pytorch_and_faiss(file):
    assert yaml.safe_load((REPO / file).read_text())["channels"] == ["conda-forge", "nodefaults"]


@pytest.mark.parametrize("file", ENVIRONMENTS)
def test_versions_agree(file):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {name(d): d[len(name(d)):].split(";")[0] for d in project["dependencies"]}
    env = {CONDA_NAMES.get(name(d), name(d)): d[len(name(d)):].split("#")[0] for d in conda_deps(file)
           if isinstance(d, str)}
    for dep in ("torch", "torchvision", "numpy", "pandas", "snakemake"):
        assert env[dep].strip() == pins[dep].replace("[reports]", "").strip(), dep


def test_the_readme_says_which_environment_to_use():
    readme = (REPO / "README.md").read_text()
    assert "environment.yml" in readme and "environment-gpu.yml" in readme
