"""Live progress of one training run, for the person watching and for `hdml status`.

On a terminal: a tqdm bar with step, loss, images/s, the share of time spent waiting for
batches, ETA and the last evaluation. Elsewhere (Snakemake logs, SLURM output files): the same
facts as one plain line every `interval` seconds, so a log stays readable with `less`.

With the run-config key `tensorboard: true`, also TensorBoard event files under `RUN/tensorboard/`
(every step's losses, every evaluation's metrics), if the `tensorboard` package is installed.

`progress.json` in the run folder, rewritten atomically at most every `interval` seconds and
at the end, tells other processes how far the run is (`state`: running, done, failed,
interrupted; the writer's host and pid; `updated`, a Unix time), so `hdml status` can tell a
running run from a dead one without depending on any lock.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from hdml.core.errors import ConfigError, Interrupted
from hdml.core.io import write_json

FILE = "progress.json"
TENSORBOARD_DIR = "tensorboard"
INTERVAL = 30.0  # seconds between plain lines and progress.json updates
SHOWN = ("recall@1", "nmi")  # metrics of the last evaluation shown on the line


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts steps of one run; `step()` after every training step, `evaluated()` after every
    evaluation, `close(state)` at the end (as a context manager: on leaving the loop, by exception
    or not). Rates count this process's steps only, so a resumed run's ETA is not skewed by the
    steps a checkpoint skipped."""

    def __init__(self, out: Path, *, steps: int, start: int, batch_size: int, header: dict[str, Any],
                 stream: TextIO | None = None, interval: float = INTERVAL, bar: bool | None = None,
                 tensorboard: bool = False) -> None:
        self.path, self.steps, self.first, self.batch_size = Path(out) / FILE, steps, start, batch_size
        self.header, self.interval = header, interval
        self.board = tensorboard_writer(Path(out) / TENSORBOARD_DIR) if tensorboard else None
        self.stream = stream if stream is not None else sys.stderr
        self.bar = (bar if bar is not None else self.stream.isatty()) and tqdm(
            total=steps, initial=start - 1, file=self.stream, unit="step", dynamic_ncols=True, leave=True)
        self.started = time.perf_counter()
        self.last_written = -float("inf")
        self.step_done, self.loss = start - 1, float("nan")
        self.data_wait = 0.0
        self.last_eval: dict[str, float] = {}
        self.write("running")

    def facts(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        done = self.step_done - self.first + 1
        rate = done / elapsed if done > 0 and elapsed > 0 else None
        return {
            "step": self.step_done, "steps": self.steps, "loss": self.loss,
            "images_per_second": rate * self.batch_size if rate else None,
            "data_wait_share": self.data_wait / elapsed if elapsed > 0 else 0.0,
            "eta_seconds": (self.steps - self.step_done) / rate if rate else None,
            "last_eval": self.last_eval,
        }

    def line(self) -> str:
        f = self.facts()
        parts = [f"step {f['step']}/{f['steps']}", f"loss {f['loss']:.4g}"]
        if f["images_per_second"] is not None:
            parts.append(f"{f['images_per_second']:.0f} img/s")
        parts.append(f"data wait {100 * f['data_wait_share']:.0f}%")
        if f["eta_seconds"] is not None:
            parts.append(f"ETA {duration(f['eta_seconds'])}")
        if self.last_eval:
            step = int(self.last_eval.get("step", 0))
            shown = ", ".join(f"{k} {self.last_eval[k]:.3f}" for k in SHOWN if k in self.last_eval)
            parts.append(f"eval@{step}: {shown}")
        return " | ".join(parts)

    def step(self, step: int, logs: dict[str, float], data_wait: float) -> None:
        """After a training step: `logs` its losses, `data_wait` the loader's total wait so far."""
        self.step_done, self.loss, self.data_wait = step, logs["loss"], data_wait
        if self.board:
            for name, value in logs.items():
                self.board.add_scalar(f"train/{name}", value, step)
        now = time.perf_counter()
        due = now - self.last_written >= self.interval
        if self.bar:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(self.line().split(" | ", 1)[1], refresh=False)
        elif due:
            print(self.line(), file=self.stream, flush=True)
        if due:
            self.write("running")

    def evaluated(self, step: int, row: dict[str, float]) -> None:
        self.last_eval = {"step": step, **{k: v for k, v in row.items() if k in SHOWN}}
        if self.board:
            for name, value in row.items():
                if name != "step" and not name.startswith("train_"):
                    self.board.add_scalar(f"test/{name}", value, step)
        if not self.bar:
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Leaving the training loop: `training-done` (evaluation and outputs follow), or why not."""
        if exc is None:
            self.close("training-done")
        else:
            self.close("interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed",
                       f"{type(exc).__name__}: {exc}")

    def close(self, state: str, error: str | None = None) -> None:
        """The run's final state: done, failed (with `error`) or interrupted."""
        if self.bar:
            self.bar.close()
            self.bar = False
        if self.board:
            self.board.close()
            self.board = None
        self.write(state, error)

    def write(self, state: str, error: str | None = None) -> None:
        self.last_written = time.perf_counter()
        record = {**self.header, **self.facts(), "state": state, "host": socket.gethostname(), "pid": os.getpid(),
                  "updated": time.time()}
        if error:
            record["error"] = error
        write_json(self.path, _finite(record))


def _finite(obj: Any) -> Any:
    """NaN/inf as null, so progress.json is strict JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def record_failure(out: Path, header: dict[str, Any], exc: BaseException) -> None:
    """progress.json for a run that failed before its training loop reported anything itself
    (bad config, missing data), so `hdml status` need not wait for its log to go stale."""
    if not Path(out).is_dir():  # failed before the run folder was made: nothing to report on
        return
    record = read(out)
    if record is not None and record.get("state") in ("failed", "interrupted"):
        return
    state = "interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed"
    base = record or {**header, "step": 0, "steps": None}
    write_json(Path(out) / FILE, _finite({**base, "state": state, "error": f"{type(exc).__name__}: {exc}",
                                          "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time()}))


def tensorboard_writer(folder: Path) -> Any:
    """torch's SummaryWriter into `folder`; a clear error when the tensorboard package is missing
    (it is optional: `pip install tensorboard`)."""
    try:
        # here: an optional package (`pip install tensorboard`), imported only when asked for
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: true needs the tensorboard package: pip install tensorboard "
                          "(or pip install -e '.[tensorboard]'), or set tensorboard: false") from None
    return SummaryWriter(log_dir=str(folder))


STATES = ("running", "training-done", "done", "failed", "interrupted")
# What `write` puts in a record, as the readers need it: key -> (types, required).
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "state": ((str,), True), "host": ((str,), True), "pid": ((int,), True), "updated": ((int, float), True),
    "step": ((int, type(None)), False), "steps": ((int, type(None)), False),
    "eta_seconds": ((int, float, type(None)), False), "error": ((str,), False)}


def check(record: Any, path: Path) -> dict[str, Any]:
    """A progress record as `write` makes it; a ValueError naming `path` and what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"{path}: must be a JSON object, not {type(record).__name__}")
    for key, (types, required) in FIELDS.items():
        if key not in record:
            if required:
                raise ValueError(f"{path}: no {key!r}")
            continue
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"{path}: {key} = {value!r} is not {' or '.join(t.__name__ for t in types)}")
    if record["state"] not in STATES:
        raise ValueError(f"{path}: state {record['state']!r} is not one of {', '.join(STATES)}")
    if record["pid"] <= 0:
        raise ValueError(f"{path}: pid {record['pid']} is not a process id")
    if not math.isfinite(record["updated"]):
        raise ValueError(f"{path}: updated = {record['updated']!r} is not a time")
    return record


def read_checked(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's progress.json, checked (`check`); None when there is none."""
    path = Path(run_dir) / FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return check(record, path)


def read(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's progress.json, or None when there is none or it is unreadable or malformed."""
    try:
        return read_checked(run_dir)
    except ValueError:
        return None
