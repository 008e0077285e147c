"""The paper config's own path at a small scale (bench/rehearsal.py's slice): archives in the
real layouts, served over 127.0.0.1, through `prepare`, `cache` and two training runs of the
workflow with config/paper.yaml + config/rehearsal.yaml."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

from fakedata import REAL, class_counts
from hdml.workflow.plan import read_workflow_configs, validate_workflow_config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import rehearsal  # noqa: E402 (bench/ is not a package)

# ../shared/spec/datasets.md: train classes, train images, test classes, test images
SPEC = {"cub200": (100, 5864, 100, 5924), "cars196": (98, 8054, 98, 8131), "sop": (11318, 59551, 11316, 60502)}
CPU_KEYS = {"steps", "lr_milestones", "eval_every", "eval_late_from", "eval_every_late", "checkpoint_every",
            "pretrained", "image"}


def merged_config() -> dict:
    """paper.yaml with rehearsal.yaml merged over it, as `snakemake --configfile A B` does."""
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/rehearsal.yaml").read_text()))
    return config


@pytest.mark.parametrize("dataset", sorted(SPEC))
def test_scale_one_has_the_real_counts(dataset):
    counts = class_counts(dataset, 1.0)
    got = tuple(x for split in ("train", "test") for x in (len(counts[split]), sum(n for _, n in counts[split])))
    assert got == SPEC[dataset]
    ids = [c for split in ("train", "test") for c, _ in counts[split]]
    assert ids == list(range(1, len(ids) + 1))  # 1-based, contiguous, train classes first
    sizes = [n for split in ("train", "test") for _, n in counts[split]]
    assert min(sizes) >= 2 and (dataset != "sop" or max(sizes) <= 12)


def test_small_scale_keeps_what_a_paper_batch_needs():
    for dataset in ("cub200", "cars196"):
        counts = class_counts(dataset, 0.001)
        assert [len(counts[s]) for s in ("train", "test")] == [len(REAL[dataset][s][0]) for s in ("train", "test")]
        assert min(n for s in counts.values() for _, n in s) >= 4  # semihard: 4 images per class
    sop = class_counts("sop", 0.001)
    assert all(len(rows) == 60 for rows in sop.values())  # a batch of 120 as 60 pairs


def test_overlay_changes_only_what_two_cores_force():
    overlay = yaml.safe_load((REPO / "config/rehearsal.yaml").read_text())
    assert set(overlay) == {"seeds", "datasets"} and overlay["seeds"] == [0]
    for dataset, section in overlay["datasets"].items():
        assert set(section) == {"train"} and set(section["train"]) <= CPU_KEYS, dataset
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    config = merged_config()
    runs = validate_workflow_config(config)
    grid = {(r.dataset, r.method, r.variant) for r in validate_workflow_config(paper)}
    assert {(r.dataset, r.method, r.variant) for r in runs} == grid  # every method, variant, dataset
    assert {r.seed for r in runs} == {0}
    for dataset in SPEC:  # the rest of each train section is the paper's
        train, ours = config["datasets"][dataset]["train"], paper["datasets"][dataset]["train"]
        kept = {k: v for k, v in ours.items() if k not in CPU_KEYS}
        assert {k: v for k, v in train.items() if k not in CPU_KEYS} == kept
        assert train["image"]["flip"] is True and train["batch_size"] == 120
    assert config["variants"] == paper["variants"] and config["tsne"] == paper["tsne"]


@pytest.mark.slow
def test_paper_config_path_through_prepare_cache_and_two_runs(tmp_path, http_server):
    files = rehearsal.build_archives(tmp_path / "archives", 0.001, (40, 30))
    mirrors = tmp_path / "mirrors.yaml"
    mirrors.write_text(yaml.safe_dump(rehearsal.mirrors(http_server, files)))
    runs = ["results/runs/cub200/hdml-npair/default/seed0", "results/runs/sop/semihard/default/seed0"]
    targets = [f"{r}/metrics.json" for r in runs] + ["data/cars196/cache-36/meta.json"]
    _, done = rehearsal.run_workflow(tmp_path, mirrors, 2, targets)
    log = (tmp_path / "snakemake.log").read_text()
    assert done.returncode == 0, log[-3000:]
    for dataset in ("cub200", "cars196", "sop"):
        split = pd.read_csv(tmp_path / "data" / dataset / "split.csv")
        counts = class_counts(dataset, 0.001)
        for name in ("train", "test"):
            part = split[split["split"] == name]
            assert sorted(part["label"].unique()) == [c for c, _ in counts[name]]
            assert len(part) == sum(n for _, n in counts[name])
    cache = np.load(tmp_path / "data/cars196/cache-36/test.npy", mmap_mode="r")
    assert cache.shape == (sum(n for _, n in class_counts("cars196", 0.001)["test"]), 3, 36, 36)
    sop = yaml.safe_load((tmp_path / runs[1] / "config.yaml").read_text())
    assert sop["eval_ks"] == [1, 10, 100, 1000] and sop["images_per_class"] == 4 and sop["image"]["crop"] == 32
    metrics = pd.read_csv(tmp_path / runs[1] / "curve.csv")
    assert list(metrics["step"]) == [2] and "recall@1000" in metrics
    costs = rehearsal.stage_costs(tmp_path)
    assert costs.loc["prepare", "jobs"] == 3 and costs.loc["train", "jobs"] == 2
    assert rehearsal.stage_disk(tmp_path)["cache"] > cache.nbytes


def test_an_overlay_for_one_dataset_changes_no_other():
    """paper.yaml's aliases once shared `image` and `per_method` between the datasets: an
    overlay for one dataset's crop changed all three (Snakemake merges into the loaded dicts)."""
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    before = json.dumps(config["datasets"])  # a copy without the aliases' sharing
    update_config(config, {"datasets": {"cub200": {"train": {"image": {"crop": 100}, "npair": {"l2_reg": 1.0}},
                                                   "per_method": {"npair": {"batch_size": 10}}}}})
    after = json.loads(before)
    after["cub200"]["train"]["image"]["crop"], after["cub200"]["train"]["npair"]["l2_reg"] = 100, 1.0
    after["cub200"]["per_method"]["npair"]["batch_size"] = 10
    assert config["datasets"] == after


def test_benchmarks_grid_block_is_counted_from_the_configs():
    """docs/benchmarks.md quotes the grid's sizes only inside its grid block, which must be what
    the configs plan now: rerun `python bench/rehearsal.py --grid` after changing them."""
    doc = (REPO / "docs/benchmarks.md").read_text()
    start, end = doc.index(rehearsal.GRID_START), doc.index(rehearsal.GRID_END) + len(rehearsal.GRID_END)
    assert doc[start:end] == rehearsal.grid_section(), "stale grid block: run python bench/rehearsal.py --grid"
    paper = rehearsal.grid_counts(read_workflow_configs([rehearsal.PAPER]))
    seeds = yaml.safe_load((REPO / "config/paper.yaml").read_text())["seeds"]
    assert paper["runs"] == paper["runs_per_seed"] * len(seeds) == sum(paper[f"runs_{d}"] for d in SPEC)
    assert f"**{paper['runs']} runs**" in doc[start:end]


def test_grid_counts_add_to_a_plan_of_its_own():
    """A two-dataset config by hand: 2 datasets x 2 methods x 2 seeds + a variant of 1 run + the
    untrained reference (2 datasets x 2 seeds, 0 steps) = 13 runs; jobs: 2 prepare + 2 cache +
    13 train + 13 evaluate + aggregate, report, all = 33; a `tsne` adds its job."""
    config = {"data_root": "d", "results_dir": "r", "report_dir": "p", "seeds": [0, 1],
              "datasets": {"cub200": {"methods": ["triplet", "npair"], "train": {"steps": 10}},
                           "sop": {"methods": ["triplet", "npair"]}},
              "variants": {"v": {"datasets": ["sop"], "methods": ["npair"], "seeds": [0], "set": {"steps": 3}}}}
    counts = rehearsal.grid_counts(config)
    assert counts["runs"] == 13 and counts["runs_cub200"] == 6 and counts["runs_sop"] == 7
    assert counts["jobs"] == 33 and counts["steps"] == 4 * 10 + 4 * 8000 + 3
    assert rehearsal.grid_counts({**config, "tsne": {"dataset": "sop", "method": "npair"}})["jobs"] == 34


@pytest.mark.slow
def test_grid_jobs_are_snakemakes_count(tmp_path, venv_env):
    """The job count grid_counts derives is what `snakemake -n` plans for the rehearsal configs."""
    import re
    import subprocess

    cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(rehearsal.PAPER), str(rehearsal.OVERLAY), "--cores", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=venv_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    total = re.search(r"^total\s+(\d+)$", done.stdout + done.stderr, re.M)
    assert total and int(total.group(1)) == rehearsal.grid_counts(merged_config())["jobs"]
