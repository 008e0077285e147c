"""When a run evaluates, halves its learning rate and stops: the authors' gating, derived per run.

In the authors' step loop (wzzheng/HDML@fa03ef0, `main_npair.py` and `main_triplet.py`) the
halving (`if step in [5632, 6848]`), the switch to the late cadence (`if step >= 5000`) and
the stop (`if step >= FLAGS.max_steps`) sit *inside* the evaluation block
`if step % bp_epoch == 0`, bp_epoch being `init_batch_per_epoch` until then, `batch_per_epoch`
after. So a halving step that is no evaluation step never halves (CUB's 46-step epochs: neither
5,632 nor 6,848), and the run stops at the first evaluation step at or past `max_steps` (CUB
8,004, products 9,300; Cars196's 64 divides all three). bench/authors_schedule.py replays their
loop and checks the suite against it.

Run-config keys, as the authors' flags: `eval_every` (init_batch_per_epoch), `eval_every_late`
(batch_per_epoch; 0 keeps `eval_every`), `eval_late_from` (the 5,000 of the switch), `steps`
(max_steps) and `lr_milestones` (the halving steps). Under `protocol: code` with a periodic
evaluation (`eval_every` > 0), `resolve` turns the nominal `steps` and `lr_milestones` into the
effective ones (the stop step; the milestones that are evaluation steps up to it), so the
resolved run config (config.yaml, `hdml config`, the checkpoint fingerprint) shows what the run
does, and the trainer and the methods' `lr_schedule` simply follow it. `protocol: paper` (the
paper states no schedule) and runs without periodic evaluation keep the nominal values.
"""
from __future__ import annotations

import math
from typing import Any


def gated(cfg: dict[str, Any]) -> bool:
    """Whether the authors' gating decides this run's schedule."""
    return cfg["protocol"] == "code" and cfg["eval_every"] > 0


def switch_step(cfg: dict[str, Any]) -> int | None:
    """The evaluation step after which the late cadence holds: the first periodic evaluation at
    or past `eval_late_from` (their `if step >= 5000` runs at evaluation steps only); None
    without a late cadence (protocol paper, `eval_every_late` 0, no periodic evaluation)."""
    every, late = cfg["eval_every"], cfg["eval_every_late"]
    if cfg["protocol"] != "code" or not every or not late:
        return None
    return max(1, math.ceil(cfg["eval_late_from"] / every)) * every


def periodic(step: int, cfg: dict[str, Any]) -> bool:
    """Whether `step` (1-based) is a periodic evaluation step: their `step % bp_epoch == 0`."""
    every = cfg["eval_every"]
    if not every:
        return False
    switch = switch_step(cfg)
    if switch is not None and step > switch:
        return step % cfg["eval_every_late"] == 0
    return step % every == 0


def eval_due(step: int, cfg: dict[str, Any]) -> bool:
    """Whether training evaluates on the test split after `step`: at every periodic evaluation
    step and at the last step (under the gating the last step is one of them)."""
    return step == cfg["steps"] or periodic(step, cfg)


def stop_step(cfg: dict[str, Any]) -> int:
    """The step the run ends after: `steps`, or under the gating the first evaluation step at or
    past it."""
    step = cfg["steps"]
    if gated(cfg):
        while not periodic(step, cfg):
            step += 1
    return step


def halving_steps(cfg: dict[str, Any]) -> list[int]:
    """The steps after which the rate is multiplied by `lr_gamma`: the nominal milestones, or
    under the gating those that are evaluation steps not past the stop, each once (`step in
    [...]` is a membership test)."""
    if not gated(cfg):
        return list(cfg["lr_milestones"])
    stop = stop_step(cfg)
    return sorted({m for m in cfg["lr_milestones"] if m <= stop and periodic(m, cfg)})


def resolve(cfg: dict[str, Any]) -> None:
    """Make `steps` and `lr_milestones` the effective ones, in place. Idempotent, so a resolved
    config resolves to itself."""
    cfg["steps"], cfg["lr_milestones"] = stop_step(cfg), halving_steps(cfg)


def eval_steps(cfg: dict[str, Any]) -> list[int]:
    """Every step a run of this (resolved) config evaluates after."""
    return [s for s in range(1, cfg["steps"] + 1) if eval_due(s, cfg)]
