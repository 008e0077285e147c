"""k-fold tuning (the reality check's protocol): a trial's score is the mean over its validation
folds, each fold a job of its own, the fold scores kept; the study is told once every fold is in."""
import json
import shutil

import optuna
import pytest

import hdml.train.trainer
from hdml.workflow.tune import Spec, fold_mean, run_trial, write_best

# Hand-chosen fold scores: the trial's score must be their mean, (0.50 + 0.70 + 0.30 + 0.90) / 4 = 0.60.
FOLD_SCORES = {0: 0.50, 1: 0.70, 2: 0.30, 3: 0.90}


def by_fold(calls, shift=0.0):
    """Stand-in training: the score of the fold it validates on (run config `val_fold`)."""
    def train(**kwargs):
        calls.append(dict(kwargs["overrides"]))
        return {"selection": {"score": FOLD_SCORES[kwargs["overrides"]["val_fold"]] + shift}}

    return train


def stored(study):
    return optuna.load_study(study_name="hdml", storage=f"sqlite:///{study / 'study.db'}").trials


def test_fold_mean_is_the_plain_mean_and_none_if_a_fold_diverged():
    assert fold_mean(FOLD_SCORES) == pytest.approx(0.60, abs=1e-12)
    assert fold_mean({0: 0.5, 1: None}) is None


def test_a_trial_is_told_the_mean_of_its_folds_once_all_are_scored(tmp_path, monkeypatch):
    spec, study = Spec("digits", "triplet", "map@r", 0, 2, folds=4), tmp_path / "study"
    calls = []
    monkeypatch.setattr(hdml.train.trainer, "train_run", by_fold(calls))
    for fold in (2, 0, 3):  # folds finish in any order; three of four: not told yet
        record = run_trial(study, spec, 0, root="unused", overrides={"steps": 4}, fold=fold)
        assert (record["fold"], record["value"]) == (fold, FOLD_SCORES[fold])
        assert [t.state.name for t in stored(study)] == ["RUNNING"]
    assert not (study / "trial0" / "trial.json").exists()
    run_trial(study, spec, 0, root="unused", overrides={"steps": 4}, fold=1)
    (trial,) = stored(study)
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(0.60, abs=1e-12)
    summary = json.loads((study / "trial0" / "trial.json").read_text())
    assert {int(k): v for k, v in summary["folds"].items()} == FOLD_SCORES and summary["value"] == trial.value
    for fold in range(4):  # each fold trained once, in its own folder, validating on its fold
        assert json.loads((study / "trial0" / f"fold{fold}" / "trial.json").read_text())["value"] == FOLD_SCORES[fold]
    assert sorted(c["val_fold"] for c in calls) == [0, 1, 2, 3]
    assert len({c["triplet.margin"] for c in calls}) == 1  # one point of the space, four folds
    assert all(c["selection"] == "val" and c["evaluate_test"] is False for c in calls)
    again = run_trial(study, spec, 0, root="unused", overrides={"steps": 4}, fold=1)  # a rerun trains nothing
    assert again["value"] == FOLD_SCORES[1] and len(calls) == 4
    best = write_best(study, 1)
    assert best["folds"] == 4 and best["value"] == pytest.approx(0.60, abs=1e-12)


def test_a_diverged_fold_fails_its_trial(tmp_path, monkeypatch):
    from hdml.core.errors import TrainingDiverged

    spec = Spec("digits", "triplet", "map@r", 0, 2, folds=2)

    def diverges_on_fold_1(**kwargs):
        if kwargs["overrides"]["val_fold"] == 1:
            raise TrainingDiverged("NaN")
        return {"selection": {"score": 0.5}}

    monkeypatch.setattr(hdml.train.trainer, "train_run", diverges_on_fold_1)
    run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=0)
    assert run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=1)["outcome"] == "diverged"
    assert [t.state.name for t in stored(tmp_path)] == ["FAIL"]
    with pytest.raises(ValueError, match="all 1 trials diverged"):
        write_best(tmp_path, 1)
    shutil.rmtree(tmp_path / "trial0" / "fold0")  # a lost fold of a failed trial is not trained again
    monkeypatch.setattr(hdml.train.trainer, "train_run", lambda **kwargs: pytest.fail("trained a failed trial's fold"))
    assert run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=0)["outcome"] == "skipped"


def test_a_lost_fold_of_a_complete_trial_is_trained_again_not_given_the_mean(tmp_path, monkeypatch):
    spec, calls = Spec("digits", "triplet", "map@r", 0, 2, folds=2), []
    monkeypatch.setattr(hdml.train.trainer, "train_run", by_fold(calls))
    for fold in (0, 1):
        run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=fold)
    shutil.rmtree(tmp_path / "trial0" / "fold1")
    assert run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=1)["value"] == FOLD_SCORES[1]
    assert len(calls) == 3 and stored(tmp_path)[0].value == pytest.approx((0.50 + 0.70) / 2, abs=1e-12)


def test_best_yaml_tells_a_trial_whose_last_fold_died_before_telling(tmp_path, monkeypatch):
    import hdml.workflow.tune

    spec = Spec("digits", "triplet", "map@r", 0, 2, folds=2)
    monkeypatch.setattr(hdml.train.trainer, "train_run", by_fold([]))
    run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=0)
    with monkeypatch.context() as m:  # the last fold's job dies after writing its record, before telling
        m.setattr(hdml.workflow.tune, "_finish", lambda *args: None)
        run_trial(tmp_path, spec, 0, root="unused", overrides={}, fold=1)
    assert [t.state.name for t in stored(tmp_path)] == ["RUNNING"]
    assert write_best(tmp_path, 1)["value"] == pytest.approx((0.50 + 0.70) / 2, abs=1e-12)


def test_a_fold_outside_the_study_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fold 2 of a study scored on 2 fold"):
        run_trial(tmp_path, Spec("digits", "triplet", "map@r", 0, 2, folds=2), 0, root="unused", overrides={}, fold=2)


def test_k_fold_and_one_fold_studies_are_not_mixed(tmp_path, monkeypatch):
    from hdml.core.config import ConfigError

    monkeypatch.setattr(hdml.train.trainer, "train_run", by_fold([]))
    run_trial(tmp_path, Spec("digits", "triplet", "map@r", 0, 2, folds=2), 0, root="unused", overrides={})
    with pytest.raises(ConfigError, match="made for other settings"):
        run_trial(tmp_path, Spec("digits", "triplet", "map@r", 0, 2), 1, root="unused", overrides={})
