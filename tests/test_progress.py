"""Live progress of a run (hdml.train.progress), `hdml status` and the end-of-workflow summary."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hdml.cli import main
from hdml.core.config import ConfigError
from hdml.train import progress
from hdml.workflow.plan import Run
from hdml.workflow.status import STALE, grid_eta, grid_status, render, run_status, summary


def test_plain_lines_off_a_terminal_carry_every_fact(tmp_path):
    stream = io.StringIO()
    with progress.Progress(tmp_path, steps=10, start=1, batch_size=30, header={"method": "npair"}, stream=stream,
                           interval=0) as p:
        for step in range(1, 5):
            time.sleep(0.01)
            p.step(step, {"loss": 0.5 + step, "j_gen": 1.0}, data_wait=0.02)
        p.evaluated(4, {"step": 4, "recall@1": 0.75, "nmi": 0.5, "train_loss": 4.5})
        record = json.loads((tmp_path / "progress.json").read_text())
        assert record["state"] == "running" and record["pid"] == os.getpid()
        assert record["host"] == socket.gethostname() and record["step"] == 4 and record["steps"] == 10
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 5  # one per step (interval 0), one per evaluation
    assert lines[0].startswith("step 1/10 | loss 1.5 | ")
    last = lines[-1]
    for part in ("step 4/10", "loss 4.5", "img/s", "data wait", "ETA 0:0", "eval@4: recall@1 0.750, nmi 0.500"):
        assert part in last
    record = json.loads((tmp_path / "progress.json").read_text())
    assert record["state"] == "training-done" and record["last_eval"] == {"step": 4, "recall@1": 0.75, "nmi": 0.5}
    # 4 steps of >= 10 ms: at most 100 steps/s, 3,000 images/s; 6 steps to go
    assert 0 < record["images_per_second"] <= 3000 and 0 < record["eta_seconds"] < 6
    assert 0 < record["data_wait_share"] <= 1


def test_plain_lines_are_periodic(tmp_path):
    stream = io.StringIO()
    p = progress.Progress(tmp_path, steps=1000, start=1, batch_size=2, header={}, stream=stream, interval=3600)
    for step in range(1, 200):
        p.step(step, {"loss": 1.0}, 0.0)
    assert stream.getvalue() == ""  # nothing due within the interval
    p.close("done")


def test_a_terminal_gets_a_bar(tmp_path):
    stream = io.StringIO()
    p = progress.Progress(tmp_path, steps=10, start=3, batch_size=2, header={}, stream=stream, interval=0, bar=True)
    for step in range(3, 11):
        p.step(step, {"loss": 2.0}, 0.0)
    p.close("done")
    text = stream.getvalue()
    assert "\r" in text and "10/10" in text and "loss 2" in text and "img/s" in text


def test_a_failure_in_the_loop_is_recorded(tmp_path):
    with pytest.raises(RuntimeError):
        with progress.Progress(tmp_path, steps=5, start=1, batch_size=2, header={}, stream=io.StringIO()) as p:
            p.step(1, {"loss": 1.0}, 0.0)
            raise RuntimeError("boom")
    record = progress.read(tmp_path)
    assert record["state"] == "failed" and record["error"] == "RuntimeError: boom" and record["step"] == 1


def test_train_writes_progress_and_plain_lines(digits_root, tmp_path):
    out = subprocess.run([sys.executable, "-m", "hdml.cli", "train", "--dataset", "digits", "--method", "npair",
                          "--root", str(digits_root), "--out", str(tmp_path), "--set", "steps=6",
                          "--set", "eval_every=3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("step ")]
    evaluations = [line for line in lines if "eval@" in line]
    assert [line.split(" | ")[0] for line in evaluations][-2:] == ["step 3/6", "step 6/6"]  # one per evaluation
    assert all("ETA" in line and "img/s" in line for line in lines)
    record = progress.read(tmp_path)
    assert record["state"] == "done" and record["step"] == 6 and record["method"] == "npair"


def test_a_config_error_is_recorded_for_status(digits_root, tmp_path):
    (tmp_path / "run").mkdir()
    assert main(["train", "--dataset", "digits", "--method", "npair", "--root", str(digits_root),
                 "--out", str(tmp_path / "run"), "--set", "steps=-1"]) == 2
    record = progress.read(tmp_path / "run")
    assert record["state"] == "failed" and "steps: must be >= 0" in record["error"]


def test_tensorboard_is_off_by_default_and_writes_events_when_on(digits_root, tmp_path):
    sets = ["--set", "steps=4", "--set", "eval_every=2"]
    base = ["train", "--dataset", "digits", "--method", "npair", "--root", str(digits_root)]
    assert main([*base, "--out", str(tmp_path / "off"), *sets]) == 0
    assert not (tmp_path / "off" / "tensorboard").exists()
    assert main([*base, "--out", str(tmp_path / "on"), *sets, "--set", "tensorboard=true"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "on" / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("test/recall@1")] == [2, 4]
    curve = pd.read_csv(tmp_path / "on" / "curve.csv")
    assert events.Scalars("test/nmi")[-1].value == pytest.approx(curve["nmi"].iloc[-1])


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="tensorboard: true needs the tensorboard package: pip install tensorboard"):
        progress.Progress(tmp_path, steps=1, start=1, batch_size=2, header={}, tensorboard=True)


# --- hdml status ----------------------------------------------------------------------------

RUNS = [Run("digits", m, "default", s) for m in ("npair", "triplet", "lifted") for s in (0, 1)]


def _progress(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"state": "running", "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time(),
              "step": 50, "steps": 100, "eta_seconds": 40.0, **fields}
    (folder / "progress.json").write_text(json.dumps(record))


@pytest.fixture
def results(tmp_path) -> Path:
    """npair both done (100 s, 120 s); triplet seed0 running, seed1 dead; lifted seed0 failed, seed1 pending."""
    results = tmp_path / "results"
    for seed, seconds in ((0, 100.0), (1, 120.0)):
        folder = results / "runs" / f"digits/npair/default/seed{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"train_seconds": seconds}))
    _progress(results / "runs/digits/triplet/default/seed0")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _progress(results / "runs/digits/triplet/default/seed1", pid=int(dead.stdout))
    _progress(results / "runs/digits/lifted/default/seed0", state="failed", error="TrainingDiverged: NaN")
    return results


def test_status_tells_done_running_failed_pending(results):
    states = {s.run.path: s.state for s in grid_status(results, RUNS)}
    assert states == {"digits/npair/default/seed0": "done", "digits/npair/default/seed1": "done",
                      "digits/triplet/default/seed0": "running", "digits/triplet/default/seed1": "failed",
                      "digits/lifted/default/seed0": "failed", "digits/lifted/default/seed1": "pending"}


def test_status_of_another_hosts_run_goes_by_its_age(tmp_path):
    folder = tmp_path / "runs" / RUNS[0].path
    _progress(folder, host="elsewhere", pid=1, updated=time.time() - 60)
    assert run_status(tmp_path, RUNS[0]).state == "running"
    _progress(folder, host="elsewhere", pid=1, updated=time.time() - 2 * STALE)
    assert run_status(tmp_path, RUNS[0]).state == "failed"


def test_a_fresh_log_without_progress_is_a_starting_run(tmp_path):
    log = tmp_path / "logs" / "train" / f"{RUNS[0].path}.log"
    log.parent.mkdir(parents=True)
    log.write_text("loading\n")
    assert run_status(tmp_path, RUNS[0]).detail == "starting"
    os.utime(log, (time.time() - 2 * STALE, time.time() - 2 * STALE))
    failed = run_status(tmp_path, RUNS[0])
    assert failed.state == "failed" and failed.detail == "loading"


def test_grid_eta_spreads_the_remaining_work_over_the_running_runs(results):
    statuses = grid_status(results, RUNS)
    # running: 40 s to go; 3 runs to (re)do at the mean 110 s of finished digits runs; 1 at a time
    assert grid_eta(statuses) == pytest.approx(40 + 3 * 110)
    text = render(statuses)
    assert text.splitlines()[0] == "6 runs: 2 done, 1 running, 2 failed, 1 pending"
    assert "grid ETA: 6:10" in text and "TrainingDiverged: NaN" in text and "killed?" in text


def test_status_cli_reads_the_workflow_config(results, tmp_path, capsys):
    config = {"data_root": "data", "results_dir": str(results), "report_dir": str(tmp_path / "report"),
              "seeds": [0, 1], "datasets": {"digits": {"methods": ["npair", "triplet", "lifted"]}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["status", str(tmp_path / "c.yaml")]) == 0
    # 6 runs and the untrained reference of each seed
    assert capsys.readouterr().out.startswith("8 runs: 2 done, 1 running, 2 failed, 3 pending\n")


def test_summary_names_the_report_the_best_methods_and_the_failures(results, tmp_path):
    rows = [("digits", "npair", "default", s, "recall@1", v) for s, v in ((0, 0.8), (1, 0.9))]
    rows += [("digits", "triplet", "default", 0, "recall@1", 0.7), ("digits", "npair", "alpha=0", 0, "recall@1", 1.0),
             ("digits", "triplet", "default", 0, "nmi", 0.99)]
    frame = pd.DataFrame(rows, columns=["dataset", "method", "variant", "seed", "metric", "value"])
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    report = tmp_path / "report.html"
    report.write_text("<html>")
    text = summary(grid_status(results, RUNS), tmp_path / "metrics.csv", report)
    lines = text.splitlines()
    assert lines[0] == f"report: {report.resolve()}"
    assert lines[1] == ("digits: highest mean recall@1 85.0 (n=2) by N-pair (2 seeds; next Triplet 70.0 (n=1); "
                        "the 95% intervals overlap)")
    assert lines[2] == "failures: 2"
    assert sorted(line.split(":")[0].strip() for line in lines[3:]) == ["digits/lifted/default/seed0",
                                                                       "digits/triplet/default/seed1"]


def test_summary_never_names_the_untrained_reference_as_the_best_method(tmp_path):
    """The reference row (hdml.core.reference) scores what no training does: quoted beside, never ranked."""
    rows = [("digits", m, "default", s, "recall@1", v) for m, vals in
            (("untrained", (0.96, 0.95)), ("npair", (0.8, 0.9)), ("triplet", (0.7, 0.75))) for s, v in enumerate(vals)]
    frame = pd.DataFrame(rows, columns=["dataset", "method", "variant", "seed", "metric", "value"])
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    line = summary([], tmp_path / "metrics.csv", tmp_path / "report.html").splitlines()[1]
    assert line.startswith("digits: highest mean recall@1 85.0") and "by N-pair" in line and "next Triplet" in line
    assert "; the untrained network 95.5" in line


def test_summary_gives_display_names_and_intervals_and_says_when_they_overlap(tmp_path):
    """Proxy-Anchor by its plug-in's name, mean ± the Student-t 95% half-width (scipy, by hand here)."""
    from scipy import stats

    def write(values: dict[str, list[float]]) -> str:
        rows = [("digits", m, "default", s, "recall@1", v) for m, vs in values.items() for s, v in enumerate(vs)]
        pd.DataFrame(rows, columns=["dataset", "method", "variant", "seed", "metric", "value"]).to_csv(
            tmp_path / "metrics.csv", index=False)
        return summary([], tmp_path / "metrics.csv", tmp_path / "report.html").splitlines()[1]

    half = stats.t.ppf(0.975, 2) * np.std([0.90, 0.91, 0.92], ddof=1) / np.sqrt(3)
    line = write({"proxyanchor": [0.90, 0.91, 0.92], "triplet": [0.50, 0.51, 0.52]})
    assert line == (f"digits: highest mean recall@1 91.0 ± {100 * half:.1f} by Proxy-Anchor (3 seeds; "
                    f"next Triplet 51.0 ± {100 * half:.1f})")
    assert write({"proxyanchor": [0.90, 0.70, 0.92], "triplet": [0.80, 0.81, 0.82]}).endswith(
        "the 95% intervals overlap)")
