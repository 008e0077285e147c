"""Costs before a run (hdml.workflow.costs, hdml/resources/costs.yaml) and overlays that narrow a grid (`only`)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fakedata import REAL
from hdml.cli import main
from hdml.core import reference
from hdml.core.config import ConfigError
from hdml.data.datasets import cub200
from hdml.workflow.costs import evaluation_points, load_costs, project, run_config
from hdml.workflow.plan import read_workflow_configs, validate_workflow_config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import costs as bench_costs  # noqa: E402 (bench/ is not a package)

PAPER, FAIR, FAIR_MIN = (str(REPO / "config" / f) for f in ("paper.yaml", "fair.yaml", "fair-min.yaml"))


def test_image_counts_are_the_specs():
    images = load_costs()["images"]
    for dataset, splits in REAL.items():  # tests/fakedata.REAL: ../shared/spec/datasets.md, tested there
        assert images[dataset] == {split: splits[split][1] for split in ("train", "test")}


def test_projection_of_a_small_grid_by_hand():
    """One CUB run of 100 steps evaluated at 50 and 100, and its reference (the untrained network, evaluated
    once at step 0): every figure from costs.yaml, added by hand."""
    config = {"data_root": "d", "results_dir": "r", "report_dir": "p", "seeds": [0],
              "datasets": {"cub200": {"methods": ["triplet"], "train": {"steps": 100, "eval_every": 50}}}}
    runs = validate_workflow_config(config)
    p = project(config, runs)
    c = load_costs()
    eval_point = 5924 / c["embed_images_per_second"]["googlenet"]["value"] + c["metrics_seconds"]["cub200"]["kmeans++"]
    job = c["job_seconds"]["value"]
    assert p.seconds == {"gpu": pytest.approx(100 * 0.021 + 2 * eval_point + job + eval_point + job)}
    assert p.runs == 2 and p.steps == 100 and p.jobs == 1 + 1 + 2 * 2 + 3
    assert p.disk["downloads"] == cub200.SIZE.archive and p.disk["extracted"] == cub200.SIZE.extracted
    assert p.disk["caches"] == (5864 + 5924) * 3 * 256 ** 2
    assert p.disk["results"] == pytest.approx(2 * (24.7e6 + 5924 * 512 * 4 + 1e6))
    assert p.checkpoint_bytes == pytest.approx(2 * 84.6e6)  # keep_checkpoints: 2


def test_evaluation_points_of_the_papers_cadence():
    """CUB under protocol code: every 500 steps to 5,000 (10), then every 46 from 5,014 to 8,004, where
    the run stops (66): 76. SOP: steps 4,650 and 9,300, where it stops (hdml.core.schedule)."""
    config = read_workflow_configs([PAPER])
    runs = {r.dataset: r for r in validate_workflow_config(config) if r.method == "triplet" and r.seed == 0}
    assert evaluation_points(run_config(runs["cub200"])) == 10 + 66
    assert evaluation_points(run_config(runs["sop"])) == 2


def test_paper_grid_projection_counts_what_the_grid_block_counts():
    import rehearsal

    config = read_workflow_configs([PAPER])
    p = project(config, validate_workflow_config(config))
    counts = rehearsal.grid_counts(read_workflow_configs([PAPER]))
    assert (p.runs, p.jobs, p.steps) == (counts["runs"], counts["jobs"], counts["steps"])
    assert p.hours("gpu") > p.steps * 0.021 / 3600  # evaluations and start-up on top of the steps
    # downloads + extracted + caches + results, as docs/benchmarks.md adds them up (about 54 GB)
    assert 50e9 < p.disk_total() < 60e9 and p.disk["caches"] == pytest.approx(29.1e9, rel=0.01)


def test_readme_cost_table_is_the_projection():
    readme = (REPO / "README.md").read_text()
    start, end = readme.index(bench_costs.START), readme.index(bench_costs.END) + len(bench_costs.END)
    assert readme[start:end] == bench_costs.table(), "stale README cost table: run python bench/costs.py --write"


def test_check_config_prints_gpu_hours_and_disk(capsys):
    assert main(["check-config", PAPER]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^projected compute: [\d.]+ GPU-hours", out, re.M)
    assert re.search(r"^projected disk: [\d.]+ GB", out, re.M)
    config = read_workflow_configs([PAPER])
    p = project(config, validate_workflow_config(config))
    assert out.splitlines()[0].startswith(f"{p.runs} runs, 0 tuning trials, {p.jobs:,} Snakemake jobs")
    assert out.strip().endswith(f"{p.runs} runs OK") and p.runs == 198  # 63 x 3 seeds + 3 x 3 references


def test_status_gives_a_projected_eta_before_any_run_finished(tmp_path, capsys):
    config = yaml.safe_load(Path(PAPER).read_text()) | {"results_dir": str(tmp_path / "results")}
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    assert main(["status", str(tmp_path / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    hours = project(config, validate_workflow_config(config)).hours("gpu")
    eta = re.search(r"^grid ETA: (\d+):(\d\d):(\d\d) \(projected", out, re.M)
    assert eta, out
    assert int(eta.group(1)) + int(eta.group(2)) / 60 == pytest.approx(hours, abs=0.02)


def test_fair_min_states_its_projected_cost():
    config = read_workflow_configs([PAPER, FAIR, FAIR_MIN])
    hours = project(config, validate_workflow_config(config)).hours("gpu")
    stated = re.search(r"([\d.]+) GPU-hours", Path(FAIR_MIN).read_text())
    assert stated and float(stated.group(1)) == round(hours, 1)


def test_an_overlay_narrows_the_paper_grid_to_one_dataset_and_four_methods(tmp_path):
    methods = ["triplet", "hdml-triplet", "npair", "hdml-npair"]
    overlay = tmp_path / "narrow.yaml"
    overlay.write_text(yaml.safe_dump({"only": {"datasets": ["cars196"], "methods": methods}}))
    paper = validate_workflow_config(read_workflow_configs([PAPER]))
    config = read_workflow_configs([PAPER, str(overlay)])
    runs = validate_workflow_config(config)
    expected = [r for r in paper if r.dataset == "cars196" and r.method in methods]
    trained = [r for r in runs if r.variant != reference.VARIANT]
    assert [(r.path, r.overrides) for r in trained] == [(r.path, r.overrides) for r in expected]
    assert {r.variant for r in runs} > {"default", "alpha=0", "protocol=paper"}  # variants of those methods stay
    assert "tsne" not in config  # CUB's map is narrowed out with its run
    assert len(trained) == 4 * 3 + 12 * 3 + 2 * 3  # main table; HDML (N-pair)'s 12 variants; protocol=paper
    # the reference row stays, on the first method the narrowed grid plans (it never steps)
    assert [(r.dataset, r.method, r.seed) for r in runs if r.variant == reference.VARIANT] == [
        ("cars196", "triplet", s) for s in (0, 1, 2)]


def test_only_narrows_variants_and_tuning_studies():
    config = read_workflow_configs([PAPER, FAIR, FAIR_MIN])
    runs = validate_workflow_config(config)
    assert {(r.dataset, r.method, r.variant) for r in runs} == {
        ("cars196", m, v) for m in ("npair", "hdml-npair") for v in ("default", "fair")} | {
        ("cars196", "npair", reference.VARIANT)}
    from hdml.workflow.plan import tune_studies

    assert list(tune_studies(config)) == [("cars196", "hdml-npair"), ("cars196", "npair")]


@pytest.mark.parametrize("only, message", [
    ({"methods": ["hdml-tripplet"]}, "only.methods: unknown method 'hdml-tripplet' (did you mean 'hdml-triplet'"),
    ({"datasets": ["cars"]}, "only.datasets: unknown dataset 'cars'"),
    ({"variants": ["alpha=90"]}, "only.variants: unknown variant 'alpha=90'"),
    ({"datasets": ["sop"], "variants": ["no-recon"]}, "leaves no run"),
    ({"method": ["npair"]}, "only: unknown key 'method' (did you mean 'methods'"),
])
def test_only_names_are_checked(only, message):
    config = read_workflow_configs([PAPER]) | {"only": only}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_workflow_config(config)


def test_misspelt_method_in_a_variant_is_named_with_a_suggestion():
    config = read_workflow_configs([PAPER])
    config["variants"]["no-recon"]["methods"] = ["hdml-npiar"]
    with pytest.raises(ConfigError, match=re.escape(
            "variants.no-recon.methods: unknown method 'hdml-npiar' (did you mean 'hdml-npair'")):
        validate_workflow_config(config)


@pytest.mark.slow
def test_snakemake_plans_only_the_narrowed_runs(tmp_path, venv_env):
    """Slow (a Snakemake dry run of the paper grid, about 15 s): the jobs Snakemake plans with
    fair-min.yaml are those hdml.workflow.costs counts, and its training jobs are exactly the planned runs."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", PAPER, FAIR, FAIR_MIN, "--cores", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=venv_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    config = read_workflow_configs([PAPER, FAIR, FAIR_MIN])
    runs = validate_workflow_config(config)
    total = re.search(r"^total\s+(\d+)$", text, re.M)
    assert total and int(total.group(1)) == project(config, runs).jobs
    trained = set(re.findall(r"results/runs/(\S+)/metrics\.json", text))
    assert trained == {r.path for r in runs}


def test_the_cost_figures_are_package_data():
    """`hdml check-config` of an installed hdml reads costs.yaml: pyproject's package data carries it."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hdml"]
    assert any(Path("resources/costs.yaml").match(pattern) for pattern in data)
