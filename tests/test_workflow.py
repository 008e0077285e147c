"""The whole Snakemake DAG through the `snakemake` command line, on a tiny digits config."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hdml.core import reference

REPO = Path(__file__).resolve().parent.parent
METHODS = ["contrastive", "ddml", "triplet", "semihard", "npair", "lifted", "angular", "hdml-triplet", "hdml-npair"]
NPAIR_BATCH = {"batch_size": 10}
TINY = {
    "data_root": "data",
    "results_dir": "results",
    "report_dir": "report",
    "seeds": [0, 1],
    "datasets": {"digits": {
        "methods": METHODS,
        "train": {"steps": 16, "eval_every": 8, "batch_size": 30, "images_per_class": 6, "lr": 1e-3,
                  "device": "cpu", "hdml.block": 4},
        "per_method": {"npair": NPAIR_BATCH, "angular": NPAIR_BATCH, "hdml-npair": NPAIR_BATCH},
    }},
    "variants": {
        "no-softmax": {"datasets": ["digits"], "methods": ["hdml-npair"], "seeds": [0], "set": {"hdml.softmax": False}},
        "alpha=0": {"datasets": ["digits"], "methods": ["hdml-npair"], "seeds": [0], "set": {"hdml.alpha": 0}},
        "protocol=paper": {"datasets": ["digits"], "methods": ["hdml-npair"], "seeds": [0],
                           "set": {"protocol": "paper"}},
    },
    "tsne": {"dataset": "digits", "method": "hdml-npair", "seed": 0},
}


def snakemake(workdir: Path, config: dict, env: dict, *extra: str) -> subprocess.CompletedProcess:
    """`.venv/bin/snakemake` as the README runs it: the environment's bin not on PATH."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**env, "PATH": "/usr/bin:/bin"}
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile",
           "config.yaml", "--cores", "2", *extra]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_dag_end_to_end_then_nothing_to_do(tmp_path, venv_env):
    done = snakemake(tmp_path, TINY, venv_env)
    assert done.returncode == 0, done.stderr[-3000:]
    # the end-of-workflow summary; the progress of each run in its log
    assert f"report: {(tmp_path / 'report/report.html').resolve()}" in done.stdout
    assert "digits: highest mean recall@1 " in done.stdout and "failures: 0" in done.stdout
    log = (tmp_path / "results/logs/train/digits/npair/default/seed0.log").read_text()
    assert "step 16/16 | loss " in log and "ETA" in log
    status = subprocess.run([sys.executable, "-m", "hdml.cli", "status", "config.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, env=venv_env)
    runs = len(METHODS) * 2 + 3 + 2  # + the untrained reference of seeds 0 and 1 (hdml.core.reference)
    assert status.stdout.startswith(f"{runs} runs: {runs} done\n"), status.stdout
    metrics = pd.read_csv(tmp_path / "results/metrics.csv")
    assert list(metrics.columns) == ["dataset", "method", "variant", "seed", "metric", "value"]
    plain = metrics[~metrics.metric.str.startswith("selected:")]
    default = plain[plain.variant == "default"]
    assert set(zip(default.method, default.seed, strict=True)) == {
        (m, s) for m in [*METHODS, reference.NAME] for s in (0, 1)}
    assert set(plain.variant) == {"default", *TINY["variants"]}
    assert plain.value.between(0, 1).all()
    assert {"nmi", "f1", "recall@1", "recall@8", "map@r"} <= set(plain.metric)
    html = (tmp_path / "report/report.html").read_text()
    table = (tmp_path / "report/tables/digits.md").read_text()
    for name in ("Contrastive", "DDML", "Triplet", "Triplet hard", "N-pair", "Lifted", "Angular", "HDML (Triplet)",
                 "HDML (N-pair)"):
        assert name in html and name in table, name
    assert html.count("data:image/png;base64,") >= 4  # curves, ablation, sweep, t-SNE
    for seed in (0, 1):
        for method in METHODS:
            run = tmp_path / f"results/runs/digits/{method}/default/seed{seed}"
            assert (run / "evaluation.json").exists() and (run / "embeddings.npz").exists()
            assert (tmp_path / f"results/benchmarks/train/digits/{method}/default/seed{seed}.tsv").exists()
    again = snakemake(tmp_path, TINY, venv_env, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    bundled = snakemake(tmp_path, TINY, venv_env, "--report", "snakemake-report.html")
    assert bundled.returncode == 0, bundled.stderr[-3000:]
    assert "report.html" in (tmp_path / "snakemake-report.html").read_text()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["datasets"]["digits"]["methods"].append("magic"), "unknown method 'magic'"),
        (lambda c: c["datasets"].update(imagenet={"methods": ["npair"]}), "imagenet"),
        (lambda c: c.pop("seeds"), "seeds"),
        (lambda c: c["datasets"]["digits"]["train"].update(steps=-3), "steps: must be >= 0"),
        (lambda c: c.update(seed=c.pop("seeds")), "unknown key 'seed' (did you mean 'seeds'?)"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, venv_env, edit, message):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    edit(config)
    failed = snakemake(tmp_path, config, venv_env)
    assert failed.returncode != 0
    assert message in failed.stdout + failed.stderr
    assert "additionalProperties" not in failed.stderr  # the one-line error, not a schema dump
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_configfile_stands_alone_without_tsne_or_variants(tmp_path, venv_env):
    # Run where a config/config.yaml exists (the repository root, as the README does): the
    # --configfile must not inherit its `tsne` and `variants`.
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = yaml.safe_load(yaml.safe_dump(TINY))
    del config["tsne"], config["variants"]
    config["datasets"]["digits"]["methods"] = ["triplet"]
    config["seeds"] = [0]
    planned = snakemake(tmp_path, config, venv_env, "-n")
    assert planned.returncode == 0, planned.stderr[-3000:]
    out = planned.stdout + planned.stderr
    # one run, and its untrained reference (hdml.core.reference)
    assert re.search(r"^train\s+2$", out, re.M) and "hdml-npair" not in out and "no-softmax" not in out


def test_tsne_is_its_own_job_on_the_embeddings_and_the_report_reads_its_map(tmp_path, venv_env):
    """Figure 8's t-SNE leaves the report's serial tail: one `tsne` job, which needs only its run's
    embeddings (so it runs beside the other training), and the report takes its map, not the
    embeddings."""
    planned = snakemake(tmp_path, TINY, venv_env, "-n")
    assert planned.returncode == 0, planned.stderr[-3000:]
    out = planned.stdout + planned.stderr
    assert re.search(r"^tsne\s+1$", out, re.M)
    jobs = {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n    input: (.*)$", out, re.M)}
    run = "results/runs/digits/hdml-npair/default/seed0"
    assert jobs["tsne"] == f"{run}/embeddings.npz"
    assert re.search(r"^    output: results/tsne/digits/hdml-npair/default/seed0\.csv$", out, re.M)
    report = jobs["report"].split(", ")
    assert "results/tsne/digits/hdml-npair/default/seed0.csv" in report
    assert not [f for f in report if f.endswith("embeddings.npz")]


def test_tsne_must_name_a_run_of_the_config():
    from hdml.core.config import ConfigError
    from hdml.workflow.plan import validate_workflow_config

    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["tsne"] = {"dataset": "digits", "method": "hdml-npair", "seed": 5}
    with pytest.raises(ConfigError, match="tsne: digits/hdml-npair/default/seed5 is not a run of this config"):
        validate_workflow_config(config, source="c.yaml")


@pytest.mark.slow
def test_finished_run_leaves_no_checkpoints_and_a_mirror_change_retrains_nothing(tmp_path, venv_env):
    """A finished run's folder holds what evaluation and the report read, not its checkpoints,
    and is still up to date; a new mirror URL plans no job (downloads are checked against the
    archive's checksum), a new checksum replans prepare and the run."""
    config = {"data_root": "data", "results_dir": "results", "report_dir": "report", "seeds": [0],
              "datasets": {"digits": {"methods": ["npair"], "train": {
                  "steps": 6, "eval_every": 3, "checkpoint_every": 2, "device": "cpu"}}}}
    target = "results/runs/digits/npair/default/seed0/metrics.json"
    done = snakemake(tmp_path, config, venv_env, target)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "results/runs/digits/npair/default/seed0"
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock", "config.yaml", "curve.csv", "embeddings.npz", "losses.csv", "metrics.json", "model.pt",
        "progress.json"]
    again = snakemake(tmp_path, config, venv_env, "-n", target)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    config["datasets"]["digits"]["prepare"] = {"urls": ["https://mirror.example.org/digits.tgz"]}
    moved = snakemake(tmp_path, config, venv_env, "-n", target)  # the default rerun triggers
    assert moved.returncode == 0 and "Nothing to be done" in moved.stdout + moved.stderr, moved.stdout[-3000:]

    config["datasets"]["digits"]["prepare"]["md5"] = "0" * 32
    changed = snakemake(tmp_path, config, venv_env, "-n", target)
    out = changed.stdout + changed.stderr
    assert changed.returncode == 0 and re.search(r"^prepare\s+1$", out, re.M) and re.search(r"^train\s+1$", out, re.M)


def test_tuning_slice_resumes_its_study_and_trains_the_tuned_runs(tmp_path, venv_env):
    """Trial 0 done, then the whole DAG: trial 0 is not run again, trial 1 and best.yaml follow,
    and the tuned run trains with best.yaml's point on the training classes less validation."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["seeds"] = [0]
    config["datasets"]["digits"].update(methods=["triplet"], prepare={"val_folds": 4})
    config["tune"] = {"trials": 2, "startup_trials": 2, "set": {"steps": 8}}
    config["variants"] = {"tuned": {"datasets": ["digits"], "methods": ["triplet"], "set": {"selection": "val"},
                                    "tuned": True}}
    del config["tsne"]
    study = tmp_path / "results/tune/digits/triplet"
    first = snakemake(tmp_path, config, venv_env, "results/tune/digits/triplet/trial0/trial.json")
    assert first.returncode == 0, first.stderr[-3000:]
    trial0 = (study / "trial0/trial.json").read_text()
    stamp = (study / "trial0/trial.json").stat().st_mtime_ns
    done = snakemake(tmp_path, config, venv_env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert (study / "trial0/trial.json").stat().st_mtime_ns == stamp
    assert out.count("rule tune_trial:") == 1 and "trial=1" in out and "trial=0" not in out
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert best["trials"] == 2 and set(best["scores"]) == {0, 1} and trial0
    run = tmp_path / "results/runs/digits/triplet/tuned/seed0"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["triplet"]["margin"] == best["set"]["triplet.margin"] and cfg["steps"] == 16
    assert json.loads((run / "metrics.json").read_text())["selection"]["val_classes"] == [0, 4]
