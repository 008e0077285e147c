"""Final models per fold (hdml.eval.ensemble): separated = the mean of the fold models' metrics,
concatenated = their per-model L2-normalised embeddings joined (4 x 128 = 512-d), checked against a
hand-built 512-d embedding; and the plan, DAG and aggregate around them."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hdml.eval.aggregate import RUNS_COLUMNS, aggregate, read_long
from hdml.eval.ensemble import concatenate, ensemble_run, mean_metrics
from hdml.eval.evaluate import Embeddings
from hdml.eval.metrics import evaluate
from hdml.workflow.plan import plan_runs, read_workflow_configs, validate_workflow_config


def fold_models(tmp_path, folds=4, dim=128, n=60, classes=6, seed=0):
    """`folds` run folders holding test embeddings of the same images (fold-specific noise)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    centres = rng.normal(size=(classes, dim))
    dirs, raw = [], []
    for f in range(folds):
        z = (centres[labels] + rng.normal(scale=1.5 + f, size=(n, dim))) * (f + 1)  # scales differ per model
        d = tmp_path / f"fair.fold{f}" / "seed0"
        d.mkdir(parents=True)
        Embeddings(z.astype(np.float32), labels).save(d / "embeddings.npz")
        metrics = evaluate(z.astype(np.float32), labels, [1, 2], seed=0, kmeans_algorithm="kmeans++")
        (d / "evaluation.json").write_text(json.dumps({
            "metrics": metrics, "test_selected": {**metrics, "step": 10.0 + 5 * f},  # each fold its own step
            "selection": {"mode": "val", "metric": "map@r", "step": 10 * (f + 1), "score": 0.5, "val_classes": [f]}}))
        (d / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "eval_ks": [1, 2], "val_fold": f, "steps": 20,
                                                       "selection": "val", "protocol": "code"}))
        pd.DataFrame({"step": [10, 20], "recall@1": [0.1 * f, 0.2 * f]}).to_csv(d / "curve.csv", index=False)
        pd.DataFrame({"step": [1, 2], "loss": [1.0 + f, 0.5 + f]}).to_csv(d / "losses.csv", index=False)
        dirs.append(d)
        raw.append(z.astype(np.float32))
    return dirs, raw, labels


def test_concatenated_is_the_hand_built_512d_embedding(tmp_path):
    dirs, raw, labels = fold_models(tmp_path)
    by_hand = np.hstack([z / np.linalg.norm(z, axis=1, keepdims=True) for z in raw])  # 4 x 128, each unit norm
    assert by_hand.shape == (60, 512)
    out = tmp_path / "fair" / "seed0"
    record = ensemble_run(dirs, out)
    with np.load(out / "embeddings.npz") as saved:
        joined, saved_labels = saved["embeddings"], saved["labels"]
    np.testing.assert_allclose(joined, by_hand, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(saved_labels, labels)
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 2.0, rtol=1e-5)  # 4 unit blocks: norm sqrt(4)
    assert record["metrics"] == pytest.approx(evaluate(by_hand, labels, [1, 2], seed=0), abs=1e-9)
    assert "512 dimensions" in record["metrics_source"]
    assert yaml.safe_load((out / "config.yaml").read_text())["ensemble"] == {"folds": 4, "embedding_dim": 512}


def test_separated_is_the_mean_of_the_fold_models(tmp_path):
    dirs, _, _ = fold_models(tmp_path)
    record = ensemble_run(dirs, tmp_path / "fair" / "seed0")
    folds = [json.loads((d / "evaluation.json").read_text())["metrics"] for d in dirs]
    for metric in ("recall@1", "nmi", "map@r"):
        assert record["separated"][metric] == pytest.approx(sum(f[metric] for f in folds) / 4, abs=1e-12)
    assert record["selection"]["folds"] == 4 and record["selection"]["fold_steps"] == [10, 20, 30, 40]
    curve = pd.read_csv(tmp_path / "fair" / "seed0" / "curve.csv")
    assert curve["recall@1"].tolist() == pytest.approx([0.1 * 1.5, 0.2 * 1.5])  # mean over folds 0..3 of 0.1 f


def test_concatenating_models_of_other_images_is_refused():
    a = Embeddings(np.ones((4, 2), np.float32), np.array([0, 0, 1, 1]))
    b = Embeddings(np.ones((4, 2), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="fold model 1 embedded other images"):
        concatenate([a, b])


def test_mean_metrics_keeps_the_metrics_every_model_has():
    assert mean_metrics([{"a": 0.2, "b": 1.0}, {"a": 0.4}]) == {"a": pytest.approx(0.3)}


def test_aggregate_reads_a_fold_model_seed_as_one_run_with_separated_rows(tmp_path):
    dirs, _, _ = fold_models(tmp_path / "runs" / "digits" / "triplet", folds=2)
    out = tmp_path / "runs" / "digits" / "triplet" / "fair" / "seed0"
    record = ensemble_run(dirs, out)
    table = aggregate([out], tmp_path / "metrics.csv", tmp_path / "curves.csv", tmp_path / "runs.csv")
    value = dict(zip(table.metric, table.value, strict=True))
    assert value["recall@1"] == record["metrics"]["recall@1"]
    assert value["separated:recall@1"] == record["separated"]["recall@1"]
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs.selection.tolist() == ["val"] and set(table.variant) == {"fair"}
    # the fold models' test-selected steps (10 and 15) have no mean step: the report's reader takes the row
    assert "step" not in record["test_selected"] and runs.selected_step.isna().all()
    read_long(tmp_path / "runs.csv", RUNS_COLUMNS)


def test_a_folds_variant_plans_one_run_per_fold_and_seed():
    config = read_workflow_configs(["config/config.yaml"])
    runs = plan_runs(config)
    fair = [r for r in runs if r.variant == "fair"]
    parts = [r for r in runs if r.part_of == "fair"]
    assert len(fair) == 6 and all(r.folds == 2 for r in fair)
    assert sorted((r.method, r.variant, r.seed, r.overrides["val_fold"]) for r in parts) == sorted(
        (m, f"fair.fold{f}", s, f) for m in ("triplet", "hdml-triplet") for s in (0, 1, 2) for f in (0, 1))
    assert all(r.tuned and r.overrides["selection"] == "val" for r in parts)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["variants"]["fair"].update(folds=5), r"folds: 5, but datasets.glyphs.prepare.val_folds makes 4"),
    (lambda c: c["variants"]["fair"].update(set={}), "needs set: {selection: val}"),
    (lambda c: c["tune"].update(folds=5), "tune.folds 5, but datasets.glyphs.prepare.val_folds makes 4 folds"),
])
def test_bad_fold_settings_are_config_errors(edit, message):
    from hdml.core.config import ConfigError

    config = read_workflow_configs(["config/config.yaml"])
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_workflow_config(config)


def test_reality_check_config_states_their_protocol():
    """config/reality-check.yaml over paper.yaml: the values its comments cite from
    powerful-benchmarker's configs (4 folds, 50 trials of 4 fold jobs, 128-d, batch 32 of 4 per class)."""
    config = read_workflow_configs(["config/paper.yaml", "config/reality-check.yaml"])
    runs = validate_workflow_config(config)
    assert config["tune"]["trials"] == 50 and config["tune"]["folds"] == 4 and config["tune"]["metric"] == "map@r"
    assert all(config["datasets"][d]["prepare"]["val_folds"] == 4 for d in ("cub200", "cars196", "sop"))
    rc = [r for r in runs if r.variant == "reality-check"]
    assert len(rc) == 13 * 3 * 3 and all(r.folds == 4 and r.tuned for r in rc)
    for r in rc:
        o = r.overrides
        assert (o["embedding_dim"], o["batch_size"], o["images_per_class"], o["weight_decay"]) == (128, 32, 4, 1e-4)
        assert (o["selection"], o["selection_metric"], o["backbone"]) == ("val", "map@r", "googlenet")
    parts = [r for r in runs if r.part_of == "reality-check"]
    assert len(parts) == 4 * len(rc) and {r.overrides["val_fold"] for r in parts} == {0, 1, 2, 3}
    assert [r for r in runs if r.variant == "default"]  # the paper's grid stays


def test_rehearsal_plans_the_reality_check_at_the_real_counts():
    """bench/rehearsal.py --with config/reality-check.yaml --plan: the jobs its DAG has, counted from the plan."""

    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import rehearsal

    counts = rehearsal.grid_counts(read_workflow_configs(rehearsal.configs([Path("config/reality-check.yaml")])))
    plain = rehearsal.grid_counts(read_workflow_configs(rehearsal.configs([])))
    studies, seeds = 13 * 3, 1  # rehearsal.yaml: one seed
    assert counts["trial_jobs"] == studies * 50 * 4 and counts["fold_models"] == studies * seeds * 4
    assert counts["runs"] == plain["runs"] + studies * seeds
    # + trial jobs, a best.yaml per study, per seed of fold models 4 trained and evaluated models and 1 ensemble
    assert counts["jobs"] == plain["jobs"] + counts["trial_jobs"] + studies + studies * seeds * (2 * 4 + 1)


@pytest.mark.slow
def test_reality_check_rehearsal_jobs_are_snakemakes_count(tmp_path, venv_env):
    """Slow (a dry run of an 8,000-job DAG, minutes): the count above is what `snakemake -n` plans
    for paper.yaml + reality-check.yaml + rehearsal.yaml. Run: pytest -m slow tests/test_ensemble.py"""

    repo = Path(__file__).parents[1]
    sys.path.insert(0, str(repo / "bench"))
    import rehearsal

    files = [str(p) for p in rehearsal.configs([repo / "config/reality-check.yaml"])]
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "-s", str(repo / "Snakefile"), "-d", str(tmp_path),
           "--cores", "2", "--configfile", *files]
    done = subprocess.run(cmd, capture_output=True, text=True, env=venv_env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    total = re.search(r"^total\s+(\d+)$", done.stdout + done.stderr, re.M)
    assert total and int(total.group(1)) == rehearsal.grid_counts(read_workflow_configs(files))["jobs"]


def _snakemake(workdir, config, env, *extra):

    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    repo = Path(__file__).parents[1]
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(repo / "Snakefile"), "--configfile",
           "config.yaml", "--cores", "2", *extra]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def test_demo_dag_plans_fold_jobs_as_the_plan_counts(tmp_path, venv_env):
    """`snakemake -n` on the demo: a tune_trial job per trial and fold, a train and evaluate job per
    fold model, an ensemble job per seed of fold models; the total is what bench/rehearsal.py counts."""

    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import rehearsal

    config = read_workflow_configs(["config/config.yaml"])
    done = _snakemake(tmp_path, config, venv_env, "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    count = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    assert count["tune_trial"] == 2 * 2 * 2 and count["tune_best"] == 2 and count["ensemble"] == 6
    plain_runs = 75 - 6 + 3  # + the untrained reference, one run per seed
    assert count["train"] == count["evaluate"] == plain_runs + 12
    assert count["total"] == rehearsal.grid_counts(config)["jobs"]
    assert "fold=1" in out and "variant=fair.fold1" in out


def test_fold_slice_runs_through_the_dag(tmp_path, venv_env):
    """A tiny 2-fold slice end to end: 2 trials of 2 fold jobs, best.yaml, 2 fold models trained with
    the best point, the ensemble job, the aggregate; the trial's score is the mean of its fold files."""
    config = {"data_root": "data", "results_dir": "results", "report_dir": "report", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet"], "prepare": {"val_folds": 2},
                                      "train": {"steps": 8, "eval_every": 4, "batch_size": 30, "lr": 1e-3,
                                                "device": "cpu", "embedding_dim": 16}}},
              "tune": {"trials": 2, "startup_trials": 2, "folds": 2, "set": {"steps": 4}},
              "variants": {"rc": {"datasets": ["digits"], "methods": ["triplet"], "set": {"selection": "val"},
                                  "tuned": True, "folds": 2}}}
    done = _snakemake(tmp_path, config, venv_env, "results/metrics.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    study = tmp_path / "results/tune/digits/triplet"
    for i in range(2):
        folds = [json.loads((study / f"trial{i}/fold{f}/trial.json").read_text())["value"] for f in range(2)]
        summary = json.loads((study / f"trial{i}/trial.json").read_text())
        assert summary["value"] == pytest.approx((folds[0] + folds[1]) / 2, abs=1e-12)
    best = yaml.safe_load((study / "best.yaml").read_text())
    for f in range(2):
        cfg = yaml.safe_load((tmp_path / f"results/runs/digits/triplet/rc.fold{f}/seed0/config.yaml").read_text())
        assert cfg["val_fold"] == f and cfg["triplet"]["margin"] == best["set"]["triplet.margin"]
    seed = json.loads((tmp_path / "results/runs/digits/triplet/rc/seed0/evaluation.json").read_text())
    assert "32 dimensions" in seed["metrics_source"] and seed["selection"]["folds"] == 2
    metrics = pd.read_csv(tmp_path / "results/metrics.csv")
    assert set(metrics.variant) == {"default", "rc"}  # the fold models only through their seed folder
    assert {"separated:map@r", "map@r"} <= set(metrics[metrics.variant == "rc"].metric)
    status = subprocess.run([sys.executable, "-m", "hdml.cli", "status", "config.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, env=venv_env)
    assert status.stdout.startswith("4 runs: 4 done\n"), status.stdout  # default, reference, 2 folds
