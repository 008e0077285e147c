"""The README's cost table, from the one source of cost figures (hdml/resources/costs.yaml, through
hdml.workflow.costs): the demo's measured time, each shipped grid's runs, jobs, projected GPU-hours and disk.

    python bench/costs.py            # print the table
    python bench/costs.py --write    # rewrite the README's costs block (tests/test_costs.py checks it)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hdml.core.io import write_text  # noqa: E402 (after the path set-up above)
from hdml.workflow.costs import load_costs, project  # noqa: E402 (after the path set-up above)
from hdml.workflow.plan import read_workflow_configs, validate_workflow_config  # noqa: E402 (after the path set-up)

START, END = "<!-- costs:start -->", "<!-- costs:end -->"
GRIDS = (  # (what, config files); the demo's row quotes its measured time
    ("demo (glyphs, CPU)", ["config/config.yaml"]),
    ("paper grid", ["config/paper.yaml"]),
    ("paper + fair protocol", ["config/paper.yaml", "config/fair.yaml"]),
    ("fair-min: does HDML beat N-pair?", ["config/paper.yaml", "config/fair.yaml", "config/fair-min.yaml"]),
    ("paper + Reality Check protocol", ["config/paper.yaml", "config/reality-check.yaml"]),
)


def row(what: str, files: list[str]) -> tuple[str, float]:
    """The table row of a grid, and the checkpoint bytes one of its training jobs holds."""
    config = read_workflow_configs([str(REPO / f) for f in files])
    p = project(config, validate_workflow_config(config, source=", ".join(files)))
    demo = load_costs()["measured"]["demo"]
    if files == demo["config"]:
        minutes, seconds = divmod(demo["wall_seconds"], 60)
        compute = (f"{minutes} min {seconds:02d} s on {demo['cores']} cores (measured {demo['date']}, "
                   f"{demo['runs']} runs)")
    else:
        compute = f"{p.hours('gpu'):,.1f} GPU-hours"
    disk = f"{p.disk_total() / 1e9:,.1f} GB"
    command = " ".join(f"`{f.removeprefix('config/')}`" for f in files)
    return f"| {what} | {command} | {p.runs:,} | {p.trials:,} | {p.jobs:,} | {compute} | {disk} |", p.checkpoint_bytes


def table() -> str:
    rows = [row(what, files) for what, files in GRIDS]
    step = load_costs()["step"]["googlenet"]
    return "\n".join([
        START,
        "| what | config files (`config/`) | runs | tuning trials | jobs | time | disk |",
        "|---|---|---|---|---|---|---|",
        *(line for line, _ in rows),
        "",
        f"GPU-hours are projected from a step-time goal ({step['seconds'] * 1000:g} ms per GoogLeNet step of "
        f"{step['batch']} images), not yet "
        "measured on a GPU; disk counts downloads, extracted images, caches and results, plus "
        f"{max(c for _, c in rows) / 1e9:.2f} GB per training job running at once. Figures: "
        "`hdml/resources/costs.yaml` (sources in `docs/benchmarks.md`); `hdml check-config FILES` prints them "
        "for any grid, `python bench/costs.py` this table.",
        END,
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="rewrite the costs block of README.md")
    args = p.parse_args()
    text = table()
    if args.write:
        readme = REPO / "README.md"
        old = readme.read_text()
        if START not in old or END not in old:
            raise SystemExit(f"{readme}: no {START} ... {END} block to replace")
        write_text(readme, re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: text, old, flags=re.DOTALL))
    print(text)


if __name__ == "__main__":
    main()
