"""Atomic, self-validating training checkpoints: the newest readable one wins.

Files are `ckpt/step-NNNNNNNN.pt`, written through a temporary file and a rename, the last
`keep` kept; a finished run removes them all (`discard`) unless told to keep them. Loading
uses `weights_only=True`; a truncated or corrupt file is skipped with a warning and the
previous one used.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from hdml.core.io import write_with

log = logging.getLogger("hdml.train.checkpoint")


def checkpoint_files(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, newest (highest step) first."""
    return sorted(folder.glob("step-*.pt"), reverse=True)


def save(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    path = folder / f"step-{step:08d}.pt"
    write_with(path, lambda p: torch.save({"step": step, **state}, p))
    for old in checkpoint_files(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def discard(folder: Path) -> None:
    """Remove the checkpoint folder of a finished run: nothing resumes a finished run, its final
    weights are in `model.pt`, and each checkpoint (model and optimiser state) is 74-85 MB for
    GoogLeNet."""
    shutil.rmtree(folder, ignore_errors=True)


def load_latest(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The newest checkpoint that loads and was written by a run of the same `fingerprint`
    (dataset, method, seed and run config), or None: a checkpoint of another configuration,
    left in the run folder when the config changed, must never be resumed."""
    for path in checkpoint_files(folder):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a training checkpoint")
        except Exception as exc:  # a truncated zip, a bad pickle: any failure means unusable
            log.warning("%s: unreadable checkpoint (%s); trying the previous one", path, exc)
            continue
        if state.get("fingerprint") != fingerprint:
            log.warning("%s: written with another run config; not resumed, training starts over", path)
            return None
        log.info("resuming from %s", path)
        return state
    return None
