"""The SLURM profile against a real one-node SLURM cluster on 127.0.0.1.

Needs Debian's slurmctld, slurmd, slurm-client and munge packages and root (as in `.ci/run`);
without them the tests fail with the install command, they are never skipped. The demo DAG
runs through `workflow/profiles/slurm`, overridden only where the test cluster differs from a
real one: its partition (`--default-resources slurm_partition=hdmltest`), squeue-based status
checks (no accounting database, so no sacct), a short first status check, kept SLURM logs as
evidence, and no retries so that a broken job fails at once.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hdml.core import reference

sys.path.insert(0, str(Path(__file__).resolve().parent))  # slurm_cluster, in any import mode
from slurm_cluster import ClusterError, SlurmCluster, missing_requirements  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEEDS = [0]
METHODS = ["triplet", "npair"]
TINY = {
    "data_root": "data",
    "results_dir": "results",
    "report_dir": "report",
    "seeds": SEEDS,
    "datasets": {"digits": {
        "methods": METHODS,
        "train": {"steps": 20, "eval_every": 10, "batch_size": 30, "lr": 1e-3, "device": "cpu"},
        "per_method": {"npair": {"batch_size": 10}},
    }},
    # Distinct values, to see each reach sbatch: runtime -> --time, mem_mb -> --mem.
    "resources": {"default": {"mem_mb": 500, "runtime": 7}, "train": {"mem_mb": 600, "runtime": 9}},
}
LOCAL_RULES = {"prepare", "all"}  # downloads run on the submit host; `all` runs nowhere
# About a minute and a half on two idle cores; generous for a loaded CI machine.
TIMEOUT_S = 480


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    problems = missing_requirements()
    if problems:
        pytest.fail("SLURM test cluster unavailable: " + "; ".join(problems), pytrace=False)
    slurm = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()  # stops what it started if it fails
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield slurm
    finally:
        slurm.stop()
        assert not slurm.running() and not any(slurm.root.glob("*.pid")), "a SLURM daemon outlived the tests"


def slurm(cluster: SlurmCluster, *args: str) -> str:
    done = subprocess.run(args, env=cluster.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def known_jobs(cluster: SlurmCluster) -> set[int]:
    """Every job slurmctld still holds, finished ones included (MinJobAge=900)."""
    return {int(j) for j in slurm(cluster, "squeue", "-h", "-t", "all", "-o", "%i").split()}


def job_fields(cluster: SlurmCluster, job_id: int) -> dict[str, str]:
    """`scontrol show job` as a mapping (the fields used here hold no spaces)."""
    line = slurm(cluster, "scontrol", "-o", "show", "job", str(job_id))
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def job_stats(output: str) -> Counter:
    """Snakemake's first 'Job stats' table: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter({rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)})


@pytest.mark.slow
def test_cluster_runs_a_job_in_its_partition(cluster):
    assert slurm(cluster, "srun", "-n1", "printenv", "SLURM_JOB_PARTITION").strip() == cluster.partition


@pytest.mark.slow
def test_demo_workflow_through_slurm_profile(cluster, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [
        "timeout", "-k", "15", str(TIMEOUT_S),
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
        "--profile", str(REPO / "workflow/profiles/slurm"),
        "--default-resources", f"slurm_partition={cluster.partition}",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs", "--retries", "0",
    ]
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cluster.env['PATH']}"}
    before = known_jobs(cluster)
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, (f"snakemake exit {done.returncode}:\n{output[-4000:]}\n"
                                  f"{cluster.log_tail('slurmctld')}")

    # Results: every configured method and seed, through to the report.
    metrics = pd.read_csv(tmp_path / "results/metrics.csv")
    # every configured method and seed, and the untrained reference of each seed (hdml.core.reference)
    assert set(zip(metrics.method, metrics.seed, strict=True)) == {
        (m, s) for m in [*METHODS, reference.NAME] for s in SEEDS}
    assert metrics.value.between(0, 1).all()
    html = (tmp_path / "report/report.html").read_text()
    table = (tmp_path / "report/tables/digits.md").read_text()
    for shown in ("Triplet", "N-pair"):
        assert shown in html and shown in table

    # Snakemake's side: one kept SLURM log per job of every rule but the local ones.
    stats = job_stats(output)
    assert stats["train"] == stats["evaluate"] == (len(METHODS) + 1) * len(SEEDS)
    assert stats["prepare"] == 1 and "localrule prepare" in output
    log_dir = tmp_path / ".snakemake/slurm_logs"  # rule_<rule>/[<wildcards>/]<jobid>.log
    logs = sorted(log_dir.glob("rule_*/**/*.log"))
    rule_of = {int(log.stem): log.relative_to(log_dir).parts[0].removeprefix("rule_") for log in logs}
    assert len(rule_of) == len(logs)
    assert Counter(rule_of.values()) == Counter({r: n for r, n in stats.items() if r not in LOCAL_RULES})

    # SLURM's side: exactly those jobs ran, in the test partition, with the rules' resources
    # and the profile's requeue-on-preemption, and all completed with exit code 0.
    assert known_jobs(cluster) - before == set(rule_of)
    for job_id, rule in rule_of.items():
        job = job_fields(cluster, job_id)
        want = {**TINY["resources"]["default"], **TINY["resources"].get(rule, {})}
        assert (job["JobState"], job["ExitCode"], job["Partition"], job["Requeue"]) == (
            "COMPLETED", "0:0", cluster.partition, "1"), (rule, job)
        assert job["TimeLimit"] == f"00:{want['runtime']:02d}:00", (rule, job)
        assert job["MinMemoryNode"] == f"{want['mem_mb']}M", (rule, job)
