"""The tuning mode (hdml.workflow.tune): search ranges declared by the plug-ins and checked, trials that
apply their settings, a study that resumes after a kill without repeating finished trials,
best.yaml choosing by validation score, and no trial reading the test labels."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

import hdml.train.trainer
from baselines.hdml import HDML_RANGES
from hdml.cli import main
from hdml.core import registry
from hdml.core.config import ConfigError
from hdml.core.registry import MetricLoss, Range, method_names, register_loss
from hdml.workflow.plan import validate_workflow_config
from hdml.workflow.tune import Spec, check_space, read_best, run_trial, search_space, write_best

TINY = {"steps": 4, "eval_every": 2, "batch_size": 10, "lr": 1e-3, "device": "cpu", "weight_decay": 0.0,
        "embedding_dim": 8, "checkpoint_every": 0}


@pytest.fixture
def scratch_losses():
    """Losses a test registers are removed afterwards."""
    registry.load_plugins()
    before = set(registry.LOSSES)
    yield
    for name in set(registry.LOSSES) - before:
        del registry.LOSSES[name]


def test_every_method_declares_ranges_its_own_checks_accept():
    for method in method_names():
        space = check_space(method, {}, {})
        assert space, method
    assert search_space("hdml-triplet") == {**{f"hdml.{k}": r for k, r in HDML_RANGES.items()},
                                            "triplet.margin": registry.get_loss("triplet").ranges["margin"]}


def test_ranges_come_from_the_plugin_file(scratch_losses):
    @register_loss
    class Scratch(MetricLoss):
        name = "scratch-tuned"
        defaults = {"margin": 0.5, "power": 2}
        ranges = {"margin": Range(0.1, 1.0, log=True), "power": Range(1, 4, integer=True)}

    assert search_space("scratch-tuned") == {"scratch-tuned.margin": Range(0.1, 1.0, log=True),
                                             "scratch-tuned.power": Range(1, 4, integer=True)}


def test_config_list_shows_each_search_range(capsys):
    assert main(["config", "--list", "--dataset", "digits", "--method", "proxyanchor"]) == 0
    rows = {line.split()[0]: line.split(None, 2)[2] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["proxyanchor.margin"] == "number, >= 0; tuned in [0, 0.4]"
    assert rows["proxyanchor.lr_mult"] == "number, > 0; tuned in [10, 1000], log scale"
    assert "tuned" not in rows["lr"]


@pytest.mark.parametrize(("args", "message"), [
    ((2.0, 1.0), "finite low < high"), ((0.0, 1.0, True), "log scale needs low > 0"),
    ((0.5, 2.0, False, True), "integer ends"), ((0.0, math.inf), "finite low < high")])
def test_malformed_ranges_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        Range(*args)


@pytest.mark.parametrize(("defaults", "ranges", "message"), [
    ({"margin": 0.5}, {}, "declares no search ranges, so it cannot be tuned"),
    ({"margin": 0.5}, {"margn": Range(0.1, 1.0)}, "scratch-bad.margn: search range for an unknown key"),
    ({"kind": "a"}, {"kind": Range(0.1, 1.0)}, "scratch-bad.kind: search range for a key that is not a number"),
    ({"n": 2}, {"n": Range(1.0, 4.0)}, "scratch-bad.n: an integer key needs an integer range"),
    ({"margin": 0.5}, {"margin": Range(-1.0, 1.0)}, "at their low ends: .*margin: must be >= 0"),
])
def test_bad_search_ranges_are_config_errors(scratch_losses, defaults, ranges, message):
    @register_loss
    class ScratchBad(MetricLoss):
        name = "scratch-bad"

        def __init__(self, **hparams):
            super().__init__(**hparams)
            if self.hparams.get("margin", 0) < 0:
                raise ValueError(f"scratch-bad.margin: must be >= 0, got {self.hparams['margin']}")

    ScratchBad.defaults, ScratchBad.ranges = defaults, ranges
    with pytest.raises(ConfigError, match=message):
        check_space("scratch-bad", {}, {})


def workflow(**extra):
    config = {"data_root": "data", "results_dir": "results", "report_dir": "report", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet"], "prepare": {"val_folds": 4}}},
              "tune": {"trials": 3},
              "variants": {"tuned": {"datasets": ["digits"], "methods": ["triplet"], "set": {"selection": "val"},
                                     "tuned": True}}}
    config.update(extra)
    return config


def test_workflow_tuning_is_checked_before_any_job(scratch_losses):
    runs = validate_workflow_config(workflow())
    assert [(r.variant, r.tuned) for r in runs] == [("default", False), ("tuned", True), ("untrained", False)]
    no_tune = workflow()
    del no_tune["tune"]
    with pytest.raises(ConfigError, match=r"variants.tuned: tuned: true needs a `tune` section"):
        validate_workflow_config(no_tune)
    no_val = workflow()
    del no_val["datasets"]["digits"]["prepare"]
    no_val["variants"]["tuned"]["set"] = {}
    with pytest.raises(ConfigError, match=r"tune: digits/triplet: trials are scored on a validation split"):
        validate_workflow_config(no_val)
    with pytest.raises(ConfigError, match=r"tune: digits/triplet: lr: must be > 0"):
        validate_workflow_config(workflow(tune={"trials": 3, "set": {"lr": -1}}))

    @register_loss
    class Untuned(MetricLoss):
        name = "untuned"
        defaults = {"margin": 0.5}

    untuned = workflow()
    untuned["datasets"]["digits"]["methods"] = ["untuned"]
    untuned["variants"]["tuned"]["methods"] = ["untuned"]
    with pytest.raises(ConfigError, match="tune: digits/untuned: method untuned declares no search ranges"):
        validate_workflow_config(untuned)


def fake_training(calls):
    """train_run's stand-in: records its overrides, scores a trial by its margin (best at 1)."""

    def train(*, root, dataset, method, seed, out, overrides):
        calls.append(dict(overrides))
        return {"selection": {"score": -abs(math.log(overrides["triplet.margin"]))}}

    return train


def trials(study, spec, indices, root="unused"):
    return {i: run_trial(study, spec, i, root=root, overrides={"steps": 4}) for i in indices}


def test_killed_study_resumes_without_repeating_finished_trials(tmp_path, monkeypatch):
    spec, study = Spec("digits", "triplet", "map@r", 0, 2), tmp_path / "study"
    calls = []
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training(calls))
    first = trials(study, spec, [0, 1])
    assert [c["selection"] for c in calls] == ["val", "val"] and [c["steps"] for c in calls] == [4, 4]

    def killed(**kwargs):  # the job dies mid-training: nothing told to the study
        calls.append(dict(kwargs["overrides"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(hdml.train.trainer, "train_run", killed)
    with pytest.raises(KeyboardInterrupt):
        trials(study, spec, [2])
    assert not (study / "trial2" / "trial.json").exists()
    killed_params = {k: v for k, v in calls[-1].items() if k == "triplet.margin"}

    calls.clear()
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training(calls))
    again = trials(study, spec, [0, 1, 2, 3])  # Snakemake would rerun 2 and 3 only; 0, 1 cost nothing either way
    margins = [c["triplet.margin"] for c in calls]
    assert margins == [killed_params["triplet.margin"], again[3]["params"]["triplet.margin"]]
    for i in (0, 1):
        assert again[i] == first[i]
        assert json.loads((study / f"trial{i}" / "trial.json").read_text()) == first[i]
    assert again[2]["number"] == 2 and again[2]["params"] == killed_params
    assert [again[i]["number"] for i in range(4)] == [0, 1, 2, 3]
    assert len({again[i]["params"]["triplet.margin"] for i in range(4)}) == 4  # each trial its own seed


def _trial_in_a_process(study, index):
    trials(study, Spec("digits", "triplet", "map@r", 0, 2), [index])


def test_parallel_trial_jobs_share_the_study_without_corrupting_it(tmp_path, monkeypatch):
    """Six trial processes at once (forked: they inherit the stand-in training), one study."""
    import multiprocessing

    import optuna

    def slow(**kwargs):
        time.sleep(0.3)
        return fake_training([])(**kwargs)

    monkeypatch.setattr(hdml.train.trainer, "train_run", slow)
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_trial_in_a_process, args=(tmp_path, i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    stored = optuna.load_study(study_name="hdml", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert sorted(t.user_attrs["index"] for t in stored) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    records = [json.loads((tmp_path / f"trial{i}" / "trial.json").read_text()) for i in range(6)]
    assert sorted(r["number"] for r in records) == list(range(6))
    assert {r["number"]: r["params"] for r in records} == {t.number: t.params for t in stored}


def test_an_orphan_of_a_kill_while_asking_is_failed_not_reused(tmp_path, monkeypatch):
    import optuna

    from hdml.workflow.tune import locked, open_study

    spec, study_dir = Spec("digits", "triplet", "map@r", 0, 2), tmp_path / "study"
    with locked(study_dir):
        settings = {"steps": 4, "selection": "val", "selection_metric": "map@r"}  # as `trials` runs them
        open_study(study_dir, spec, 0, settings).ask()  # killed before it carried an index
    calls = []
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training(calls))
    record = trials(study_dir, spec, [0])[0]
    stored = optuna.load_study(study_name="hdml", storage=f"sqlite:///{study_dir / 'study.db'}").trials
    states = [t.state for t in stored]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE] and record["number"] == 1


def test_best_yaml_picks_the_best_validation_score(tmp_path, monkeypatch):
    spec, study = Spec("digits", "triplet", "map@r", 3, 2), tmp_path / "study"
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training([]))
    with pytest.raises(FileNotFoundError, match="no study; run `hdml tune trial` first"):
        write_best(study, 3)
    done = trials(study, spec, [0, 1])
    with pytest.raises(ValueError, match=r"trial\(s\) \[2\] of 3 not finished"):
        write_best(study, 3)
    done |= trials(study, spec, [2])
    best = write_best(study, 3)
    top = max(done, key=lambda i: done[i]["value"])
    assert best["index"] == top and best["value"] == done[top]["value"]
    assert best["scores"] == {i: r["value"] for i, r in done.items()}
    assert yaml.safe_load((study / "best.yaml").read_text()) == best
    assert read_best(study / "best.yaml", "digits", "triplet") == done[top]["params"]
    with pytest.raises(ConfigError, match="tuned for digits/triplet, not digits/npair"):
        read_best(study / "best.yaml", "digits", "npair")
    assert write_best(study, 2)["index"] == max((0, 1), key=lambda i: done[i]["value"])  # a smaller budget


def test_a_study_asked_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training([]))
    trials(tmp_path, Spec("digits", "triplet", "map@r", 0, 2), [0])
    with pytest.raises(ConfigError, match=r"made for other settings .*'metric': \('map@r', 'recall@1'\)"):
        trials(tmp_path, Spec("digits", "triplet", "recall@1", 0, 2), [1])
    with pytest.raises(ConfigError, match=r"made for other settings .*'settings': .*\"steps\": 4.*\"steps\": 5"):
        run_trial(tmp_path, Spec("digits", "triplet", "map@r", 0, 2), 1, root="unused", overrides={"steps": 5})


def test_trial_and_tuned_run_train_with_the_trial_settings(carved_root, tmp_path):
    """A real (tiny) trial: its run config holds its point and selection val, its score is the
    run's best validation score; `hdml train --tuned best.yaml` trains with the same point."""
    study = tmp_path / "study"
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(["tune", "trial", "--dataset", "digits", "--method", "triplet", "--index", "0", "--study", str(study),
                 "--root", str(carved_root), *sets]) == 0
    record = json.loads((study / "trial0" / "trial.json").read_text())
    cfg = yaml.safe_load((study / "trial0" / "config.yaml").read_text())
    assert cfg["triplet"]["margin"] == record["params"]["triplet.margin"] != 1.0
    assert (cfg["selection"], cfg["steps"]) == ("val", 4)
    metrics = json.loads((study / "trial0" / "metrics.json").read_text())
    curve = pd.read_csv(study / "trial0" / "curve.csv")
    assert record["value"] == metrics["selection"]["score"] == curve["val_map@r"].max()
    assert main(["tune", "best", "--study", str(study), "--trials", "1"]) == 0
    run = tmp_path / "tuned"
    assert main(["train", "--dataset", "digits", "--method", "triplet", "--root", str(carved_root), "--out", str(run),
                 *sets, "--set", "triplet.margin=3", "--tuned", str(study / "best.yaml")]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["triplet"]["margin"] == record["params"]["triplet.margin"]


def test_tuning_never_reads_test_labels(carved_root, tmp_path):
    """The same study on a copy whose test labels are permuted draws the same points and scores."""
    split = pd.read_csv(carved_root / "digits" / "split.csv", dtype=str)
    test = split["split"] == "test"
    split.loc[test, "label"] = np.random.default_rng(0).permutation(split.loc[test, "label"].to_numpy())
    permuted = tmp_path / "permuted"
    (permuted / "digits").mkdir(parents=True)
    (permuted / "digits" / "images").symlink_to(carved_root / "digits" / "images")
    split.to_csv(permuted / "digits" / "split.csv", index=False)
    spec = Spec("digits", "triplet", "map@r", 1, 1)
    runs = {name: {i: run_trial(tmp_path / name, spec, i, root=root, overrides=TINY) for i in (0, 1)}
            for name, root in (("plain", carved_root), ("permuted", permuted))}
    assert runs["plain"] == runs["permuted"]
    assert write_best(tmp_path / "plain", 2) == write_best(tmp_path / "permuted", 2)


def test_a_trial_never_loads_embeds_nor_scores_the_test_images(carved_root, tmp_path, monkeypatch):
    """On a copy whose test images are absent (split.csv's test rows name files that do not exist)
    and with the test evaluation (k-means, Embeddings) made to fail, a trial still trains and
    scores, with the same score as on the full data: it never touches the test split."""
    split = pd.read_csv(carved_root / "digits" / "split.csv", dtype=str, keep_default_na=False)
    test = split["split"] == "test"
    split.loc[test, "path"] = "images/absent/" + split.loc[test, "path"].str.replace("/", "_")
    blind = tmp_path / "blind"
    (blind / "digits").mkdir(parents=True)
    (blind / "digits" / "images").symlink_to(carved_root / "digits" / "images")
    split.to_csv(blind / "digits" / "split.csv", index=False)
    spec = Spec("digits", "triplet", "map@r", 1, 1)
    seen = run_trial(tmp_path / "seen", spec, 0, root=carved_root, overrides=TINY)

    def refuse(*args, **kwargs):
        raise AssertionError("a trial evaluated the test split")
    monkeypatch.setattr(hdml.train.trainer, "embed_evaluation", refuse)
    monkeypatch.setattr(hdml.train.trainer.Embeddings, "evaluate", refuse)
    monkeypatch.setattr("hdml.eval.metrics.evaluate", refuse)
    record = run_trial(tmp_path / "study", spec, 0, root=blind, overrides=TINY)
    assert record == seen and record["outcome"] == "complete" and math.isfinite(record["value"])
    run = tmp_path / "study" / "trial0"
    curve = pd.read_csv(run / "curve.csv")
    assert list(curve.columns) == ["step", "train_loss", "val_map@r"] and curve["step"].tolist() == [2, 4]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluate_test"] is False and "metrics" not in metrics and "embeddings_sha256" not in metrics
    assert metrics["selection"]["score"] == record["value"] == curve["val_map@r"].max()
    assert not (run / "embeddings.npz").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["evaluate_test"] is False
    assert write_best(tmp_path / "study", 1)["value"] == record["value"]
    with pytest.raises(ValueError, match="images/absent"):  # the copy really lacks them
        from hdml.data.tensors import load_images
        load_images(blind, "digits", {"image": {"resize": 32}}, 1, ("test",))


def test_a_trial_killed_mid_training_resumes_its_run(carved_root, tmp_path, venv_env):
    """SIGKILL of `hdml tune trial` after a checkpoint: the rerun keeps the trial's number and
    point, finishes the run and tells the study once."""
    study = tmp_path / "study"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "steps": 30, "eval_every": 15, "checkpoint_every": 2}.items()]
    cmd = [sys.executable, "-m", "hdml.cli", "tune", "trial", "--dataset", "digits", "--method", "triplet",
           "--index", "0", "--study", str(study), "--root", str(carved_root), *sets]
    env = {**venv_env, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = study / "trial0" / "ckpt"
    deadline = time.monotonic() + 300
    while not (ckpt.is_dir() and any(ckpt.glob("*.pt"))) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (study / "trial0" / "trial.json").exists()
    import optuna

    stored = optuna.load_study(study_name="hdml", storage=f"sqlite:///{study / 'study.db'}").trials
    assert [t.state for t in stored] == [optuna.trial.TrialState.RUNNING]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    record = json.loads((study / "trial0" / "trial.json").read_text())
    stored_after = optuna.load_study(study_name="hdml", storage=f"sqlite:///{study / 'study.db'}").trials
    assert len(stored_after) == 1 and stored_after[0].params == stored[0].params == record["params"]
    assert stored_after[0].state == optuna.trial.TrialState.COMPLETE and stored_after[0].value == record["value"]
    assert pd.read_csv(study / "trial0" / "losses.csv")["step"].tolist() == list(range(1, 31))


def test_trials_train_as_their_tuned_variant_with_tune_set_on_top():
    from hdml.workflow.plan import trial_overrides, tune_studies

    config = workflow(tune={"trials": 2, "set": {"steps": 50}})
    config["datasets"]["digits"]["per_method"] = {"triplet": {"batch_size": 30}}
    config["variants"]["tuned"]["set"] = {"selection": "val", "batch_size": 60, "steps": 90}
    assert tune_studies(config) == {("digits", "triplet"): {"selection": "val", "batch_size": 60, "steps": 90}}
    assert trial_overrides(config, "digits", "triplet") == {"batch_size": 60, "steps": 50, "selection": "val"}
    config["variants"]["again"] = {**config["variants"]["tuned"], "set": {"selection": "val"}}
    with pytest.raises(ConfigError, match="variants.again: tuned like variants.tuned on digits/triplet but with "
                                          "another `set`"):
        tune_studies(config)


def test_config_files_merge_as_snakemake_merges_them(tmp_path):
    """`hdml check-config paper.yaml fair.yaml` sees the grid Snakemake runs: the overlay adds to
    paper.yaml's datasets and variants instead of replacing them."""
    from snakemake.utils import update_config

    from hdml.workflow.plan import read_workflow_configs, tune_studies

    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    files = [repo / "config/paper.yaml", repo / "config/fair.yaml"]
    expected = yaml.safe_load(files[0].read_text())
    update_config(expected, yaml.safe_load(files[1].read_text()))
    merged = read_workflow_configs([str(f) for f in files])
    assert merged == expected
    assert merged["datasets"]["cub200"]["prepare"] == {"val_folds": 4} and "train" in merged["datasets"]["cub200"]
    assert {"alpha=0", "fair"} <= set(merged["variants"])
    studies = tune_studies(merged)
    assert len(studies) == 3 * 13 and all(s["batch_size"] == 120 for s in studies.values())


def test_fair_grid_adds_tuned_runs_and_leaves_the_papers_as_they_are():
    from hdml.workflow.plan import read_workflow_configs

    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    paper = validate_workflow_config(yaml.safe_load((repo / "config/paper.yaml").read_text()))
    both = validate_workflow_config(read_workflow_configs([str(repo / "config/paper.yaml"),
                                                           str(repo / "config/fair.yaml")]))
    fair = [r for r in both if r.variant == "fair"]
    assert [(r.path, r.overrides) for r in both if r.variant != "fair"] == [(r.path, r.overrides) for r in paper]
    assert len(fair) == 3 * 13 * 3 and all(r.tuned for r in fair)
    shared = {(r.overrides["selection"], r.overrides["batch_size"], r.overrides["images_per_class"],
               r.overrides["embedding_dim"], r.overrides["backbone"]) for r in fair}
    assert shared == {("val", 120, 2, 512, "googlenet")}


def test_a_diverged_trial_is_a_result_not_a_failed_job(tmp_path, monkeypatch):
    import optuna

    from hdml.core.errors import TrainingDiverged

    def diverges(**kwargs):
        raise TrainingDiverged("NaN")

    spec = Spec("digits", "triplet", "map@r", 0, 2)
    monkeypatch.setattr(hdml.train.trainer, "train_run", diverges)
    record = trials(tmp_path, spec, [0])[0]
    assert (record["outcome"], record["value"]) == ("diverged", None)
    with pytest.raises(ValueError, match="all 1 trials diverged; nothing to choose"):
        write_best(tmp_path, 1)
    calls = []
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training(calls))
    assert trials(tmp_path, spec, [0, 1]) == {0: record, 1: trials(tmp_path, spec, [1])[1]} and len(calls) == 1
    stored = optuna.load_study(study_name="hdml", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert [t.state.name for t in stored] == ["FAIL", "COMPLETE"]
    best = write_best(tmp_path, 2)
    assert best["index"] == 1 and best["scores"] == {0: None, 1: stored[1].value}


def test_a_trial_killed_after_training_is_told_without_training_again(tmp_path, monkeypatch):
    spec = Spec("digits", "triplet", "map@r", 0, 2)

    def trains_then_dies(*, out, overrides, **kwargs):  # the run finished; the job died before telling
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(yaml.safe_dump({"triplet": {"margin": overrides["triplet.margin"]}}))
        (out / "metrics.json").write_text(json.dumps({"selection": {"score": 0.625}}))
        raise KeyboardInterrupt

    monkeypatch.setattr(hdml.train.trainer, "train_run", trains_then_dies)
    with pytest.raises(KeyboardInterrupt):
        trials(tmp_path, spec, [0])
    calls = []
    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_training(calls))
    assert trials(tmp_path, spec, [0])[0]["value"] == 0.625 and calls == []
