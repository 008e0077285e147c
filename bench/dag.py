"""Whole-workflow costs: Snakemake's DAG-building time for the full paper grid (a dry run),
and the wall time of the embedded demo, from scratch, in a temporary directory.

    python bench/dag.py            # both
    python bench/dag.py --dry-only # the paper grid's dry run only
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-only", action="store_true")
    p.add_argument("--cores", default="2")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds, out = run(["snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config/paper.yaml"),
                            "-n", "--quiet", "rules", "--cores", "8"], Path(tmp))
        jobs = re.search(r"^total\s+(\d+)", out, re.M)
        print(f"paper grid dry run: {seconds:.1f} s for {jobs.group(1) if jobs else '?'} jobs "
              "(config validation of every run + DAG)")
        if args.dry_only:
            return
        seconds, _ = run(["snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config/config.yaml"),
                          "--cores", args.cores, "--quiet"], Path(tmp))
        print(f"embedded demo from scratch on {args.cores} cores: {seconds / 60:.1f} min (target <= 10 min)")


if __name__ == "__main__":
    main()
