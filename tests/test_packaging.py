"""pyproject.toml (pip) and environment.yml (conda) must name the same dependencies."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# conda package names that differ from PyPI's
CONDA_NAMES = {"pytorch": "torch", "faiss-gpu": "faiss", "pygments": None, "python": None, "pip": None}


def name(spec: str) -> str:
    return re.split(r"[<>=!\[ ]", spec, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_deps = {name(d) for d in [*project["dependencies"], *extras["test"], *extras["slurm"]]}
    pip_deps = {"faiss" if d.startswith("faiss") else d for d in pip_deps}
    env = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda, pip_section = set(), set()
    for dep in env:
        if isinstance(dep, dict):
            pip_section |= {name(d) for d in dep["pip"] if not d.startswith("-e")}
        else:
            mapped = CONDA_NAMES.get(name(dep), name(dep))
            if mapped:
                conda.add(mapped)
    assert conda | pip_section == pip_deps
    assert any(d.startswith("faiss-gpu") for d in env if isinstance(d, str)), "conda env must use faiss-gpu"
    assert "pygments" in {name(d) for d in env if isinstance(d, str)}, "snakemake --report needs pygments"


def test_versions_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {name(d): d[len(name(d)):].split(";")[0] for d in project["dependencies"]}
    env = {CONDA_NAMES.get(name(d), name(d)): d[len(name(d)):] for d in
           yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"] if isinstance(d, str)}
    for dep in ("torch", "torchvision", "numpy", "pandas", "snakemake"):
        assert env[dep].strip() == pins[dep].replace("[reports]", "").strip(), dep
