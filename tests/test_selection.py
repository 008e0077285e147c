"""Which checkpoint a run reports (hdml.eval.selection): the right point of a curve, and a run with
`selection: val` that trains without the validation classes and never chooses by test labels."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import hdml.train.trainer
from hdml.core.config import ConfigError, build_run_config
from hdml.eval.aggregate import aggregate
from hdml.eval.evaluate import evaluate_run
from hdml.eval.selection import Best, selected_step, selection_note
from hdml.train.trainer import train_run

# A fabricated curve: test MAP@R peaks at step 20, validation MAP@R at 30 (tied at 40), NMI at 10.
CURVE = [
    {"step": 10, "map@r": 0.30, "nmi": 0.90, "val_map@r": 0.10},
    {"step": 20, "map@r": 0.50, "nmi": 0.50, "val_map@r": float("nan")},
    {"step": 30, "map@r": 0.40, "nmi": 0.60, "val_map@r": 0.70},
    {"step": 40, "map@r": 0.20, "nmi": 0.70, "val_map@r": 0.70},
    {"step": 50, "map@r": 0.35, "nmi": 0.80, "val_map@r": 0.20},
]


@pytest.mark.parametrize(("selection", "metric", "step"), [
    ("last", "map@r", 50), ("val", "map@r", 30), ("test", "map@r", 20), ("test", "nmi", 10)])
def test_selected_step_of_a_fabricated_curve(selection, metric, step):
    """Ties keep the earlier point; a NaN score is never best."""
    assert selected_step(CURVE, selection, metric) == step


def test_best_keeps_a_copy_of_the_chosen_embeddings():
    best, z = Best(), np.ones((2, 2))
    assert best.offer(5, 0.5, {"step": 5}, z) and not best.offer(6, 0.5, {"step": 6}, z)
    z[:] = 7
    assert best.step == 5 and (best.z == 1).all()


def test_bad_selection_settings_fail_the_config():
    with pytest.raises(ConfigError, match="selection: must be one of"):
        build_run_config({}, {"selection": "best"}, "triplet")
    with pytest.raises(ConfigError, match=r"selection_metric: 'recall@3' is not computed"):
        build_run_config({}, {"selection_metric": "recall@3"}, "triplet")


TINY = {"steps": 40, "batch_size": 10, "lr": 1e-3, "eval_every": 10, "device": "cpu", "weight_decay": 0.0,
        "embedding_dim": 16, "selection": "val"}


def test_selection_val_trains_without_val_classes_and_reports_the_best_val_point(carved_root, tmp_path,
                                                                                monkeypatch):
    """... and says so in metrics.json, evaluation.json, runs.csv and the report's note."""
    run = tmp_path / "digits" / "triplet" / "fair" / "seed0"
    drawn: list[np.ndarray] = []

    class Recording(hdml.train.trainer.BatchLoader):
        def __next__(self):
            batch = super().__next__()
            drawn.append(self.images.labels[batch.index])
            return batch

    monkeypatch.setattr(hdml.train.trainer, "BatchLoader", Recording)
    result = train_run(root=carved_root, dataset="digits", method="triplet", seed=0, out=run, overrides=TINY)
    classes = set(np.concatenate(drawn).tolist())
    assert len(drawn) == 40 and classes == {1, 2, 3}  # never 0 or 4, the validation classes

    curve = pd.read_csv(run / "curve.csv")
    chosen = result["selection"]
    assert chosen["mode"] == "val" and chosen["metric"] == "map@r" and chosen["val_classes"] == [0, 4]
    assert chosen["train_classes"] == 3
    assert chosen["step"] == selected_step(curve.to_dict("records"), "val", "map@r")
    assert chosen["score"] == pytest.approx(curve["val_map@r"].max())
    row = curve.set_index("step").loc[chosen["step"]]
    assert result["metrics"] == pytest.approx({k: row[k] for k in result["metrics"]})  # that point's test metrics
    evaluation = evaluate_run(run)  # the saved embeddings are the chosen point's
    assert evaluation["selection"] == chosen
    assert evaluation["metrics"] == pytest.approx(result["metrics"])
    assert json.loads((run / "metrics.json").read_text())["selection"] == chosen

    aggregate([run], tmp_path / "metrics.csv", tmp_path / "curves.csv", tmp_path / "runs.csv")
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs[["selection", "selection_metric"]].values.tolist() == [["val", "map@r"]]
    text = selection_note(runs)
    assert "1 run(s) report the checkpoint best on validation classes by map@r" in text
    assert "digits/triplet/fair" in text and "less the validation classes" in text
    assert selection_note(runs.assign(selection="last")) == ""


def test_selection_val_never_reads_test_labels(carved_root, tmp_path):
    """The same run with the test labels permuted among the test images chooses the same step by
    the same validation scores, while its test metrics change."""
    split = pd.read_csv(carved_root / "digits" / "split.csv", dtype=str)
    test = split["split"] == "test"
    split.loc[test, "label"] = np.random.default_rng(0).permutation(split.loc[test, "label"].to_numpy())
    permuted = tmp_path / "permuted"
    (permuted / "digits").mkdir(parents=True)
    (permuted / "digits" / "images").symlink_to(carved_root / "digits" / "images")
    split.to_csv(permuted / "digits" / "split.csv", index=False)

    a = train_run(root=carved_root, dataset="digits", method="triplet", seed=2, out=tmp_path / "a", overrides=TINY)
    b = train_run(root=permuted, dataset="digits", method="triplet", seed=2, out=tmp_path / "b", overrides=TINY)
    curve_a, curve_b = pd.read_csv(tmp_path / "a" / "curve.csv"), pd.read_csv(tmp_path / "b" / "curve.csv")
    assert curve_a["val_map@r"].tolist() == curve_b["val_map@r"].tolist()
    assert a["selection"]["step"] == b["selection"]["step"]
    assert not np.allclose(curve_a["map@r"], curve_b["map@r"])  # the test labels did change


def test_selection_test_reports_the_best_test_point_labelled_as_such(digits_root, tmp_path):
    """Without a val split; the authors' procedure, by NMI as their code."""
    result = train_run(root=digits_root, dataset="digits", method="triplet", seed=1, out=tmp_path,
                       overrides={**TINY, "selection": "test", "selection_metric": "nmi"})
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert "val_map@r" not in curve and "val_classes" not in result["selection"]
    assert result["selection"]["step"] == int(curve.loc[curve["nmi"].idxmax(), "step"])
    assert result["metrics"]["nmi"] == pytest.approx(curve["nmi"].max())
    assert "test-selected" in result["selection"]["label"] and result["selection"]["train_classes"] == 5


def test_resumed_selection_val_run_reports_the_same_point(carved_root, tmp_path):
    """The chosen point (its embeddings too) lives in the checkpoint, which loads weights-only."""
    overrides = {**TINY, "checkpoint_every": 7, "eval_every": 10, "keep_finished_checkpoints": True}
    run = dict(root=carved_root, dataset="digits", method="triplet", seed=3, overrides=overrides)
    whole = train_run(out=tmp_path / "whole", **run)
    out = tmp_path / "resumed"
    train_run(out=out, **run)
    (out / "metrics.json").unlink()
    sorted((out / "ckpt").glob("step-*.pt"))[-1].unlink()  # a kill after step 28's checkpoint
    state = torch.load(sorted((out / "ckpt").glob("step-*.pt"))[-1], weights_only=True)  # what resuming loads
    assert state["step"] == 28 and state["chosen"]["step"] in (10, 20)
    resumed = train_run(out=out, **run)
    assert resumed["selection"] == whole["selection"] and resumed["metrics"] == whole["metrics"]
    with np.load(out / "embeddings.npz") as a, np.load(tmp_path / "whole" / "embeddings.npz") as b:
        assert np.array_equal(a["embeddings"], b["embeddings"])


def test_paper_protocol_run_is_unchanged_by_a_val_split(carved_root, digits_root, tmp_path):
    """`selection: last` trains on every training class, val included, in split.csv's order:
    the same run as on the dataset prepared without a val split."""
    last = {**TINY, "selection": "last"}
    a = train_run(root=digits_root, dataset="digits", method="triplet", seed=5, out=tmp_path / "a", overrides=last)
    b = train_run(root=carved_root, dataset="digits", method="triplet", seed=5, out=tmp_path / "b", overrides=last)
    assert a["metrics"] == b["metrics"] and "selection" not in a and "selection" not in b
    assert pd.read_csv(tmp_path / "a" / "losses.csv").equals(pd.read_csv(tmp_path / "b" / "losses.csv"))
