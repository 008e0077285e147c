"""The authors' training schedule, executed: their step loop's own control statements decide the
learning rate at every step, the evaluation steps, the stop step and the kept checkpoint, per
dataset, beside the suite's resolved run configs of config/paper.yaml.

    HDML_AUTHORS_PATH=/path/to/HDML python bench/authors_schedule.py    # or --authors PATH

PATH is a checkout of github.com/wzzheng/HDML at fa03ef0, kept outside this project (it has no
licence), e.g. `git clone https://github.com/wzzheng/HDML && git -C HDML checkout fa03ef0`.
Nothing of it is imported or needs TensorFlow: from `main_npair.py` and `main_triplet.py` the
statements of the step loop are taken with `ast` (the initialisations of `_lr`, `step`,
`bp_epoch`, `max_nmi`; `step += 1`; the whole `if step % bp_epoch == 0:` block, with the
halving, the cadence switch, the stop and the best-NMI save) and executed as they are, the
training step and the evaluation replaced by stubs: the evaluation returns a test NMI that is a
function of the step alone (three patterns: seeded with ties, rising, flat), the saver records
the step it saves at, `os._exit` ends the loop. The flags are their per-dataset values
(`FLAGS_BY_DATASET`). The suite side runs its own code: `hdml.methods.optim.backbone_rates` for the rate,
`hdml.core.schedule.eval_due` for the evaluations, `hdml.eval.selection.Best` (`selection: test`) and
`hdml.eval.evaluate.evaluate_run` (the test-selected number of a `selection: last` run) for the kept
checkpoint, on the config `hdml.workflow.plan` resolves from config/paper.yaml.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from authors_rows import print_table, row  # noqa: E402 (after the path set-up above)
from hdml.core.config import build_run_config  # noqa: E402 (after the path set-up above)
from hdml.core.schedule import eval_due  # noqa: E402 (after the path set-up above)
from hdml.data.datasets import get_dataset  # noqa: E402 (after the path set-up above)
from hdml.eval.evaluate import Embeddings, evaluate_run  # noqa: E402 (after the path set-up above)
from hdml.eval.selection import Best  # noqa: E402 (after the path set-up above)
from hdml.methods.optim import backbone_rates  # noqa: E402 (after the path set-up above)
from hdml.workflow.plan import Run, read_workflow_configs, validate_workflow_config  # noqa: E402 (after the path set-up)

PAPER = REPO / "config" / "paper.yaml"
MAINS = {"main_npair.py": "hdml-npair", "main_triplet.py": "hdml-triplet"}
# The flags each dataset ran with, as the authors' FLAGS.py recommends them (their help strings):
# fa03ef0 FLAGS.py:20-21 (rate 7e-5 cars196, 6e-5 cub200), :30-34 (500, then 64 cars196 / 46 cub200,
# max_steps 8,000); products from e6dfab3 FLAGS.py (rate 2e-5, 4,650 then 465).
FLAGS_BY_DATASET = {
    "cars196": {"init_learning_rate": 7e-5, "init_batch_per_epoch": 500, "batch_per_epoch": 64, "max_steps": 8000},
    "cub200": {"init_learning_rate": 6e-5, "init_batch_per_epoch": 500, "batch_per_epoch": 46, "max_steps": 8000},
    "sop": {"init_learning_rate": 2e-5, "init_batch_per_epoch": 4650, "batch_per_epoch": 465, "max_steps": 8000},
}
NEIGHBOURS = [1, 2, 4, 8, 16, 32]  # FLAGS.py:53, read by the evaluation block's summary loop
LOOP_STATE = ("_lr", "step", "bp_epoch", "max_nmi")
STEP_LIMIT = 100_000  # a replay that never reaches its stop is an error, not a hang


def nmi_patterns() -> dict[str, Any]:
    """Stub test NMIs, functions of the step alone, so both sides see the same value at a step."""
    return {"seeded, with ties": lambda step: round(float(np.random.default_rng(step).uniform(0.3, 0.4)), 2),
            "rising": lambda step: step / 1e5,
            "flat": lambda step: 0.5}


class Anything:
    """Stands for what the evaluation block only reports to (TensorBoard summaries, collectors)."""

    def __getattr__(self, name: str) -> Anything:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Anything:
        return self


class Stopped(Exception):
    """Their `os._exit()` ran. (Without its status argument it raises TypeError in Python 2 and 3
    alike: their run ends there by an exception, which stops it all the same.)"""


def loop_statements(main: Path) -> tuple[ast.Module, ast.Module]:
    """(initialisations, one iteration's control flow) of the step loop of `main`, as written."""
    tree = ast.parse(main.read_text(), str(main))
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For) and isinstance(n.target, ast.Name)
             and n.target.id == "batch"]
    if len(loops) != 1:
        raise ValueError(f"{main}: expected one `for batch in ...` step loop, found {len(loops)}")
    loop = loops[0]
    inits = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and node.lineno < loop.lineno and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in LOOP_STATE):
            if node.targets[0].id in inits:
                raise ValueError(f"{main}:{node.lineno}: {node.targets[0].id} assigned twice before the loop")
            inits[node.targets[0].id] = node
    counter = [s for s in loop.body if isinstance(s, ast.AugAssign) and ast.unparse(s.target) == "step"]
    gate = [s for s in loop.body if isinstance(s, ast.If) and "bp_epoch" in ast.unparse(s.test)]
    if set(inits) != set(LOOP_STATE) or len(counter) != 1 or len(gate) != 1:
        raise ValueError(f"{main}: the loop's state {sorted(inits)}, {len(counter)} step counters and "
                         f"{len(gate)} evaluation blocks; expected {list(LOOP_STATE)}, 1 and 1")
    ordered = sorted(inits.values(), key=lambda n: n.lineno)
    return ast.Module(body=ordered, type_ignores=[]), ast.Module(body=[*counter, *gate], type_ignores=[])


def replay(main: Path, flags: dict[str, Any], nmi: Any) -> dict[str, Any]:
    """Run the authors' loop control of `main` under `flags`: the rate each step trains at (their
    `sess.run` feeds `lr: _lr` before `step += 1`), the steps that evaluate, the stop step and
    the step of the last checkpoint saved (their best test NMI)."""
    inits, body = loop_statements(main)
    ns: dict[str, Any] = {}
    evaluated, saved, exit_args = [], [], []

    def evaluate(*args: Any) -> tuple[float, float, list[float]]:
        evaluated.append(ns["step"])
        return nmi(ns["step"]), 0.0, [0.0] * len(NEIGHBOURS)

    def exit_(*args: Any) -> None:
        exit_args.append(args)
        raise Stopped

    names = {n.id for tree in (inits, body) for n in ast.walk(tree) if isinstance(n, ast.Name)}
    ns.update({name: Anything() for name in names})
    ns.update({
        "FLAGS": SimpleNamespace(Apply_HDML=True, **flags), "np": np, "neighbours": NEIGHBOURS, "range": range,
        "print": lambda *a, **k: None, "LOGDIR": "authors-replay", "evaluation": SimpleNamespace(Evaluation=evaluate),
        "saver": SimpleNamespace(save=lambda *a, **k: saved.append(ns["step"])),
        "os": SimpleNamespace(_exit=exit_, path=os.path),
    })
    exec(compile(inits, str(main), "exec"), ns)  # noqa: S102 (their statements, the point of this harness)
    iteration = compile(body, str(main), "exec")
    rates = []
    for _ in range(STEP_LIMIT):
        rates.append(ns["_lr"])
        try:
            exec(iteration, ns)  # noqa: S102
        except Stopped:
            break
    else:
        raise RuntimeError(f"{main}: no stop within {STEP_LIMIT} steps under {flags}")
    return {"rates": rates, "evaluated": evaluated, "stop": ns["step"], "kept": saved[-1] if saved else None,
            "exit_args": exit_args[0]}


def paper_config(runs: list[Run], dataset: str, method: str) -> dict[str, Any]:
    """The suite's resolved run config of `method` on `dataset` (default variant) among `runs`."""
    run = next(r for r in runs if (r.dataset, r.method, r.variant) == (dataset, method, "default"))
    return build_run_config(get_dataset(dataset).defaults_for(method), run.overrides, method)


def suite_side(cfg: dict[str, Any], nmi: Any) -> dict[str, Any]:
    """The same quantities from the suite's own code under its resolved run config."""
    rates = backbone_rates(cfg)
    evaluated = [s for s in range(1, cfg["steps"] + 1) if eval_due(s, cfg)]
    best = Best()
    for step in evaluated:
        best.offer(step, nmi(step), {"step": step, "nmi": nmi(step)}, np.empty(0))
    return {"rates": rates, "evaluated": evaluated, "stop": cfg["steps"], "kept": best.step,
            "test_selected": test_selected_step(cfg, evaluated, nmi)}


def test_selected_step(cfg: dict[str, Any], evaluated: list[int], nmi: Any) -> int:
    """The step `hdml evaluate` reports as test-selected for a run whose curve holds these NMIs."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        saved = Embeddings(np.eye(4, dtype=np.float32), np.arange(4))
        saved.save(run / "embeddings.npz")
        (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": 0}))
        (run / "metrics.json").write_text(json.dumps({"metrics": {"nmi": 1.0}, "embeddings_sha256": saved.digest()}))
        pd.DataFrame({"step": evaluated, "nmi": [nmi(s) for s in evaluated]}).to_csv(run / "curve.csv", index=False)
        return int(evaluate_run(run)["test_selected"]["step"])


def rows(authors: Path) -> list[dict[str, Any]]:
    """Per main and dataset: the rate at every step, the evaluation steps, the stop step and the
    kept checkpoint, authors' replay against the suite; every tolerance is 0."""
    out, runs = [], validate_workflow_config(read_workflow_configs([str(PAPER)]))
    for main, method in MAINS.items():
        for dataset, flags in FLAGS_BY_DATASET.items():
            cfg = paper_config(runs, dataset, method)
            results = {name: (replay(Path(authors) / main, flags, nmi), suite_side(cfg, nmi))
                       for name, nmi in nmi_patterns().items()}
            theirs, ours = results["seeded, with ties"]
            where = f"{dataset}, {main}"
            n = max(len(theirs["rates"]), len(ours["rates"]))
            rate_diff = (max(abs(a - b) for a, b in zip(theirs["rates"], ours["rates"], strict=True))
                         if len(theirs["rates"]) == len(ours["rates"]) else math.inf)
            ts = theirs["rates"]
            halved = [s for s in range(1, min(n, len(ts))) if ts[s] != ts[s - 1]]
            out.append(row(f"lr at every step, {where}", rate_diff, 0.0,
                           f"{len(theirs['rates'])} / {len(ours['rates'])} steps; authors halve after "
                           f"{halved or 'no step'}, suite's lr_milestones {cfg['lr_milestones']}"))
            missing = sorted(set(theirs["evaluated"]) ^ set(ours["evaluated"]))
            out.append(row(f"evaluation steps, {where}", len(missing), 0.0,
                           f"{len(theirs['evaluated'])} / {len(ours['evaluated'])} evaluations, last "
                           f"{theirs['evaluated'][-1]} / {ours['evaluated'][-1]}; differing: {missing[:5] or 'none'}"))
            out.append(row(f"stop step, {where}", abs(theirs["stop"] - ours["stop"]), 0.0,
                           f"authors {theirs['stop']} (os._exit{theirs['exit_args']!r}), suite steps {ours['stop']}"))
            kept = {name: (t["kept"], o["kept"], o["test_selected"]) for name, (t, o) in results.items()}
            diff = max(max(abs(t - o), abs(t - s)) for t, o, s in kept.values())
            out.append(row(f"kept checkpoint, {where}", diff, 0.0, "; ".join(
                f"{name}: authors {t}, selection test {o}, hdml evaluate {s}" for name, (t, o, s) in kept.items())))
    return out



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, default=os.environ.get("HDML_AUTHORS_PATH"),
                        help="checkout of wzzheng/HDML at fa03ef0 (default: $HDML_AUTHORS_PATH)")
    args = parser.parse_args()
    if args.authors is None:
        parser.error("no checkout: pass --authors PATH or set HDML_AUTHORS_PATH")
    table = rows(args.authors)
    sys.exit(print_table(table))


if __name__ == "__main__":
    main()
