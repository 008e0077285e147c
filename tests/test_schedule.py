"""The run's schedule as the authors' loop gates it (hdml/core/schedule.py): stop and halving only at
evaluation steps, per dataset; the resolved run configs of config/paper.yaml and the demo.
bench/authors_schedule.py replays the authors' own loop against these (tests/test_authors_bench.py)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from hdml.core import reference
from hdml.core.config import build_run_config
from hdml.core.schedule import eval_steps, resolve
from hdml.data.datasets import get_dataset
from hdml.methods.optim import backbone_rates
from hdml.workflow.plan import read_workflow_configs, validate_workflow_config

REPO = Path(__file__).resolve().parent.parent


def resolved(configfile: str) -> list[tuple[str, str, str, dict]]:
    """The resolved run configs of a workflow config's runs that train (the untrained reference runs,
    hdml.core.reference, never step: no schedule to resolve)."""
    runs = validate_workflow_config(read_workflow_configs([str(REPO / configfile)]))
    return [(r.dataset, r.method, r.variant,
             build_run_config(get_dataset(r.dataset).defaults_for(r.method), r.overrides, r.method)) for r in runs
            if r.variant != reference.VARIANT]



# Worked by hand from main_npair.py's loop: 500-step cadence to the evaluation at 5,000, then the
# dataset's "epoch"; halving and stop only at evaluation steps.
PAPER = {"cars196": (8000, [5632, 6848]), "cub200": (8004, []), "sop": (9300, [])}


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_config_resolves_the_authors_gated_schedule_per_dataset(dataset):
    runs = [(m, v, cfg) for d, m, v, cfg in resolved("config/paper.yaml") if d == dataset]
    stop, halvings = PAPER[dataset]
    for method, variant, cfg in runs:
        expected = (stop, halvings) if variant != "protocol=paper" else (8000, [5632, 6848])
        assert (cfg["steps"], cfg["lr_milestones"]) == expected, (method, variant)
        if variant != "protocol=paper":  # the stop and every halving are evaluation steps
            assert eval_steps(cfg)[-1] == cfg["steps"] and set(cfg["lr_milestones"]) <= set(eval_steps(cfg))


def test_cub_never_halves_and_cars_halves_twice_in_the_scheduler_itself():
    cfgs = {d: cfg for d, m, v, cfg in resolved("config/paper.yaml") if m == "hdml-npair" and v == "default"}
    cars, cub = backbone_rates(cfgs["cars196"]), backbone_rates(cfgs["cub200"])
    assert len(cars) == 8000 and len(cub) == 8004
    assert set(cub) == {6e-5}
    assert cars[5631] == 7e-5 and cars[5632] == pytest.approx(3.5e-5) and cars[6848] == pytest.approx(1.75e-5)
    assert cars[6847] == pytest.approx(3.5e-5)  # step 6,848 still runs at the rate before it (halved after)


def test_resolution_is_idempotent_and_keeps_non_gated_runs_nominal():
    for _, _, _, cfg in resolved("config/paper.yaml"):
        again = copy.deepcopy(cfg)
        resolve(again)
        assert again == cfg
    nominal = build_run_config({}, {"eval_every": 500, "protocol": "paper", "steps": 8001})
    assert (nominal["steps"], nominal["lr_milestones"]) == (8001, [5632, 6848])
    unevaluated = build_run_config({}, {"steps": 8001})  # eval_every 0: no cadence to gate by
    assert (unevaluated["steps"], unevaluated["lr_milestones"]) == (8001, [5632, 6848])
    late_only = build_run_config({}, {"eval_every": 500, "eval_every_late": 0, "steps": 8001})
    assert (late_only["steps"], late_only["lr_milestones"]) == (8500, [])  # 500-step cadence throughout


@pytest.mark.parametrize(("configfile", "steps", "milestones", "evaluations"), [
    ("config/config.yaml", 150, [120, 135], [30, 60, 90, 120, 135, 150]),
    ("config/digits.yaml", 200, [160, 176], [40, 80, 120, 160, *range(168, 201, 8)]),
])
def test_demos_halve_at_their_evaluation_steps_and_keep_their_steps(configfile, steps, milestones, evaluations):
    for _, method, variant, cfg in resolved(configfile):
        if cfg["protocol"] == "code" and cfg["eval_every"]:
            assert (cfg["steps"], cfg["lr_milestones"]) == (steps, milestones), (method, variant)
    demo = next(cfg for _, m, v, cfg in resolved(configfile) if (m, v) == ("hdml-npair", "default"))
    assert eval_steps(demo) == evaluations


def test_configs_the_gating_leaves_alone_keep_their_checkpoint_fingerprint(monkeypatch):
    """A run whose schedule the gating does not change (Cars196, the protocol=paper variant, runs
    without periodic evaluation) resolves to the config it had before `hdml.core.schedule`, key for key,
    so its checkpoints (fingerprinted by the resolved config) still resume; CUB's and SOP's change."""
    from hdml.core import schedule

    after = {(d, m, v): cfg for d, m, v, cfg in resolved("config/paper.yaml")}
    monkeypatch.setattr(schedule, "resolve", lambda cfg: None)
    before = {(d, m, v): cfg for d, m, v, cfg in resolved("config/paper.yaml")}
    changed = {key for key in after if after[key] != before[key]}
    assert changed == {(d, m, v) for d, m, v in after if d in ("cub200", "sop") and v != "protocol=paper"}
    assert all(set(after[key]) == set(before[key]) for key in after)  # no key added: only values move


def test_switch_from_step_zero_waits_for_the_first_evaluation():
    """Their `if step >= 5000` runs only inside the evaluation block, so with a switch point of 0 the
    first evaluation still comes at the initial cadence: 5, then every 3."""
    cfg = build_run_config({}, {"steps": 12, "eval_every": 5, "eval_every_late": 3, "eval_late_from": 0,
                                "lr_milestones": [6, 10]})
    assert eval_steps(cfg) == [5, 6, 9, 12] and cfg["lr_milestones"] == [6]
