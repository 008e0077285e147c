"""`hdml aggregate`: run folders -> metrics.csv, curves.csv, runs.csv, costs.csv.

`make_results` builds a small synthetic results tree (several methods, seeds, variants, sweeps,
an ablation, embeddings, benchmark files); test_report.py and test_report_browser.py reuse it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hdml.cli import main
from hdml.eval.aggregate import aggregate, read_benchmark, run_key

METRICS = ["nmi", "f1", "recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"]
# Seed-0 value of every metric; seed s adds 0.01 * s, the test-selected checkpoint 0.05 more.
BASE = {"npair": 0.50, "hdml-npair": 0.55, "triplet": 0.40}
SHIFT = {"default": 0.0, "no-softmax": -0.20, "no-recon": -0.02, "alpha=0": -0.04, "alpha=30": -0.01,
         "alpha=180": -0.03, "lambda0=0.2": -0.05, "lambda0=0.6": -0.08, "protocol=paper": +0.03,
         "embedding=128": -0.06, "untrained": -0.30}
# cub200 runs: (method, variant) -> seeds
CUB_RUNS = {("npair", "default"): [0, 1, 2], ("hdml-npair", "default"): [0, 1, 2], ("triplet", "default"): [0, 1, 2],
            ("hdml-npair", "no-softmax"): [0, 1], ("hdml-npair", "no-recon"): [0, 1],
            ("hdml-npair", "alpha=0"): [0, 1], ("hdml-npair", "alpha=30"): [0, 1], ("hdml-npair", "alpha=180"): [0, 1],
            ("hdml-npair", "lambda0=0.2"): [0, 1], ("hdml-npair", "lambda0=0.6"): [0, 1],
            ("hdml-npair", "protocol=paper"): [0, 1], ("npair", "embedding=128"): [0],
            ("npair", "untrained"): [0, 1, 2]}  # the reference (hdml.core.reference): filed as method untrained
DIGITS_RUNS = {("npair", "default"): [0, 1], ("triplet", "default"): [0, 1]}


def value(method: str, variant: str, seed: int, metric: str) -> float:
    v = BASE[method] + SHIFT[variant] + 0.01 * seed + 0.001 * METRICS.index(metric)
    if method == "npair" and metric == "recall@1":
        v += 0.10  # N-pair beats HDML at R@1: the best mark must follow the numbers
    return round(v, 6)


def write_run(run: Path, method: str, variant: str, seed: int, alpha: float | None) -> None:
    run.mkdir(parents=True)
    final = {m: value(method, variant, seed, m) for m in METRICS}
    selected = {m: v + 0.05 for m, v in final.items()}
    (run / "evaluation.json").write_text(json.dumps({"metrics": final, "test_selected": {**selected, "step": 50.0}}))
    curve = pd.DataFrame([{"step": s, **{m: final[m] - (0.1 if s == 50 else 0) for m in ("nmi", "f1", "recall@1")},
                           "train_loss": 2.0 / s} for s in (50, 100)])
    curve.to_csv(run / "curve.csv", index=False)
    lambda0 = float(variant.split("=")[1]) if variant.startswith("lambda0=") else None
    protocol = "paper" if variant == "protocol=paper" else "code"
    # HDML's loss switches, off in its ablation variants (the report finds those by them)
    hdml = method.startswith("hdml-")
    switches = {"softmax": variant != "no-softmax", "recon": variant != "no-recon"} if hdml else {}
    (run / "config.yaml").write_text(yaml.safe_dump({"dataset": run.parents[2].name, "method": method, "seed": seed,
                                                     "steps": 0 if variant == "untrained" else 100,
                                                     "protocol": protocol,
                                                     "hdml": {"alpha": alpha, "lambda0": lambda0, **switches}}))


def write_embeddings(run: Path, classes: int, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 8)) * 3
    labels = np.repeat(np.arange(100, 100 + classes), per_class)
    z = centres[labels - 100] + rng.normal(size=(len(labels), 8))
    with open(run / "embeddings.npz", "wb") as fh:
        np.savez(fh, embeddings=z.astype(np.float32), labels=labels)


def write_benchmark(path: Path, rows: list[tuple[float, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    body = "".join(f"{s:.4f}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{s * 0.9:.2f}\n" for s, rss in rows)
    path.write_text(header + body)


def make_results(root: Path) -> list[Path]:
    """Synthetic results/runs/... and results/benchmarks/...; returns the run folders."""
    runs = []
    for dataset, plan in (("cub200", CUB_RUNS), ("digits", DIGITS_RUNS)):
        for (method, variant), seeds in plan.items():
            for seed in seeds:
                run = root / "runs" / dataset / method / variant / f"seed{seed}"
                alpha = float(variant.split("=")[1]) if variant.startswith("alpha=") else None
                write_run(run, method, variant, seed, alpha)
                runs.append(run)
                if variant in ("default", "untrained"):
                    # Train cost grows with the seed; evaluation fixed; RSS sampled or not (NA).
                    write_benchmark(root / "benchmarks/train" / dataset / method / variant / f"seed{seed}.tsv",
                                    [(100.0 * (seed + 1), str(1000 + 100 * seed))])
                    write_benchmark(root / "benchmarks/evaluate" / dataset / method / variant / f"seed{seed}.tsv",
                                    [(10.0, "NA")])
    write_embeddings(root / "runs/cub200/hdml-npair/default/seed0", classes=12, per_class=8, seed=0)
    write_embeddings(root / "runs/digits/npair/default/seed0", classes=5, per_class=8, seed=1)
    return runs


def aggregate_all(root: Path) -> dict[str, Path]:
    out = {k: root / f"{k}.csv" for k in ("metrics", "curves", "runs", "costs")}
    aggregate(make_results(root), out["metrics"], out["curves"], out["runs"], benchmarks=root / "benchmarks",
              out_costs=out["costs"])
    return out


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return aggregate_all(tmp_path_factory.mktemp("results"))


def test_metrics_table_long_rows_final_and_selected(aggregated):
    table = pd.read_csv(aggregated["metrics"])
    assert list(table.columns) == ["dataset", "method", "variant", "seed", "metric", "value"]
    n_runs = sum(len(s) for s in CUB_RUNS.values()) + sum(len(s) for s in DIGITS_RUNS.values())
    assert len(table) == n_runs * 2 * len(METRICS)  # no `selected:step`: a step is not a fraction
    assert table.value.between(0, 1).all()
    one = table[(table.dataset == "cub200") & (table.method == "npair") & (table.variant == "default")
                & (table.seed == 2)].set_index("metric").value
    assert one["nmi"] == pytest.approx(0.52)
    assert one["recall@1"] == pytest.approx(0.50 + 0.02 + 0.002 + 0.10)
    assert one["selected:nmi"] == pytest.approx(0.57)
    assert set(table.variant) == set(SHIFT) - {"untrained"}
    reference = table[(table.method == "untrained") & (table.metric == "nmi")]
    assert set(reference.variant) == {"default"} and reference.value.tolist() == pytest.approx([0.20, 0.21, 0.22])


def test_curves_runs_tables(aggregated):
    curves = pd.read_csv(aggregated["curves"])
    assert list(curves.columns) == ["dataset", "method", "variant", "seed", "step", "metric", "value"]
    row = curves[(curves.dataset == "cub200") & (curves.method == "triplet") & (curves.seed == 1)
                 & (curves.step == 50) & (curves.metric == "nmi")]
    assert row.value.tolist() == pytest.approx([0.41 - 0.1])
    assert set(curves.metric) == {"nmi", "f1", "recall@1", "train_loss"}
    runs = pd.read_csv(aggregated["runs"])
    assert len(runs) == sum(len(s) for s in CUB_RUNS.values()) + sum(len(s) for s in DIGITS_RUNS.values())
    sweep = runs[runs.variant == "alpha=30"]
    assert sweep.alpha.tolist() == [30.0, 30.0] and sweep.selected_step.tolist() == [50, 50]
    assert runs[runs.variant == "lambda0=0.6"].lambda0.tolist() == [0.6, 0.6]
    assert runs[runs.variant == "default"].alpha.isna().all()
    assert set(runs[runs.variant == "protocol=paper"].protocol) == {"paper"}
    assert runs[runs.method == "untrained"].steps.tolist() == [0, 0, 0]


def test_costs_from_benchmark_files(aggregated):
    costs = pd.read_csv(aggregated["costs"])
    assert list(costs.columns) == ["dataset", "method", "variant", "seed", "stage", "seconds", "max_rss_mb",
                                   "cpu_seconds"]
    # Only default and reference runs have benchmark files here: 4 x 3 seeds + 2 x 2, two stages each.
    assert len(costs) == 2 * (12 + 4)
    reference = costs[(costs.method == "untrained") & (costs.stage == "train")]  # read from .../npair/untrained/
    assert reference.variant.tolist() == ["default"] * 3 and sorted(reference.seconds) == [100.0, 200.0, 300.0]
    train = costs[(costs.stage == "train") & (costs.dataset == "cub200") & (costs.method == "npair")]
    assert sorted(train.seconds) == [100.0, 200.0, 300.0] and sorted(train.max_rss_mb) == [1000, 1100, 1200]
    assert costs[costs.stage == "evaluate"].max_rss_mb.isna().all()  # `NA`: not sampled, not zero


def test_benchmark_repeats_mean_time_max_memory(tmp_path):
    path = tmp_path / "b.tsv"
    write_benchmark(path, [(10.0, "500"), (20.0, "700"), (30.0, "-")])
    got = read_benchmark(path)
    assert got["seconds"] == pytest.approx(20.0)
    assert got["max_rss_mb"] == 700.0
    assert got["cpu_seconds"] == pytest.approx(27.0)
    write_benchmark(path, [(0.05, "0")])  # ended before Snakemake's first sample: unknown, not 0 MB
    assert np.isnan(read_benchmark(path)["max_rss_mb"])
    (tmp_path / "bad.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv: not a Snakemake benchmark"):
        read_benchmark(tmp_path / "bad.tsv")


def test_bad_inputs_named(tmp_path):
    run = tmp_path / "cub200/npair/default/seed0"
    write_run(run, "npair", "default", 0, None)
    evaluation = json.loads((run / "evaluation.json").read_text())
    evaluation["metrics"]["nmi"] = 62.6  # a percentage, not a fraction
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    with pytest.raises(ValueError, match=r"evaluation.json: metrics.nmi = 62.6"):
        aggregate([run], tmp_path / "m.csv", tmp_path / "c.csv")
    assert not (tmp_path / "m.csv").exists()
    with pytest.raises(ValueError, match="seedN"):
        run_key(tmp_path / "cub200/npair/default/first")
    with pytest.raises(FileNotFoundError):
        aggregate([tmp_path / "cub200/npair/default/seed9"], tmp_path / "m.csv", tmp_path / "c.csv")
    other = tmp_path / "cub200/npair/default/seed1"
    write_run(other, "npair", "default", 1, None)
    with pytest.raises(ValueError, match="seed1 given twice"):
        aggregate([other, other], tmp_path / "m.csv", tmp_path / "c.csv")


def test_cli_writes_all_tables(tmp_path, capsys):
    runs = make_results(tmp_path)[:4]
    out = tmp_path / "out"
    rc = main(["aggregate", *map(str, runs), "--out", str(out / "metrics.csv"), "--curves", str(out / "curves.csv"),
               "--runs-table", str(out / "runs.csv"), "--benchmarks", str(tmp_path / "benchmarks"),
               "--costs", str(out / "costs.csv")])
    assert rc == 0
    assert len(pd.read_csv(out / "metrics.csv")) == 4 * 2 * len(METRICS)
    assert len(pd.read_csv(out / "costs.csv")) == 2 * 4  # runs[:4]: default runs, train + evaluate each
    rc = main(["aggregate", str(tmp_path / "nowhere/x/y/seed0"), "--out", str(out / "m2.csv")])
    assert rc == 2 and "evaluation.json" in capsys.readouterr().err
