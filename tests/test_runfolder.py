"""A run folder is held by one training process at a time, checked writable before training,
and cleared of temporary files a killed process left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hdml.train.runfolder import LOCK, RunFolderError, claim


def train_cmd(root: Path, out: Path, steps: int) -> list[str]:
    sets = {"steps": steps, "batch_size": 10, "eval_every": 0, "checkpoint_every": 0, "device": "cpu",
            "embedding_dim": 8, "num_workers": 0}
    return [sys.executable, "-m", "hdml.cli", "train", "--dataset", "digits", "--method", "triplet",
            "--root", str(root), "--out", str(out), *[f"--set={k}={v}" for k, v in sets.items()]]


def test_second_training_on_the_same_folder_fails_at_once_naming_the_holder(digits_root, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(train_cmd(digits_root, out, 1_000_000), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while f"pid {first.pid} " not in ((out / LOCK).read_text() if (out / LOCK).exists() else ""):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        while not (out / "config.yaml").exists() or not (out / "progress.json").exists():
            time.sleep(0.05)
        config = (out / "config.yaml").read_text()
        second = subprocess.run(train_cmd(digits_root, out, 3), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert "in use by another training process" in second.stderr and f"pid {first.pid} on" in second.stderr
        assert first.poll() is None  # undisturbed
        assert (out / "config.yaml").read_text() == config and "steps: 1000000" in config
        assert not (out / "metrics.json").exists()
        # the refused process leaves the holder's progress record alone (no "failed" state written)
        assert json.loads((out / "progress.json").read_text()).get("pid") == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the lock of the killed process: no stale lock to clear by hand.
    with claim(out):
        assert f"pid {os.getpid()} on" in (out / LOCK).read_text()


def test_lock_is_exclusive_and_released_on_exit(tmp_path):
    with claim(tmp_path):
        (tmp_path / "ckpt" / ".step-00000010.pt.inprogress.tmp").write_bytes(b"being written")
        with pytest.raises(RunFolderError, match=rf"{tmp_path}: in use .*pid {os.getpid()} on"):
            with claim(tmp_path):
                pass
        # the refused claim removed nothing the holder is writing
        assert (tmp_path / "ckpt" / ".step-00000010.pt.inprogress.tmp").exists()
    with claim(tmp_path):
        pass


def test_stale_temporaries_are_removed_when_a_run_starts(digits_root, tmp_path):
    from hdml.train.trainer import train_run

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    stale = [ckpt / ".step-00000007.pt.k2j3x9.tmp", tmp_path / ".model.pt.a8d7f1.tmp",
             tmp_path / ".metrics.json.q1w2e3.tmp"]
    for path in stale:
        path.write_bytes(b"half a file from a SIGKILLed write")
    kept = [ckpt / "step-00000007.pt", tmp_path / "notes.tmp"]  # not the atomic writer's names
    for path in kept:
        path.write_bytes(b"x")
    train_run(root=digits_root, dataset="digits", method="triplet", seed=0, out=tmp_path,
              overrides={"steps": 2, "batch_size": 10, "device": "cpu", "embedding_dim": 8, "checkpoint_every": 0,
                         "keep_finished_checkpoints": True})  # else the finished run deletes ckpt/
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in kept)
    assert (tmp_path / "metrics.json").exists()


@contextmanager
def unprivileged() -> Iterator[None]:
    """Permission bits bind root only through another effective uid (`nobody` here)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_read_only_output_folder_is_an_error_before_training(digits_root, capsys):
    import hdml.train.trainer  # noqa: F401  (imported while still able to read everything)
    from hdml.cli import main

    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        out = base / "run"
        out.mkdir(mode=0o555)
        out.chmod(0o555)
        with unprivileged():
            code = main(["train", "--dataset", "digits", "--method", "triplet", "--root", str(digits_root),
                         "--out", str(out), "--set", "steps=2", "--set", "device=cpu"])
        assert code == 2
        assert f"{out}: output folder not writable (Permission denied); nothing trained" in capsys.readouterr().err
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)
        for p in sorted(base.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        base.rmdir()
