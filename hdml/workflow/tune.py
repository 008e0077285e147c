"""The tuning mode: the same search budget for every method (Musgrave et al., "A Metric Learning
Reality Check", ECCV 2020), chosen on the validation classes, never on test.

Search space: the `ranges` each plug-in declares beside its defaults (`hdml.core.registry.Range`), as
dotted run-config keys (`triplet.margin`, `hdml.alpha`, ...); HDML's space is its own section's
plus its base loss's. A method whose plug-ins declare none cannot be tuned (a config error).

Search: Optuna's TPE (a well-kept library, with ask/tell and SQLite storage), maximising the
trial's best validation `metric` (`selection: val`, so the trial trains without the validation
classes, and its score is `hdml.eval.selection`'s: the test split plays no part in it). One study
per (dataset, method) under `results/tune/DATASET/METHOD/`:

- `study.db`: Optuna's SQLite storage, the record of every trial (state, params, score);
  `.study.lock` serialises every access (ask, tell, read) between processes by `flock`, so
  parallel trial jobs never interleave their writes.
- `trialN/`: the training run of trial index N (resumable like any run folder) and
  `trialN/trial.json`, written last: its number in the study, params and score.
- `best.yaml`: the best complete trial's settings, which the final seeds train with
  (`hdml train --tuned best.yaml`).

A trial trains with `evaluate_test: false`: it never loads, embeds nor scores the test images
(no test k-means, the costliest evaluation step at SOP size), so its `curve.csv` and
`metrics.json` hold validation scores only and it writes no `embeddings.npz`. The tests prove it
twice: a study on a copy whose test labels are permuted draws the same points with the same
scores, and a trial on a copy whose test images are absent runs and scores (tests/test_tune.py).
On a cluster, the study folder sits on the shared file system like the runs; `flock` there is as
good as the file system's locks (NFSv4: byte-range locks the server arbitrates).

k-fold scores (`folds` K > 1, the reality check's 4): a trial is K jobs, one per fold F of the
training classes (`hdml.data.valsplit`, run-config `val_fold: F`: train on the other folds, score on
fold F). Fold F trains in `trialN/foldF/` and writes `trialN/foldF/trial.json` (its fold score);
the fold job that finds all K fold records written tells the study their mean (`fold_mean`) and
writes `trialN/trial.json` with every fold's score; a diverged fold fails the trial. `write_best`
tells any trial whose folds all finished but whose teller died first. With K = 1 a trial is one
job scored on fold 0, in `trialN/` (the layout of studies made before folds existed).

Trial index N is a Snakemake job (with K folds, K jobs). It asks the study for a new trial only
if none carries its index: a job killed mid-training finds its trial (still RUNNING, params
stored) and resumes the same run with the same params; a finished trial is never trained again. Each trial's sampler is
seeded from (seed, N), so trials drawn in the same history draw the same params, and the first
(random) trials of separate processes do not all draw the same point. Trials running at once
count as running for TPE (Optuna's constant liar).
"""
from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from hdml.core.config import build_run_config, lookup, read_yaml
from hdml.core.errors import ConfigError, TrainingDiverged
from hdml.core.io import write_json, write_text
from hdml.core.registry import Range, config_sections
from hdml.data.datasets import get_dataset

if TYPE_CHECKING:
    import optuna

DB, LOCK, BEST, TRIAL = "study.db", ".study.lock", "best.yaml", "trial.json"
STUDY_NAME = "hdml"
# The workflow config's `tune` section, less `trials`: what each key is when left out.
DEFAULTS: dict[str, Any] = {"metric": "map@r", "seed": 0, "startup_trials": 10, "folds": 1, "set": {}}
# What every trial trains with on top of its settings: no test images at all. Not part of the
# study's `settings`: it changes no score, so studies begun before it stay valid.
BLIND: dict[str, Any] = {"evaluate_test": False}

log = logging.getLogger("hdml.workflow.tune")


def search_space(method: str) -> dict[str, Range]:
    """The ranges the plug-ins of `method` declare, by dotted run-config key."""
    return {f"{name}.{key}": r for name, section in config_sections(method).items()
            for key, r in section.ranges.items()}


def check_space(method: str, dataset_defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Range]:
    """The search space of `method`, checked: declared, each range on a numeric key of its
    section, and a run config with every range at its low end, and one at its high end, passing
    the plug-ins' own checks (so no trial can draw a value its loss refuses)."""
    space = search_space(method)
    if not space:
        raise ConfigError(f"method {method} declares no search ranges, so it cannot be tuned; its plug-in "
                          f"declares them beside its defaults (`ranges`, hdml.core.registry.Range)")
    sections = config_sections(method)
    for dotted, r in space.items():
        name, key = dotted.split(".", 1)
        section = sections[name]
        if key not in section.defaults:
            raise ConfigError(f"{dotted}: search range for an unknown key of section {name}")
        default = section.defaults[key]
        numeric = (default is None and float in section.nullable.get(key, ())) or (
            isinstance(default, (int, float)) and not isinstance(default, bool))
        if not numeric:
            raise ConfigError(f"{dotted}: search range for a key that is not a number ({default!r})")
        if isinstance(default, int) and not isinstance(default, bool) and not r.integer:
            raise ConfigError(f"{dotted}: an integer key needs an integer range (Range(..., integer=True))")
    build_run_config(dataset_defaults, overrides, method)  # the trial's own settings, before the space's
    for end in ("low", "high"):
        values = {k: _value(r, getattr(r, end)) for k, r in space.items()}
        try:
            build_run_config(dataset_defaults, {**overrides, **values}, method)
        except ConfigError as exc:
            raise ConfigError(f"{method}: search ranges at their {end} ends: {exc}") from None
    return space


def _value(r: Range, x: float) -> float | int:
    return int(x) if r.integer else float(x)


def suggest(trial: optuna.Trial, space: dict[str, Range]) -> dict[str, Any]:
    """The trial's point of the space (a value already drawn for it comes back unchanged)."""
    return {key: trial.suggest_int(key, int(r.low), int(r.high), log=r.log) if r.integer
            else trial.suggest_float(key, r.low, r.high, log=r.log) for key, r in space.items()}


@dataclass(frozen=True)
class Spec:
    """What a study is: fixed when it is created; a later trial asking for another is an error
    (its scores would not be comparable)."""

    dataset: str
    method: str
    metric: str
    seed: int
    startup_trials: int
    folds: int = 1  # a trial's score is the mean over validation folds 0..folds-1

    def attrs(self) -> dict[str, Any]:
        """The stored identity; `folds` only when > 1, so studies begun before folds stay valid."""
        out = asdict(self)
        if self.folds == 1:
            del out["folds"]
        return out


@contextmanager
def readable(db: Path) -> Iterator[None]:
    """A damaged study.db (truncated, overwritten, not SQLite) as one line naming it, not the
    storage library's traceback."""
    # here: optuna only for the tuning commands (start-up time of every other command and of Snakemake)
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, sqlite3.Error, optuna.exceptions.OptunaError) as exc:
        why = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ValueError(f"{db}: not a readable tuning study ({why}); remove it and the trial folders beside it "
                         "to start the study afresh") from None


@contextmanager
def locked(study_dir: Path) -> Iterator[None]:
    """Exclusive access to the study across processes (released however the holder ends)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_study(study_dir: Path, spec: Spec, index: int = 0, settings: dict[str, Any] | None = None) -> optuna.Study:
    """The study in `study_dir/study.db`, created on first use; call it under `locked`.
    The sampler is seeded from (spec.seed, index). `settings`, the trials' run-config overrides,
    are part of what the study is: trials trained otherwise would not be comparable, and a
    finished trial is not trained again, so a change must start a new study, not go unnoticed."""
    # here: optuna only for the tuning commands (start-up time)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int(np.random.SeedSequence([spec.seed, index]).generate_state(1)[0])
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials, constant_liar=True)
    with readable(study_dir / DB):
        study = optuna.create_study(storage=f"sqlite:///{(study_dir / DB).resolve()}", study_name=STUDY_NAME,
                                    direction="maximize", sampler=sampler, load_if_exists=True)
        study.user_attrs  # noqa: B018 (reads the storage: a damaged file fails here, named)
    wanted = {**spec.attrs(), "settings": json.dumps(settings or {}, sort_keys=True)}
    if not study.user_attrs:
        for key, value in wanted.items():
            study.set_user_attr(key, value)
    elif study.user_attrs != wanted:
        diff = {k: (study.user_attrs.get(k), v) for k, v in wanted.items() if study.user_attrs.get(k) != v}
        raise ConfigError(f"{study_dir / DB}: the study was made for other settings (stored, asked: {diff}); "
                          f"remove {study_dir} to start it afresh")
    return study


def _claim(study: optuna.Study, index: int, space: dict[str, Range]) -> optuna.trial.FrozenTrial | int:
    """The trial of `index`: the stored one (with its params), else a newly asked one's number.
    Trials left RUNNING without an index or with params missing were killed while being asked
    (under the lock, so by no live process): they are marked failed first."""
    from optuna.trial import TrialState  # here: optuna only for the tuning commands (start-up time)

    mine = None
    for t in study.get_trials(deepcopy=False):
        complete = set(t.params) == set(space)
        if t.state == TrialState.RUNNING and ("index" not in t.user_attrs or not complete):
            study.tell(t.number, state=TrialState.FAIL)
        elif t.user_attrs.get("index") == index and complete:
            mine = t
    if mine is not None:
        return mine
    trial = study.ask()
    trial.set_user_attr("index", index)
    suggest(trial, space)
    return trial.number


def trial_dir(study_dir: Path, index: int, fold: int, folds: int) -> Path:
    """The run folder of fold `fold` of trial `index`: `trialN/` with one fold, else `trialN/foldF/`."""
    return study_dir / f"trial{index}" if folds == 1 else study_dir / f"trial{index}" / f"fold{fold}"


def fold_mean(scores: dict[int, float | None]) -> float | None:
    """A trial's k-fold score: the mean of its folds' scores; None if any fold diverged."""
    if any(v is None for v in scores.values()):
        return None
    return float(np.mean([scores[f] for f in sorted(scores)]))


def run_trial(study_dir: str | Path, spec: Spec, index: int, *, root: str | Path,
              overrides: dict[str, Any], fold: int = 0) -> dict[str, Any]:
    """Fold `fold` of trial `index` (the whole trial with one fold): claimed, trained (or resumed)
    on the training classes less validation fold `fold`, scored on that fold; the trial is told to
    the study once all its folds are scored. Writes the fold's `trial.json`."""
    # here: optuna, and the trainer with its data pipeline, only when a trial trains (the plan imports this module)
    from optuna.trial import TrialState

    from hdml.train.trainer import train_run

    study_dir = Path(study_dir)
    if index < 0:
        raise ValueError(f"trial index must be >= 0, got {index}")
    if not 0 <= fold < spec.folds:
        raise ValueError(f"fold {fold} of a study scored on {spec.folds} fold(s): expected 0..{spec.folds - 1}")
    base = {**overrides, "selection": "val", "selection_metric": spec.metric}
    space = check_space(spec.method, get_dataset(spec.dataset).defaults_for(spec.method), base)
    with locked(study_dir):
        study = open_study(study_dir, spec, index, base)
        claimed = _claim(study, index, space)
        frozen = claimed if not isinstance(claimed, int) else study.trials[claimed]
    out = trial_dir(study_dir, index, fold, spec.folds)
    params = dict(frozen.params)
    record = {"dataset": spec.dataset, "method": spec.method, "index": index, "number": frozen.number,
              "metric": spec.metric, "params": params}
    if spec.folds > 1:
        record["fold"] = fold
    stored = _fold_record(out, frozen.number)
    if stored is not None:  # this fold was scored before (its trial may still wait for other folds)
        outcome, value = stored["outcome"], stored["value"]
    elif frozen.state == TrialState.COMPLETE and spec.folds == 1:  # with folds: the mean, not this fold's score
        log.info("trial %d (number %d): already complete", index, frozen.number)
        outcome, value = "complete", frozen.value
    elif frozen.state == TrialState.FAIL:  # with folds: another fold diverged, so this one need not train
        outcome, value = "diverged" if spec.folds == 1 else "skipped", None
    else:
        log.info("trial %d (number %d), fold %d: %s", index, frozen.number, fold, params)
        value = _finished_score(out, params)  # killed between training and telling: no need to train again
        outcome = "complete"
        if value is None:
            fold_set = {"val_fold": fold} if spec.folds > 1 else {}
            try:
                result = train_run(root=root, dataset=spec.dataset, method=spec.method, seed=spec.seed, out=out,
                                   overrides={**base, **fold_set, **params, **BLIND})
                value = float(result["selection"]["score"])
            except TrainingDiverged as exc:  # a diverging setting is a result of the search, not a failed job
                log.warning("trial %d diverged: %s", index, exc)
                outcome = "diverged"
    record.update(outcome=outcome, value=value)
    with locked(study_dir):
        write_json(out / TRIAL, record)
        study = open_study(study_dir, spec, index, base)
        _finish(study, study_dir, index, spec.folds)
    return record


def _fold_record(out: Path, number: int) -> dict[str, Any] | None:
    """The fold record in `out` written for trial `number`, if there is one."""
    try:
        record = json.loads((out / TRIAL).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("number") == number and "outcome" in record else None


def _finish(study: optuna.Study, study_dir: Path, index: int, folds: int) -> dict[str, Any] | None:
    """Tell the study trial `index`'s score once every fold has its record (under `locked`): the
    mean of the fold scores, or a failure if any fold diverged; with several folds, also
    `trialN/trial.json` (every fold's score, and the mean). Returns the trial's record if told."""
    from optuna.trial import TrialState  # here: optuna only for the tuning commands (start-up time)

    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("index") == index
            and t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAIL)]
    if not mine:
        return None
    trial = mine[-1]
    records = {f: _fold_record(trial_dir(study_dir, index, f, folds), trial.number) for f in range(folds)}
    if any(r is None for r in records.values()):
        return None
    scores = {f: r["value"] if r["outcome"] == "complete" else None for f, r in records.items()}
    value = fold_mean(scores)
    if trial.state == TrialState.RUNNING:
        if value is None:
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            study.tell(trial.number, value)
    summary = {**{k: v for k, v in records[0].items() if k != "fold"}, "folds": scores,
               "outcome": "complete" if value is not None else "diverged", "value": value}
    if folds > 1:
        write_json(study_dir / f"trial{index}" / TRIAL, summary)
    return summary


def _finished_score(out: Path, params: dict[str, Any]) -> float | None:
    """The validation score of a finished run in `out` trained with `params`, if there is one."""
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        same = all(lookup(cfg, key) == value for key, value in params.items())
        score = metrics["selection"]["score"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return None
    if not isinstance(score, (int, float)) or isinstance(score, bool):  # a damaged metrics.json: train again
        return None
    return float(score) if same else None


def write_best(study_dir: str | Path, trials: int, out: str | Path | None = None) -> dict[str, Any]:
    """`best.yaml`: the complete trial of index < `trials` with the highest score (ties: the
    lower index), its settings under `set`. Every index must be finished (complete or diverged)."""
    # here: optuna only for the tuning commands (start-up time)
    import optuna
    from optuna.trial import TrialState

    study_dir = Path(study_dir)
    if trials < 1:
        raise ValueError(f"--trials {trials}: a study's budget is at least one trial")
    if not (study_dir / DB).is_file():
        raise FileNotFoundError(f"{study_dir / DB}: no study; run `hdml tune trial` first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with locked(study_dir), readable(study_dir / DB):
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{(study_dir / DB).resolve()}")
        except KeyError:
            raise ValueError(f"{study_dir / DB}: holds no study of `hdml tune trial`") from None
        attrs = study.user_attrs
        if not {"dataset", "method", "metric"} <= set(attrs):
            raise ValueError(f"{study_dir / DB}: not a study of `hdml tune trial` (no dataset, method and metric)")
        folds = int(attrs.get("folds", 1))
        for index in range(trials):  # a trial whose last fold's job died before telling the study
            _finish(study, study_dir, index, folds)
        records = study.get_trials(deepcopy=False)
    keys = set(search_space(attrs["method"]))
    done = {t.user_attrs["index"]: t for t in records if t.state in (TrialState.COMPLETE, TrialState.FAIL)
            and t.user_attrs.get("index", trials) < trials and set(t.params) == keys}
    missing = sorted(set(range(trials)) - set(done))
    if missing:
        raise ValueError(f"{study_dir}: trial(s) {missing} of {trials} not finished; run them first")
    complete = {i: t for i, t in done.items() if t.state == TrialState.COMPLETE}
    if not complete:
        raise ValueError(f"{study_dir}: all {trials} trials diverged; nothing to choose")
    index = max(complete, key=lambda i: (complete[i].value, -i))
    best = complete[index]
    result = {"dataset": attrs["dataset"], "method": attrs["method"], "metric": attrs["metric"], "trials": trials,
              "folds": folds, "index": index, "number": best.number, "value": float(best.value),
              "scores": {i: float(t.value) if t.state == TrialState.COMPLETE else None
                         for i, t in sorted(done.items())},
              "set": dict(best.params)}
    write_text(Path(out) if out else study_dir / BEST, yaml.safe_dump(result, sort_keys=False))
    return result


def read_best(path: str | Path, dataset: str, method: str) -> dict[str, Any]:
    """The `set` of a best.yaml written for this dataset and method (another's is an error)."""
    best = read_yaml(path)
    if "set" not in best or not isinstance(best["set"], dict):
        raise ConfigError(f"{path}: no `set` mapping; not a best.yaml of `hdml tune best`")
    if (best.get("dataset"), best.get("method")) != (dataset, method):
        raise ConfigError(f"{path}: tuned for {best.get('dataset')}/{best.get('method')}, not {dataset}/{method}")
    space = search_space(method)
    outside = sorted(set(map(str, best["set"])) - set(space))
    if outside:  # best.yaml carries the tuned point only; anything else would pass unseen by the study
        raise ConfigError(f"{path}: `set` holds {', '.join(outside)}, outside {method}'s search space "
                          f"({', '.join(sorted(space)) or 'none'})")
    return best["set"]
