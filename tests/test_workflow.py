"""The whole Snakemake DAG through the `snakemake` command line, on a tiny digits config."""
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "data_root": "data",
    "results_dir": "results",
    "report_dir": "report",
    "seeds": [0, 1],
    "datasets": {"digits": {
        "methods": ["triplet", "npair"],
        "train": {"steps": 20, "eval_every": 10, "batch_size": 30, "lr": 1e-3, "device": "cpu"},
        "per_method": {"npair": {"batch_size": 10}},
    }},
}


def snakemake(workdir: Path, config: dict, env: dict, *extra: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml", "--cores", "2", *extra]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_dag_end_to_end_then_nothing_to_do(tmp_path, venv_env):
    done = snakemake(tmp_path, TINY, venv_env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "results/metrics.csv")
    assert list(metrics.columns) == ["dataset", "method", "variant", "seed", "metric", "value"]
    plain = metrics[~metrics.metric.str.startswith("selected:")]
    assert set(zip(plain.method, plain.seed)) == {(m, s) for m in ("triplet", "npair") for s in (0, 1)}
    assert plain.value.between(0, 1).all()
    assert {"nmi", "f1", "recall@1", "recall@8"} <= set(plain.metric)
    html = (tmp_path / "report/report.html").read_text()
    assert "Triplet" in html and "N-pair" in html and "data:image/png;base64," in html
    table = (tmp_path / "report/tables/digits.md").read_text()
    assert "Triplet" in table and "N-pair" in table
    for seed in (0, 1):
        for method in ("triplet", "npair"):
            run = tmp_path / f"results/runs/digits/{method}/default/seed{seed}"
            assert (run / "evaluation.json").exists() and (run / "embeddings.npz").exists()
            assert (tmp_path / f"results/benchmarks/train/digits/{method}/default/seed{seed}.tsv").exists()
    again = snakemake(tmp_path, TINY, venv_env, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["datasets"]["digits"]["methods"].append("magic"), "unknown method 'magic'"),
        (lambda c: c["datasets"].update(imagenet={"methods": ["npair"]}), "imagenet"),
        (lambda c: c.pop("seeds"), "seeds"),
        (lambda c: c["datasets"]["digits"]["train"].update(steps=-3), "steps: must be > 0"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, venv_env, edit, message):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    edit(config)
    failed = snakemake(tmp_path, config, venv_env)
    assert failed.returncode != 0
    assert message in failed.stdout + failed.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()
