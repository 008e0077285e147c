"""Dress rehearsal of the paper's DAG: synthetic archives in the real layouts and counts (or a
fraction of them), served over 127.0.0.1 as the mirrors, then `snakemake` with
`config/paper.yaml` + `config/rehearsal.yaml` (the overrides 2 CPU cores force) + a generated
mirrors file; per stage, the wall time, peak memory and disk used, into docs/benchmarks.md.

    python bench/rehearsal.py --scale 0.05                 # about 7,400 images, photo-sized
    python bench/rehearsal.py --scale 1 --work /big/disk   # the real counts (29 GB cache at 256)
    python bench/rehearsal.py --scale 0.01 --image-size 64x48 --no-doc   # a quick smoke run
    python bench/rehearsal.py --grid                       # only recount the grid block (runs, jobs, steps)
    python bench/rehearsal.py --with config/reality-check.yaml --plan   # the Reality Check's jobs, planned

Archives are kept in WORK/archives (rebuilt only when --scale or --image-size change); the
workflow's folders (data/, results/, report/) start empty each time unless --resume.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from fakedata import PHOTO_SIZES, REAL, scaled  # noqa: E402 (after the path set-up above)
from hdml.core.config import build_run_config  # noqa: E402 (after the path set-up above)
from hdml.core.io import write_text  # noqa: E402 (after the path set-up above)
from hdml.data.datasets import get_dataset  # noqa: E402 (after the path set-up above)
from hdml.workflow.costs import load_costs  # noqa: E402 (after the path set-up above)
from hdml.workflow.plan import (  # noqa: E402 (after the path set-up)
    read_workflow_configs,
    trial_overrides,
    tune_settings,
    tune_studies,
    validate_workflow_config,
)
from httpserver import FileServer  # noqa: E402 (after the path set-up above)

DATASETS = ("cub200", "cars196", "sop")
STAGES = ("prepare", "cache", "train", "evaluate", "aggregate", "report")
MARK_START, MARK_END = "<!-- rehearsal:start -->", "<!-- rehearsal:end -->"
GRID_START, GRID_END = "<!-- grid:start -->", "<!-- grid:end -->"
PAPER, OVERLAY = REPO / "config" / "paper.yaml", REPO / "config" / "rehearsal.yaml"
# the suite's goal for one GoogLeNet@227 step of 128 images on a GPU, from the one source of cost figures
STEP_GOAL_S = load_costs()["step"]["googlenet"]["seconds"]


def build_archives(folder: Path, scale: float, size: tuple[int, int] | None) -> dict[str, dict[str, Path]]:
    """Each dataset's archive(s), built once per (scale, size): role -> file."""
    stamp = folder / "stamp.json"
    want = {"scale": scale, "size": list(size) if size else None}
    files = {}
    if stamp.exists() and json.loads(stamp.read_text()).get("build") == want:
        stored = json.loads(stamp.read_text())["files"]
        return {d: {k: Path(v) for k, v in roles.items()} for d, roles in stored.items()}
    shutil.rmtree(folder, ignore_errors=True)
    for dataset in DATASETS:
        start = time.perf_counter()
        out = folder / dataset
        out.mkdir(parents=True)
        fake = scaled(dataset, out, scale, size)
        files[dataset] = fake.files
        print(f"{dataset}: {len(fake.labels):,} images in {time.perf_counter() - start:.0f} s", flush=True)
    listed = {d: {k: str(v) for k, v in r.items()} for d, r in files.items()}
    stamp.write_text(json.dumps({"build": want, "files": listed}))
    return files


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def mirrors(server: FileServer, files: dict[str, dict[str, Path]]) -> dict:
    """The config section that points each dataset's `prepare` at the local server: URLs and the
    image archive's MD5 (without it, `hdml prepare` holds a download to the published checksum)."""
    section = {}
    for dataset, roles in files.items():
        main = roles.get("archive") or roles["images"]
        urls = [server.add(f"/{dataset}/{main.name}", file=main)]
        if "annos" in roles:
            urls.append(server.add(f"/{dataset}/{roles['annos'].name}", file=roles["annos"]))
        section[dataset] = {"prepare": {"urls": urls, "md5": md5(main)}}
    return {"datasets": section}


def du(path: Path) -> int:
    """Bytes of the files under `path` (0 if absent); symlinks not followed."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.exists() else 0


def stage_disk(work: Path) -> dict[str, int]:
    """Disk each stage leaves behind."""
    data, results = work / "data", work / "results"
    caches = sum(du(c) for c in data.glob("*/cache-*"))
    runs = results / "runs"
    evals = sum(du(p) for p in runs.rglob("evaluation.json"))
    return {
        "prepare": du(data) - caches,  # downloads + extracted images + split.csv
        "cache": caches,
        "train": du(runs) - evals,
        "evaluate": evals,
        "aggregate": sum(du(results / f) for f in ("metrics.csv", "curves.csv", "runs.csv", "costs.csv")),
        "report": du(work / "report"),
    }


def stage_costs(work: Path) -> pd.DataFrame:
    """Per stage from Snakemake's benchmark files: jobs, summed and longest job seconds, peak RSS."""
    rows = []
    for tsv in (work / "results" / "benchmarks").rglob("*.tsv"):
        stage = tsv.relative_to(work / "results" / "benchmarks").parts[0].removesuffix(".tsv")
        bench = pd.read_csv(tsv, sep="\t")
        rss = pd.to_numeric(bench["max_rss"], errors="coerce").max()
        rows.append({"stage": stage, "job": str(tsv), "s": float(bench["s"].iloc[0]), "max_rss": rss})
    frame = pd.DataFrame(rows)
    out = frame.groupby("stage").agg(jobs=("s", "size"), seconds=("s", "sum"), longest=("s", "max"),
                                     max_rss=("max_rss", "max"))
    return out.reindex(list(STAGES))


def images_of(work: Path) -> dict[str, dict[str, int]]:
    out = {}
    for dataset in DATASETS:
        if not (work / "data" / dataset / "split.csv").exists():  # a partial run (targets given)
            continue
        split = pd.read_csv(work / "data" / dataset / "split.csv")
        out[dataset] = {s: int((split["split"] == s).sum()) for s in ("train", "test")}
        out[dataset]["classes"] = int(split["label"].nunique())
    return out


def configs(overlays: list[Path]) -> list[Path]:
    """paper.yaml, the protocol overlays asked for (e.g. config/reality-check.yaml), then the
    rehearsal's CPU overrides, which win."""
    return [PAPER, *overlays, OVERLAY]


def run_workflow(work: Path, mirrors_file: Path, cores: int, extra: list[str],
                 overlays: list[Path] = ()) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--configfile", *map(str, configs(list(overlays))), str(mirrors_file),
           "--cores", str(cores), "--keep-going", *extra]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, check=False)
    return time.perf_counter() - start, done


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def section(args: argparse.Namespace, wall: float, costs: pd.DataFrame, disk: dict[str, int],
            counts: dict[str, dict[str, int]], load: str, complete: bool) -> str:
    """The Rehearsal section of docs/benchmarks.md: what ran, the measured table, the projection."""
    size = args.image_size or "real-like (" + ", ".join(f"{d} {w}x{h}" for d, (w, h) in PHOTO_SIZES.items()) + ")"
    total = sum(c["train"] + c["test"] for c in counts.values())
    real_total = sum(v[1] for r in REAL.values() for v in r.values())
    lines = [
        MARK_START,
        "",
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `python bench/rehearsal.py --scale "
        f"{args.scale}{' --image-size ' + args.image_size if args.image_size else ''}`, {args.cores} cores, "
        f"load average at the start {load}. Images: "
        + ", ".join(f"{d} {c['train'] + c['test']:,} ({c['classes']:,} classes)" for d, c in counts.items())
        + f", {total:,} in all ({total / real_total:.1%} of the real {real_total:,}); JPEG size {size}. "
        + (f"Whole DAG: {wall / 60:.1f} min wall." if complete
           else f"Partial run (targets): {wall / 60:.1f} min wall for the jobs counted below."),
        "",
        "| stage | jobs | mean per job | longest job | peak RSS of one job | disk left behind |",
        "|---|---|---|---|---|---|",
    ]
    for stage, row in costs.iterrows():
        if pd.isna(row["jobs"]):
            lines.append(f"| {stage} | 0 | | | | {gb(disk[stage])} |")
            continue
        lines.append(f"| {stage} | {int(row['jobs'])} | {row['seconds'] / row['jobs']:,.0f} s | "
                     f"{row['longest']:,.0f} s | "
                     f"{row['max_rss']:,.0f} MB | {gb(disk[stage])} |")
    lines += ["", MARK_END]
    return "\n".join(lines)


def grid_counts(config: dict) -> dict[str, int]:
    """Runs, seeds, runs per dataset, training steps and Snakemake jobs of a workflow config, from
    its plan (hdml.workflow.plan). Jobs as the Snakefile makes them: prepare per dataset, cache per dataset
    whose runs read the dataset's image size, train and evaluate per trained run (fold models
    included), an ensemble job per seed of fold models (hdml.eval.ensemble), a trial job per trial and
    fold and a best.yaml job per tuning study, the t-SNE map of the run `tsne:` names, aggregate,
    report, all. Steps count the trials' too."""
    runs = validate_workflow_config(config)
    trained = [r for r in runs if not r.folds]  # a seed of fold models is not trained: its folds are
    cfgs = [build_run_config(get_dataset(r.dataset).defaults_for(r.method), r.overrides, r.method) for r in trained]
    sizes = {d: build_run_config(get_dataset(d).run_defaults, config["datasets"][d].get("train", {}))["image"]["resize"]
             for d in config["datasets"]}
    cached = {r.dataset for r, c in zip(trained, cfgs, strict=True) if c["image"]["resize"] == sizes[r.dataset]}
    studies, tune = tune_studies(config), tune_settings(config)
    per_study = tune["trials"] * tune["folds"] if studies else 0
    trials = len(studies) * per_study
    trial_steps = per_study * sum(build_run_config(get_dataset(d).defaults_for(m), trial_overrides(config, d, m),
                                                   m)["steps"] for d, m in studies)
    counts = {"runs": len(runs) - sum(bool(r.part_of) for r in runs), "seeds": len(config["seeds"]),
              "steps": sum(c["steps"] for c in cfgs) + trial_steps, "trial_jobs": trials,
              "fold_models": sum(bool(r.part_of) for r in runs),
              "jobs": len(config["datasets"]) + len(cached) + 2 * len(trained) + (len(runs) - len(trained))
              + trials + len(studies) + bool(config.get("tsne")) + 3}
    shown = [r for r in runs if not r.part_of]
    counts.update({f"runs_{d}": sum(r.dataset == d for r in shown) for d in config["datasets"]})
    counts["runs_per_seed"] = sum(r.seed == min(config["seeds"]) for r in shown)
    return counts


def grid_section() -> str:
    """The grid block of docs/benchmarks.md: the paper grid's and the rehearsal's sizes, counted
    from the configs, so that the text cannot quote an older grid (tests/test_rehearsal.py)."""
    paper = grid_counts(read_workflow_configs([PAPER]))
    rehearsal = grid_counts(read_workflow_configs([PAPER, OVERLAY]))
    per_dataset = ", ".join(f"{d} {paper[f'runs_{d}']}" for d in DATASETS)
    return "\n".join([
        GRID_START,
        f"Grid (counted from the configs by `python bench/rehearsal.py --grid`, "
        f"hdml.workflow.plan): `config/paper.yaml` "
        f"is **{paper['runs']} runs** ({paper['runs_per_seed']} with the first seed, {paper['seeds']} seeds; "
        f"{per_dataset}), **{paper['jobs']} Snakemake jobs**, {paper['steps']:,} training steps: "
        f"{paper['steps'] * STEP_GOAL_S / 3600:.1f} GPU-hours at the goal of {STEP_GOAL_S * 1000:.0f} ms a step. "
        f"With `config/rehearsal.yaml` over it: **{rehearsal['runs']} runs** ({rehearsal['seeds']} seed), "
        f"**{rehearsal['jobs']} jobs**, {rehearsal['steps']:,} steps.",
        GRID_END,
    ])


def replace_block(text: str, start: str, end: str, block: str, doc: Path) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{doc}: no {start} ... {end} block to replace")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)


def write_doc(text: str | None) -> None:
    """Rewrite the grid block of docs/benchmarks.md and, given `text`, the last run's block."""
    doc = REPO / "docs" / "benchmarks.md"
    new = replace_block(doc.read_text(), GRID_START, GRID_END, grid_section(), doc)
    if text is not None:
        new = replace_block(new, MARK_START, MARK_END, text, doc)
    write_text(doc, new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.05, help="fraction of the real image counts (1 = real)")
    p.add_argument("--image-size", help="WxH of every JPEG (default: each dataset's typical photo size)")
    p.add_argument("--work", type=Path, default=REPO / "rehearsal", help="working folder (archives, data, results)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="keep data/, results/, report/ from the last run")
    p.add_argument("--no-doc", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    p.add_argument("--grid", action="store_true", help="only rewrite the grid counts in docs/benchmarks.md (no run)")
    p.add_argument("--with", dest="overlays", type=Path, action="append", default=[], metavar="CONFIG",
                   help="a protocol overlay between paper.yaml and rehearsal.yaml, e.g. config/reality-check.yaml")
    p.add_argument("--plan", action="store_true", help="print the plan's counts (runs, jobs, trials) and exit")
    p.add_argument("snakemake_args", nargs="*", help="passed to snakemake (after --)")
    args = p.parse_args()
    if args.grid:
        write_doc(None)
        print(grid_section())
        return
    if args.plan:
        print(json.dumps(grid_counts(read_workflow_configs(configs(args.overlays))), indent=2))
        return
    if not 0 < args.scale <= 1:
        p.error("--scale must be in (0, 1]")
    size = tuple(int(v) for v in args.image_size.split("x")) if args.image_size else None
    work = args.work.resolve()
    files = build_archives(work / "archives", args.scale, size)  # type: ignore[arg-type]
    if not args.resume:
        for folder in ("data", "results", "report", ".snakemake"):
            shutil.rmtree(work / folder, ignore_errors=True)
    load = "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    with FileServer() as server:
        mirrors_file = work / "mirrors.yaml"
        mirrors_file.write_text(yaml.safe_dump(mirrors(server, files)))
        # The server's port, hence the mirrors' URLs (a `prepare` param), change from run to run.
        resume = ["--rerun-triggers", "mtime", "input", "--rerun-incomplete"] if args.resume else []
        wall, done = run_workflow(work, mirrors_file, args.cores, resume + args.snakemake_args, args.overlays)
    print(f"snakemake exit {done.returncode} after {wall / 60:.1f} min; log: {work / 'snakemake.log'}")
    costs, disk, counts = stage_costs(work), stage_disk(work), images_of(work)
    text = section(args, wall, costs, disk, counts, load, (work / "report" / "report.html").exists())
    print(text)
    if done.returncode:
        sys.exit(f"the workflow failed: see {work / 'snakemake.log'} and {work / 'results' / 'logs'}")
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
