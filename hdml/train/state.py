"""The resumable state of one training run: everything a checkpoint holds, in one object.

`TrainState.state_dict()` is exactly what `hdml.train.checkpoint.save` writes and
`load_state_dict` what a resume reads back, so the keys of a checkpoint file are listed once,
here: `model`, `method` (the method's optimisers and parts), `sample_gen` and `augment_gen` (the
loader's generators as they were right after the last trained batch was drawn, since the
loader draws ahead), `torch_rng`, `curve`, `losses`, `bad_streak`, `elapsed` and `data_wait`
(seconds so far, over every process of the run), `fingerprint` and `chosen` (the selection's
best point). `checkpoint.save` adds `step`. The layout is that of checkpoints written before
this class existed, which therefore still resume.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from hdml.eval import selection


class Stateful(Protocol):
    """A method runner as far as the checkpoint is concerned (`hdml.methods.base`)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainState:
    """Model, method, generators, curve, losses, divergence streak, selection and timers of a run
    at the end of step `step` (0: nothing trained yet)."""

    def __init__(self, model: nn.Module, method: Stateful, sample_gen: torch.Generator,
                 augment_gen: torch.Generator, fingerprint: str) -> None:
        self.model, self.method = model, method
        self.sample_gen, self.augment_gen = sample_gen, augment_gen
        self.fingerprint = fingerprint  # dataset, method, seed and run config: what a checkpoint must match
        self.step = 0
        self.curve: list[dict[str, Any]] = []  # one row per evaluation
        self.losses: list[dict[str, float]] = []  # one row per step
        self.bad_streak = 0  # consecutive steps with a non-finite loss
        self.chosen = selection.Best()  # the reported point, unless `selection: last`
        self.elapsed = 0.0  # training seconds of earlier processes of this run
        self.data_wait = 0.0  # of which waiting for batches
        self.batch_rng = self.generator_states()  # after the latest trained batch's draws
        self.started: float | None = None  # when this process began training (None: not training)
        self.waited: Callable[[], float] = lambda: 0.0  # this process's wait for batches (the loader's)

    def start_clock(self, waited: Callable[[], float]) -> None:
        """Time this process's training from now; `waited()` gives its seconds blocked on batches."""
        self.started, self.waited = time.perf_counter(), waited

    def stop_clock(self) -> None:
        """Training is over: fold this process's seconds into the totals, which then stay fixed
        (evaluation and writing the outputs are not training time)."""
        self.elapsed, self.data_wait = self.train_seconds(), self.wait_seconds()
        self.started, self.waited = None, lambda: 0.0

    def train_seconds(self) -> float:
        return self.elapsed + (0.0 if self.started is None else time.perf_counter() - self.started)

    def wait_seconds(self) -> float:
        return self.data_wait + self.waited()

    def generator_states(self) -> dict[str, torch.Tensor]:
        """The loader's generators now, as `Batch.rng` records them (`hdml.data.loader`)."""
        return {"sample_gen": self.sample_gen.get_state(), "augment_gen": self.augment_gen.get_state()}

    def record_step(self, step: int, logs: dict[str, float], rng: dict[str, torch.Tensor], finite: bool) -> int:
        """Step `step` is done with losses `logs` from a batch drawn leaving the generators at
        `rng`; returns the streak of consecutive non-finite steps."""
        self.step, self.batch_rng = step, rng
        self.losses.append({"step": step, **logs})
        self.bad_streak = 0 if finite else self.bad_streak + 1
        return self.bad_streak

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "method": self.method.state_dict(), **self.batch_rng,
            "torch_rng": torch.get_rng_state(), "curve": self.curve, "losses": self.losses,
            "bad_streak": self.bad_streak, "elapsed": self.train_seconds(),
            "data_wait": self.wait_seconds(), "fingerprint": self.fingerprint, "chosen": self.chosen.state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint (`hdml.train.checkpoint.load_latest`, which checked the
        fingerprint); restores the global torch generator too. `chosen` is absent from
        checkpoints older than the selection modes."""
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.sample_gen.set_state(state["sample_gen"])
        self.augment_gen.set_state(state["augment_gen"])
        torch.set_rng_state(state["torch_rng"])
        self.curve, self.losses, self.bad_streak = state["curve"], state["losses"], state["bad_streak"]
        self.elapsed, self.data_wait = state["elapsed"], state["data_wait"]
        self.chosen = selection.Best.from_state(state.get("chosen"))
        self.step, self.batch_rng = state["step"], self.generator_states()
