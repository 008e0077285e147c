"""Where a grid of runs stands, read from the results folder alone: usable while Snakemake runs
(in another terminal) or after it, locally or on a cluster's shared file system.

A run is `done` when its `metrics.json` exists (the trainer writes it last), `running` when its
`progress.json` says so and is fresh (its writer's process is alive, when on this host; else
updated within `STALE` seconds) or when only its training log exists, fresh (the job is
starting), `failed` when `progress.json` records a failure or a running state nobody updates
any more, or when only a stale training log exists, `interrupted` when it was checkpointed on a
signal (a rerun resumes it), and `pending` otherwise. A malformed `metrics.json` or
`progress.json` makes the run `unknown` (saying what is wrong), never an error: status only informs.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdml.train import progress
from hdml.workflow.plan import Run, read_workflow_configs, validate_workflow_config

STALE = 3600.0  # seconds without an update after which a run on another host counts as dead
# (generous: progress.json is not rewritten during an evaluation, minutes on SOP)
STATES = ("done", "running", "interrupted", "failed", "pending", "unknown")


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


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def run_status(results: Path, run: Run, now: float | None = None) -> RunStatus:
    folder = results / "runs" / run.path
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        try:
            record = json.loads(metrics_file.read_bytes())
        except (OSError, ValueError) as exc:
            return RunStatus(run, "unknown", f"{metrics_file}: unreadable ({type(exc).__name__})")
        seconds = record.get("train_seconds") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not (seconds is None or _number(seconds)):
            return RunStatus(run, "unknown", f"{metrics_file}: not a metrics record (a JSON object, train_seconds "
                                             "a number)")
        return RunStatus(run, "done", seconds=seconds)
    try:
        record = progress.read_checked(folder)
    except ValueError as exc:
        return RunStatus(run, "unknown", str(exc))
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


def grid_eta(statuses: list[RunStatus], projected: dict[str, float] | None = None) -> float | None:
    """Rough seconds until every run is done: running runs' own ETAs, plus the mean training time
    of finished runs of the same dataset (else of any) for each run still to go, spread over as
    many runs at once as are running now. With no finished run, `projected` (Run.path -> seconds,
    hdml.workflow.costs) stands in. None when neither tells."""
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
        if guess is None and projected:
            guess = projected.get(s.run.path)
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
    """The trained runs' states: fold models count, the seed folders joining them (hdml.eval.ensemble) do not."""
    now = time.time()
    return [run_status(results, r, now) for r in runs if not r.folds]


def render(statuses: list[RunStatus], verbose: bool = False, projected: dict[str, float] | None = None) -> str:
    """The counts, the grid's ETA (measured; else projected from `projected`, said so) and the
    runs that need a look."""
    counts = Counter(s.state for s in statuses)
    lines = [f"{len(statuses)} runs: " + ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k])]
    eta, source = grid_eta(statuses), ""
    if eta is None and projected:
        eta = grid_eta(statuses, projected)
        source = (" (projected from hdml/resources/costs.yaml, runs only, one at a time: no run has finished "
                  "to measure; `hdml check-config` shows the figures)")
    if counts["done"] < len(statuses):
        lines.append(f"grid ETA: {progress.duration(eta)}{source}" if eta is not None
                     else "grid ETA: unknown until a run of each dataset has finished")
    for s in statuses:
        if s.state in ("running", "failed", "interrupted", "unknown") or (verbose and s.state != "done"):
            extra = f", ETA {progress.duration(s.eta_seconds)}" if s.eta_seconds is not None else ""
            lines.append(f"  {s.state:<11} {s.run.path}  {s.detail}{extra}")
    return "\n".join(lines)


def summary(statuses: list[RunStatus], metrics_csv: Path, report: Path, metric: str = "recall@1") -> str:
    """The end-of-DAG summary: where the report is, each dataset's method with the highest mean
    `metric` over seeds of the main table and the next, by display name with their 95% intervals
    (and whether those overlap: the highest mean is not a winner then), and the runs that did not
    finish."""
    # here: only the end-of-DAG summary reads results (pandas, the report's matplotlib: start-up of `hdml status`)
    from hdml.core import reference
    from hdml.eval.aggregate import METRICS_COLUMNS, read_long
    from hdml.report.names import display
    from hdml.report.stats import ci95
    from hdml.report.table import fmt_mean_ci

    lines = [f"report: {report.resolve()}" if report.is_file() else f"report: not written ({report})"]
    try:
        frame = read_long(metrics_csv, METRICS_COLUMNS) if metrics_csv.is_file() else None
    except ValueError as exc:  # the summary only informs: say what is wrong and go on
        lines.append(f"metrics: {exc}")
        frame = None
    if frame is not None:
        main = frame[(frame["variant"] == "default") & (frame["metric"] == metric)]
        for dataset, rows in main.groupby("dataset"):
            means = (rows.groupby("method")["value"].agg(["mean", "count", ci95])
                     .sort_values("mean", ascending=False))
            untrained = means.loc[reference.NAME] if reference.NAME in means.index else None
            means = means.drop(index=reference.NAME, errors="ignore")  # the reference row is no method
            if means.empty:
                continue
            ranked = [(display(m), r["mean"], r["ci95"], int(r["count"])) for m, r in means.iterrows()]
            name, mean, ci, n = ranked[0]
            line = f"{dataset}: highest mean {metric} {fmt_mean_ci(mean, ci, n)} by {name} ({n} seeds"
            if len(ranked) > 1:
                name2, mean2, ci2, n2 = ranked[1]
                line += f"; next {name2} {fmt_mean_ci(mean2, ci2, n2)}"
                if not mean - ci > mean2 + ci2:  # NaN (too few seeds) counts as overlapping
                    line += "; the 95% intervals overlap"
            if untrained is not None:
                line += (f"; the untrained network "
                         f"{fmt_mean_ci(untrained['mean'], untrained['ci95'], int(untrained['count']))}")
            lines.append(line + ")")
    failed = [s for s in statuses if s.state in ("failed", "interrupted")]
    lines.append(f"failures: {len(failed)}" + "".join(f"\n  {s.run.path}: {s.detail}" for s in failed))
    unknown = [s for s in statuses if s.state == "unknown"]
    if unknown:
        lines.append(f"unknown: {len(unknown)}" + "".join(f"\n  {s.run.path}: {s.detail}" for s in unknown))
    return "\n".join(lines)


def planned(configfiles: list[str]) -> tuple[dict[str, Any], list[Run]]:
    """The merged workflow config of `configfiles` and its runs (checked as Snakemake would)."""
    config = read_workflow_configs(configfiles)
    return config, validate_workflow_config(config, source=", ".join(configfiles))
