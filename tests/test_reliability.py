"""Preemption and failure: killed runs resume to identical results, bad runs write nothing."""
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hdml.core.errors import Interrupted, TrainingDiverged
from hdml.train.trainer import train_run

# Several tests make an interruption from a finished run (metrics.json and the newest
# checkpoints removed), so finished runs keep their checkpoints here.
SETS = {"steps": 120, "batch_size": 10, "lr": 1e-3, "eval_every": 40, "device": "cpu", "checkpoint_every": 7,
        "embedding_dim": 16, "keep_finished_checkpoints": True}


def train_cmd(root: Path, out: Path, method: str = "npair", **extra) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in {**SETS, **extra}.items()]
    return [sys.executable, "-m", "hdml.cli", "train", "--dataset", "digits", "--method", method, "--seed", "0",
            "--root", str(root), "--out", str(out), *sets]


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, min_step: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.stem.split("-")[1]) for p in (out / "ckpt").glob("step-*.pt")]
        if steps and max(steps) >= min_step:
            return True
        time.sleep(0.002)
    return False


@pytest.fixture(scope="module")
def reference(digits_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(train_cmd(digits_root, out), check=True, capture_output=True)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_identical(digits_root, tmp_path, reference):
    rng = random.Random(1234)
    kills = 0
    for target in sorted(rng.sample(range(1, 110), 3)):
        proc = subprocess.Popen(train_cmd(digits_root, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait_for_checkpoint(tmp_path, proc, target):
            time.sleep(rng.uniform(0, 0.05))  # land anywhere between checkpoints
            proc.send_signal(signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
        else:
            proc.wait()
        assert not (kills and (tmp_path / "metrics.json").exists() and proc.returncode == -signal.SIGKILL)
    assert kills >= 2, "the test must really interrupt runs"
    done = subprocess.run(train_cmd(digits_root, tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["metrics"] == reference["metrics"]


@pytest.mark.slow
def test_sigterm_checkpoints_exits_nonzero_and_resumes(digits_root, tmp_path, reference):
    proc = subprocess.Popen(train_cmd(digits_root, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert wait_for_checkpoint(tmp_path, proc, 14)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75 and "checkpoint written" in err
    assert not (tmp_path / "metrics.json").exists()
    resumed = subprocess.run([*train_cmd(digits_root, tmp_path)[:3], "-v", *train_cmd(digits_root, tmp_path)[3:]],
                             capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == reference["metrics"]


def test_truncated_newest_checkpoint_falls_back(digits_root, tmp_path, caplog):
    # In-process (one thread, see conftest): compared with its own uninterrupted run, since
    # float sums, hence results, depend on the thread count.
    overrides = {**SETS, "steps": 120}
    first = train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path, overrides=overrides)
    ckpts = sorted((tmp_path / "ckpt").glob("step-*.pt"))
    assert [p.name for p in ckpts] == ["step-00000112.pt", "step-00000119.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])
    (tmp_path / "metrics.json").unlink()
    with caplog.at_level("INFO"):
        result = train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path,
                           overrides=overrides)
    assert "step-00000119.pt: unreadable checkpoint" in caplog.text and "step-00000112.pt" in caplog.text
    assert result["metrics"] == first["metrics"]


def test_nan_losses_stop_the_run_without_metrics(digits_root, tmp_path):
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train_run(root=digits_root, dataset="digits", method="triplet", seed=0, out=tmp_path,
                  overrides={**SETS, "lr": 1e30, "max_bad_steps": 3, "batch_size": 30})
    assert not (tmp_path / "metrics.json").exists()


def test_nan_via_cli_exit_code_and_message(digits_root, tmp_path):
    done = subprocess.run(train_cmd(digits_root, tmp_path, method="triplet", lr="1e30", max_bad_steps=3,
                                    batch_size=30), capture_output=True, text=True)
    assert done.returncode == 3 and "NaN/infinite loss" in done.stderr
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("bad, key", [("stepz=3", "stepz"), ("hdml.alpha=fast", "hdml.alpha"),
                                      ("backbone=vgg16", "backbone"), ("steps=-4", "steps")])
def test_bad_set_names_the_key_and_writes_nothing(digits_root, tmp_path, bad, key):
    cmd = [sys.executable, "-m", "hdml.cli", "train", "--dataset", "digits", "--method", "npair",
           "--root", str(digits_root), "--out", str(tmp_path / "run"), "--set", bad]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and f"error: {key}" in done.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_method_and_dataset(digits_root, tmp_path):
    for args, word in ((["--dataset", "digits", "--method", "magic"], "magic"),
                       (["--dataset", "mnist", "--method", "npair"], "mnist")):
        cmd = [sys.executable, "-m", "hdml.cli", "train", *args, "--root", str(digits_root), "--out", str(tmp_path)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 2 and word in done.stderr


def test_checkpoints_of_another_config_are_not_resumed(digits_root, tmp_path, caplog):
    """A config change reruns a run in the same folder: it must start over, not resume."""
    train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path, overrides=SETS)
    (tmp_path / "metrics.json").unlink()
    changed = {**SETS, "lr": 5e-4}
    rerun = train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path, overrides=changed)
    fresh = train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path / "fresh",
                      overrides=changed)
    assert "written with another run config" in caplog.text
    assert rerun["metrics"] == fresh["metrics"]


def interrupt_before_the_end(out: Path) -> None:
    """What a kill between the last two checkpoints leaves: no metrics, an older checkpoint."""
    (out / "metrics.json").unlink()
    sorted((out / "ckpt").glob("step-*.pt"))[-1].unlink()


def test_resume_with_a_trainable_loss_is_identical(digits_root, tmp_path, monkeypatch):
    """Proxy-Anchor's proxies and their Adam moments live in the checkpoint: resuming gives the
    uninterrupted run's losses and metrics; a resume that forgets the proxies does not."""
    import pandas as pd
    import torch

    from baselines.proxyanchor import ProxyAnchorLoss

    overrides = {**SETS, "steps": 30, "eval_every": 0}
    run = dict(root=digits_root, dataset="digits", method="proxyanchor", seed=0, overrides=overrides)
    whole = train_run(out=tmp_path / "whole", **run)
    out = tmp_path / "resumed"
    train_run(out=out, **run)
    interrupt_before_the_end(out)
    state = torch.load(sorted((out / "ckpt").glob("step-*.pt"))[-1], weights_only=True)
    assert state["step"] == 21 and state["method"]["parts"]["loss"]["proxies"].shape == (5, 16)
    assert train_run(out=out, **run)["metrics"] == whole["metrics"]
    assert pd.read_csv(out / "losses.csv").equals(pd.read_csv(tmp_path / "whole" / "losses.csv"))

    interrupt_before_the_end(out)
    monkeypatch.setattr(ProxyAnchorLoss, "load_state_dict", lambda self, *args, **kwargs: None)
    train_run(out=out, **run)
    assert not pd.read_csv(out / "losses.csv").equals(pd.read_csv(tmp_path / "whole" / "losses.csv"))


def test_adding_a_loss_keeps_other_runs_checkpoints(digits_root, tmp_path, monkeypatch, caplog):
    """A run config holds only its method's sections, so a new plug-in leaves the fingerprint of
    a half-finished run alone and the run resumes."""
    from hdml.core.registry import LOSSES, MetricLoss

    class Extra(MetricLoss):
        name = "extra"
        defaults = {"scale": 1.0}

    overrides = {**SETS, "steps": 30, "eval_every": 0}
    first = train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path, overrides=overrides)
    interrupt_before_the_end(tmp_path)
    monkeypatch.setitem(LOSSES, "extra", Extra)
    with caplog.at_level("INFO"):
        resumed = train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path,
                            overrides=overrides)
    assert "resuming from" in caplog.text and "another run config" not in caplog.text
    assert resumed["metrics"] == first["metrics"]


def test_finished_run_deletes_its_checkpoints_an_interrupted_one_resumes(digits_root, tmp_path, monkeypatch, caplog):
    """By default (keep_finished_checkpoints false) a finished run keeps only what evaluation
    and the report read; a run interrupted (SIGTERM at step 12) keeps its checkpoints and resumes."""
    import os

    from hdml.train.progress import Progress

    overrides = {"steps": 20, "batch_size": 10, "lr": 1e-3, "eval_every": 10, "device": "cpu",
                 "checkpoint_every": 5, "embedding_dim": 16}
    run = dict(root=digits_root, dataset="digits", method="npair", seed=0, overrides=overrides)
    whole = train_run(out=tmp_path / "whole", **run)
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == [
        ".lock", "config.yaml", "curve.csv", "embeddings.npz", "losses.csv", "metrics.json", "model.pt",
        "progress.json"]

    step = Progress.step

    def sigterm_at_12(self, n, *args):
        step(self, n, *args)
        if n == 12:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(Progress, "step", sigterm_at_12)
    with pytest.raises(Interrupted):
        train_run(out=out, **run)
    monkeypatch.setattr(Progress, "step", step)
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["step-00000010.pt", "step-00000012.pt"]
    assert not (out / "metrics.json").exists()
    with caplog.at_level("INFO", "hdml.train.checkpoint"):
        resumed = train_run(out=out, **run)
    assert "resuming from" in caplog.text and resumed["metrics"] == whole["metrics"]
    assert not (out / "ckpt").exists()
