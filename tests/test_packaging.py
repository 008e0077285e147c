"""pyproject.toml (pip) and the conda environments (environment.yml for CPU-only machines,
environment-gpu.yml for NVIDIA GPUs) must name the same dependencies, from conda-forge alone."""
import os
import re
import shutil
import subprocess
import sys
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


def reduced_demo(steps: int = 12) -> dict:
    """The demo config cut to two methods (a baseline and HDML, whose generator and t-SNE map the
    report shows), one seed, `steps` steps, no variants: every rule and the report's per-run
    sections, in about a minute."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (name, demo), = config["datasets"].items()
    demo["methods"] = ["triplet", "hdml-npair"]
    demo["per_method"] = {m: v for m, v in demo.get("per_method", {}).items() if m in demo["methods"]}
    demo["train"] |= {"steps": steps, "eval_every": steps // 2, "eval_late_from": steps, "eval_every_late": 0,
                      "checkpoint_every": 0, "lr_milestones": [], "hdml": {"block": 2}}
    config["seeds"] = [0]
    config.pop("variants")
    config["tsne"] = {"dataset": name, "method": "hdml-npair", "seed": 0}
    return config


@pytest.mark.slow
def test_a_non_editable_install_runs_the_demo_dag(tmp_path):
    """`pip install .` (a wheel, not the checkout) carries its data (the schema, the fidelity
    ledger): `hdml check-config` works from the installed package alone, and the workflow (from
    the checkout) runs a reduced demo DAG to the report with it, ledger section included.
    Installed with --target beside the test environment, so torch and the other dependencies
    come from it."""
    src, site = tmp_path / "src", tmp_path / "site"
    for part in ("hdml", "baselines"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, src / part)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, cwd=tmp_path)
    shutil.rmtree(src)  # nothing of the checkout left to fall back on
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import hdml; print(hdml.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    done = subprocess.run([str(site / "bin" / "hdml"), "check-config", str(REPO / "config" / "config.yaml")],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("runs OK")
    # The workflow (from the checkout) runs the reduced demo with the installed package; its jobs'
    # `hdml` (beside this interpreter) imports the installed package too (PYTHONPATH).
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(reduced_demo()))
    run = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
                          "--cores", "2", "--configfile", "config.yaml"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    logs = "".join(f"\n--- {p}\n{p.read_text()}" for p in sorted((tmp_path / "results" / "logs").rglob("*.log")))
    assert run.returncode == 0, run.stderr[-4000:] + logs[-4000:]
    metrics = (tmp_path / "results" / "metrics.csv").read_text()
    assert "triplet" in metrics and "hdml-npair" in metrics
    html = (tmp_path / "report" / "report.html").read_text()
    assert "No fidelity ledger" not in html
    ledger = (tmp_path / "report" / "tables" / "fidelity.md").read_text()
    from hdml.fidelity import read_ledger

    assert f"Fidelity ledger: {len(read_ledger())} elements" in ledger


def test_the_fidelity_ledger_is_package_data():
    """One copy of the ledger, inside the package (what the report of an install reads) and
    named in pyproject.toml's package data, so a wheel carries it."""
    from hdml.fidelity import LEDGER

    assert LEDGER.parent == REPO / "hdml" and LEDGER.exists()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hdml"]
    assert any(LEDGER.relative_to(REPO / "hdml").match(pattern) for pattern in data)
    assert not list(REPO.glob("docs/fidelity*"))


def test_rule_environment_is_environment_yml_without_its_cpu_pin():
    """workflow/envs/hdml.yaml (`conda:` of every rule) names environment.yml's dependencies, same
    versions, less the pytorch-cpu pin (so conda-forge picks a CUDA build on GPU nodes) and `-e .`
    (its post-deploy script installs hdml)."""
    rule_env = yaml.safe_load((REPO / "workflow/envs/hdml.yaml").read_text())
    cpu_env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert rule_env["channels"] == cpu_env["channels"]

    def split(deps: list) -> tuple[list[str], list[str]]:
        pip = next(d["pip"] for d in deps if isinstance(d, dict))
        return [d for d in deps if isinstance(d, str)], [d for d in pip if not d.startswith("-e")]

    rule_conda, rule_pip = split(rule_env["dependencies"])
    cpu_conda, cpu_pip = split(cpu_env["dependencies"])
    assert rule_conda == [d for d in cpu_conda if name(d) != "pytorch-cpu"]
    assert rule_pip == cpu_pip
    deploy = (REPO / "workflow/envs/hdml.post-deploy.sh").read_text()
    assert 'pip install --no-deps -e "$source"' in deploy and "HDML_SOURCE" in deploy


def test_every_rule_runs_in_the_rule_environment():
    """Each rule with a command names the environment (`--sdm conda`), and the name resolves."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
    common = (REPO / "workflow/rules/common.smk").read_text()
    env_path = re.search(r'^HDML_ENV = "([^"]+)"', common, re.M).group(1)
    assert (REPO / "workflow/rules" / env_path).resolve() == REPO / "workflow/envs/hdml.yaml"
    rules = {}
    for file in files:
        for block in re.split(r"^(?=rule \w+:)", file.read_text(), flags=re.M)[1:]:
            rules[re.match(r"rule (\w+):", block).group(1)] = block.split("\n\n\n")[0]
    commands = {r for r, body in rules.items() if re.search(r"^    (shell|run|script):", body, re.M)}
    assert commands == {"prepare", "cache", "train", "evaluate", "aggregate", "tsne", "report", "tune_trial",
                        "tune_best", "ensemble"}
    for rule in commands:
        assert re.search(r"^    conda:\n        HDML_ENV$", rules[rule], re.M), rule
