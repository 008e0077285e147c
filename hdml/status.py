"""Where a grid of runs stands, read from the results folder alone: usable while Snakemake runs
(in another terminal) or after it, locally or on a cluster's shared file system.

A run is `done` when its `metrics.json` exists (the trainer writes it last), `running` when its
`progress.json` says so and is fresh (its writer's process is alive, when on this host; else
updated within `STALE` seconds) or when only its training log exists, fresh (the job is
starting), `failed` when `progress.json` records a failure or a running state nobody updates
any more, or when only a stale training log exists, `interrupted` when it was checkpointed on a
signal (a rerun resumes it), and `pending` otherwise.
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdml import progress
from hdml.plan import Run

STALE = 3600.0  # seconds without an update after which a run on another host counts as dead
# (generous: progress.json is not rewritten during an evaluation, minutes on SOP)
STATES = ("done", "running", "interrupted", "failed", "pending")


@dataclass
class RunStatus:
    run: Run
    state: str
    detail: str = ""
    eta_seconds: float | None = None
    seconds: float | None = None  # training time of a done run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(results: Path, run: Run, now: float | None = None) -> RunStatus:
    folder = results / "runs" / run.path
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        try:
            seconds = json.loads(metrics_file.read_text()).get("train_seconds")
        except (OSError, ValueError):
            seconds = None
        return RunStatus(run, "done", seconds=seconds)
    record = progress.read(folder)
    now = time.time() if now is None else now
    if record is None:
        log = results / "logs" / "train" / f"{run.path}.log"
        if not log.is_file():
            return RunStatus(run, "pending")
        if now - log.stat().st_mtime < STALE:
            return RunStatus(run, "running", "starting")
        lines = log.read_text(errors="replace").strip().splitlines()
        return RunStatus(run, "failed", lines[-1] if lines else f"{log}: empty")
    state = record.get("state", "")
    step = f"step {record.get('step')}/{record.get('steps')}"
    if state in ("running", "training-done"):
        if record.get("host") == socket.gethostname():
            alive = _alive(int(record.get("pid", -1)))
        else:
            alive = now - float(record.get("updated", 0)) < STALE
        if alive:
            return RunStatus(run, "running", step, record.get("eta_seconds"))
        return RunStatus(run, "failed", f"stopped at {step} without a word (killed?)")
    if state == "interrupted":
        return RunStatus(run, "interrupted", f"checkpointed at {step}; a rerun resumes")
    if state == "failed":
        return RunStatus(run, "failed", f"{step}: {record.get('error', '')}")
    return RunStatus(run, "pending", f"progress.json state {state!r}")


def grid_eta(statuses: list[RunStatus]) -> float | None:
    """Rough seconds until every run is done: running runs' own ETAs, plus the mean training time
    of finished runs of the same dataset (else of any) for each run still to go, spread over as
    many runs at once as are running now. None when nothing has finished or is running."""
    done = [s for s in statuses if s.state == "done" and s.seconds]
    running = [s for s in statuses if s.state == "running"]
    todo = [s for s in statuses if s.state in ("pending", "interrupted", "failed")]
    if not todo and not running:
        return 0.0
    mean_all = sum(s.seconds for s in done) / len(done) if done else None
    work, unknown = 0.0, False
    for s in todo:
        same = [d.seconds for d in done if d.run.dataset == s.run.dataset]
        guess = sum(same) / len(same) if same else mean_all
        if guess is None:
            unknown = True
        else:
            work += guess
    etas = [s.eta_seconds for s in running if s.eta_seconds is not None]
    if unknown or len(etas) < len(running):
        return None
    parallel = max(len(running), 1)
    return max(max(etas, default=0.0), (sum(etas) + work) / parallel)


def grid_status(results: Path, runs: list[Run]) -> list[RunStatus]:
    """The trained runs' states: fold models count, the seed folders joining them (hdml.ensemble) do not."""
    now = time.time()
    return [run_status(results, r, now) for r in runs if not r.folds]


def render(statuses: list[RunStatus], verbose: bool = False) -> str:
    counts = Counter(s.state for s in statuses)
    lines = [f"{len(statuses)} runs: " + ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k])]
    eta = grid_eta(statuses)
    if counts["done"] < len(statuses):
        lines.append(f"grid ETA: {progress.duration(eta)}" if eta is not None
                     else "grid ETA: unknown until a run of each dataset has finished")
    for s in statuses:
        if s.state in ("running", "failed", "interrupted") or (verbose and s.state != "done"):
            extra = f", ETA {progress.duration(s.eta_seconds)}" if s.eta_seconds is not None else ""
            lines.append(f"  {s.state:<11} {s.run.path}  {s.detail}{extra}")
    return "\n".join(lines)


def summary(statuses: list[RunStatus], metrics_csv: Path, report: Path, metric: str = "recall@1") -> str:
    """The end-of-DAG summary: where the report is, each dataset's best method (mean `metric`
    over seeds of the main table), and the runs that did not finish."""
    import pandas as pd

    lines = [f"report: {report.resolve()}" if report.is_file() else f"report: not written ({report})"]
    if metrics_csv.is_file():
        frame = pd.read_csv(metrics_csv)
        main = frame[(frame["variant"] == "default") & (frame["metric"] == metric)]
        for dataset, rows in main.groupby("dataset"):
            means = rows.groupby("method")["value"].agg(["mean", "count"]).sort_values("mean", ascending=False)
            best, top = means.index[0], means.iloc[0]
            line = (f"{dataset}: best {metric} {100 * top['mean']:.1f} by {best} "
                    f"(mean of {int(top['count'])} seeds")
            if len(means) > 1:
                line += f"; next {means.index[1]} {100 * means.iloc[1]['mean']:.1f}"
            lines.append(line + ")")
    failed = [s for s in statuses if s.state in ("failed", "interrupted")]
    lines.append(f"failures: {len(failed)}" + "".join(f"\n  {s.run.path}: {s.detail}" for s in failed))
    return "\n".join(lines)


def planned(configfiles: list[str]) -> tuple[dict[str, Any], list[Run]]:
    """The merged workflow config of `configfiles` and its runs (checked as Snakemake would)."""
    from hdml.plan import read_workflow_configs, validate_workflow_config

    config = read_workflow_configs(configfiles)
    return config, validate_workflow_config(config, source=", ".join(configfiles))
