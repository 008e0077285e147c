"""bench/authors_schedule.py: the authors' step-loop control flow, executed, against the suite's
schedule. Without their checkout the harness runs on a loop written here in their loop's shape
(their code is never in this project); with it (HDML_AUTHORS_PATH) on main_npair.py and
main_triplet.py themselves, for the three datasets of config/paper.yaml."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hdml.core import schedule
from hdml.core.config import build_run_config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import authors_schedule  # noqa: E402 (bench/ is not a package)

AUTHORS = os.environ.get("HDML_AUTHORS_PATH")
NEEDS_AUTHORS = pytest.mark.skipif(
    not AUTHORS, reason="needs a checkout of wzzheng/HDML at fa03ef0: "
    "HDML_AUTHORS_PATH=/path/to/HDML python -m pytest tests/test_authors_schedule.py")

# The shape of their loop (state before it, `step += 1`, everything else inside the evaluation
# block), with small numbers: 5-step cadence, 4 after the evaluation at or past 10, halvings at
# 12 and 20, max_steps 22.
TOY_MAIN = """
def main():
    _lr = FLAGS.init_learning_rate
    max_nmi = 0
    step = 0
    bp_epoch = FLAGS.init_batch_per_epoch
    for batch in stream:
        train(lr=_lr)
        step += 1
        if step % bp_epoch == 0:
            nmi_te, f1_te, recalls_te = evaluation.Evaluation(stream_test, 98, neighbours)
            summary_writer.add_summary(tf.Summary(), step)
            if nmi_te > max_nmi:
                max_nmi = nmi_te
                saver.save(sess, os.path.join(LOGDIR, "model.ckpt"))
            if step in [12, 20]:
                _lr = _lr * 0.5
            if step >= 10:
                bp_epoch = FLAGS.batch_per_epoch
            if step >= FLAGS.max_steps:
                os._exit()
"""


def toy(tmp_path: Path, late: int) -> tuple[dict, dict]:
    main = tmp_path / "main.py"
    main.write_text(TOY_MAIN)
    nmi = authors_schedule.nmi_patterns()["seeded, with ties"]
    flags = {"init_learning_rate": 1.0, "init_batch_per_epoch": 5, "batch_per_epoch": late, "max_steps": 22}
    cfg = build_run_config({}, {"steps": 22, "eval_every": 5, "eval_every_late": late, "eval_late_from": 10,
                                "lr_milestones": [12, 20], "lr": 1.0, "lr_gamma": 0.5})
    return authors_schedule.replay(main, flags, nmi), authors_schedule.suite_side(cfg, nmi)


@pytest.mark.parametrize("late, evaluated, rates", [
    (4, [5, 10, 12, 16, 20, 24], [1.0] * 12 + [0.5] * 8 + [0.25] * 4),  # both halvings on evaluation steps
    (3, [5, 10, 12, 15, 18, 21, 24], [1.0] * 12 + [0.5] * 12),  # 20 is no evaluation step: never halved
])
def test_replay_of_a_loop_in_their_shape_matches_the_suite(tmp_path, late, evaluated, rates):
    theirs, ours = toy(tmp_path, late)
    assert theirs["evaluated"] == ours["evaluated"] == evaluated
    assert theirs["rates"] == ours["rates"] == rates
    assert theirs["stop"] == ours["stop"] == 24 and theirs["exit_args"] == ()
    assert theirs["kept"] == ours["kept"] == ours["test_selected"]


def test_replay_tells_a_different_schedule_apart(tmp_path, monkeypatch):
    """The suite before this harness (nominal milestones and stop, whatever the cadence) fails it."""
    monkeypatch.setattr(schedule, "resolve", lambda cfg: None)
    theirs, ours = toy(tmp_path, 3)
    assert theirs["stop"] == 24 and ours["stop"] == 22
    assert theirs["rates"][20] == 0.5 and ours["rates"][20] == 0.25


def test_a_file_without_their_loop_is_refused(tmp_path):
    main = tmp_path / "main.py"
    main.write_text(TOY_MAIN.replace("step += 1", "step = step + 1"))
    with pytest.raises(ValueError, match="0 step counters"):
        authors_schedule.loop_statements(main)


@NEEDS_AUTHORS
def test_the_authors_loop_and_the_suite_agree_per_dataset():
    table = authors_schedule.rows(Path(AUTHORS))
    assert len(table) == 2 * 3 * 4
    assert [r["term"] for r in table if not r["passed"]] == []
    stops = {r["term"]: r["note"] for r in table if r["term"].startswith("stop step")}
    assert "authors 8004" in stops["stop step, cub200, main_npair.py"]
    assert "authors 9300" in stops["stop step, sop, main_triplet.py"]


@NEEDS_AUTHORS
def test_the_authors_loop_fails_the_nominal_schedule(monkeypatch):
    monkeypatch.setattr(schedule, "resolve", lambda cfg: None)
    failed = {r["term"] for r in authors_schedule.rows(Path(AUTHORS)) if not r["passed"]}
    assert "stop step, cub200, main_npair.py" in failed and "lr at every step, sop, main_npair.py" in failed
    assert not any("cars196" in term for term in failed)
