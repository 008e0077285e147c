"""Smaller command-line behaviours: `hdml metrics` on a run's embeddings.npz with explicit
normalisation, and `hdml train` by hand taking (or naming) the workflow config's settings."""
from pathlib import Path

import numpy as np
import pytest

from hdml.cli import main
from hdml.eval.evaluate import save_npz
from hdml.eval.metrics import evaluate, l2_normalise

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def embeddings(tmp_path):
    """2-d points of 4 classes around the circle, rows scaled by factors 0.1-10: normalising moves
    neighbours, so scored as given they rank otherwise."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    angles = labels * np.pi / 2 + rng.normal(0, 0.5, len(labels))
    z = (np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(0.1, 10, (len(labels), 1))).astype(np.float32)
    np.save(tmp_path / "e.npy", z)
    np.save(tmp_path / "l.npy", labels)
    save_npz(tmp_path / "embeddings.npz", embeddings=z, labels=labels)
    return tmp_path, z, labels


def metrics_cli(capsys, *args: str) -> tuple[dict, str]:
    import json

    assert main(["metrics", *args]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def test_metrics_reads_a_runs_embeddings_npz_as_the_npy_pair(embeddings, capsys):
    folder, z, labels = embeddings
    from_npz, note = metrics_cli(capsys, "--embeddings", str(folder / "embeddings.npz"))
    from_npy, _ = metrics_cli(capsys, "--embeddings", str(folder / "e.npy"), "--labels", str(folder / "l.npy"))
    assert from_npz == from_npy == evaluate(l2_normalise(z), labels, [1, 2, 4, 8])
    assert "L2-normalising the embeddings" in note


def test_metrics_normalisation_is_a_flag_and_said(embeddings, capsys):
    folder, z, labels = embeddings
    normalised, _ = metrics_cli(capsys, "--embeddings", str(folder / "embeddings.npz"))
    raw, note = metrics_cli(capsys, "--embeddings", str(folder / "embeddings.npz"), "--no-normalise")
    assert "not normalised" in note
    assert raw == evaluate(z, labels, [1, 2, 4, 8], normalise=False)
    assert raw["recall@1"] != normalised["recall@1"]  # the scaling matters here, so the flag does


def test_metrics_npz_refuses_separate_labels(embeddings, capsys):
    folder, _, _ = embeddings
    assert main(["metrics", "--embeddings", str(folder / "embeddings.npz"), "--labels", str(folder / "l.npy")]) == 2
    assert "an .npz holds its labels" in capsys.readouterr().err
    assert main(["metrics", "--embeddings", str(folder / "e.npy")]) == 2
    assert "--labels is needed" in capsys.readouterr().err


@pytest.fixture()
def trained(monkeypatch):
    """hdml train's overrides as they reach the trainer (no training)."""
    import hdml.train.trainer

    seen = {}

    def fake_train_run(**kwargs):
        seen.update(kwargs)
        return {"metrics": {}}

    monkeypatch.setattr(hdml.train.trainer, "train_run", fake_train_run)
    monkeypatch.chdir(REPO)  # beside config/config.yaml and config/digits.yaml, as a user of the checkout
    return seen


def test_train_by_hand_names_the_workflow_settings_it_does_not_use(trained, tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--method", "npair", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert trained["overrides"] == {}
    assert "note: config/digits.yaml sets " in err and "lr=0.001" in err and "batch_size=10" in err
    assert "Pass --config config/digits.yaml" in err
    main(["train", "--dataset", "digits", "--method", "npair", "--out", str(tmp_path / "r"), "--set", "lr=0.01"])
    err = capsys.readouterr().err
    assert "lr=" not in err and "steps=200" in err  # what --set gives is not listed


def test_train_config_option_takes_the_workflow_settings_under_set(trained, tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--method", "hdml-npair", "--out", str(tmp_path / "r"),
                 "--config", "config/digits.yaml", "--set", "steps=5"]) == 0
    assert "note:" not in capsys.readouterr().err
    got = trained["overrides"]
    assert got["lr"] == 1e-3 and got["batch_size"] == 10 and got["steps"] == 5 and got["hdml"] == {"block": 8}


def test_train_config_without_the_dataset_is_an_error(trained, tmp_path, capsys):
    assert main(["train", "--dataset", "cub200", "--method", "npair", "--out", str(tmp_path / "r"),
                 "--config", "config/config.yaml"]) == 2
    assert "config/config.yaml: no dataset 'cub200' under datasets (it has glyphs)" in capsys.readouterr().err
