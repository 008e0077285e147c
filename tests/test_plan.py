import copy
from pathlib import Path

import pytest
import yaml

from hdml.core.config import ConfigError
from hdml.core.registry import method_names
from hdml.workflow.plan import plan_runs, set_args, validate_workflow_config

DEMO = yaml.safe_load((Path(__file__).resolve().parent.parent / "config/config.yaml").read_text())


def test_demo_config_is_valid_and_plans_every_method_and_seed():
    runs = validate_workflow_config(DEMO)
    default = {(r.method, r.seed) for r in runs if r.variant == "default"}
    assert default == {(m, s) for m in DEMO["datasets"]["glyphs"]["methods"] for s in DEMO["seeds"]}


def test_the_former_digits_demo_stays_a_valid_config_of_every_method():
    digits = yaml.safe_load((Path(__file__).resolve().parent.parent / "config/digits.yaml").read_text())
    runs = validate_workflow_config(digits)
    assert {r.dataset for r in runs} == {"digits"} and {r.method for r in runs} == set(method_names())
    assert set(digits["variants"]) == set(DEMO["variants"])  # the same rules and report sections


def test_variants_and_per_method_overrides():
    cfg = copy.deepcopy(DEMO)
    cfg["datasets"]["glyphs"]["per_method"] = {"npair": {"batch_size": 10}}
    cfg["variants"] = {"alpha=0": {"datasets": ["glyphs"], "methods": ["npair"], "seeds": [5], "set": {"lr": 0.5}}}
    runs = plan_runs(cfg)
    sweep = [r for r in runs if r.variant == "alpha=0"]
    assert [(r.method, r.seed) for r in sweep] == [("npair", 5)]
    assert sweep[0].overrides["batch_size"] == 10 and sweep[0].overrides["lr"] == 0.5
    assert sweep[0].path == "glyphs/npair/alpha=0/seed5"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["datasets"]["glyphs"]["methods"].append("magic"), "unknown method 'magic'"),
        (lambda c: c["datasets"].update(mnist={"methods": ["npair"]}), "datasets: unknown dataset 'mnist'"),
        (lambda c: c.pop("seeds"), "'seeds' is a required property"),
        (lambda c: c["datasets"]["glyphs"]["train"].update(steps=-5), r"train.*steps: must be >= 0"),
        (lambda c: c["datasets"]["glyphs"]["train"].update(stepz=5), r"stepz: unknown key"),
        (lambda c: c.update(seeds=[-1]), r"seeds\.0"),
        (lambda c: c.update(variants={"x": {"datasets": ["glyphs"], "methods": ["npair"],
                                             "set": {"hdml.lambda0": 2.0}}}), r"variants\.x\.set.*lambda0"),
    ],
)
def test_bad_workflow_config_names_the_field(edit, message):
    cfg = copy.deepcopy(DEMO)
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_workflow_config(cfg)


def test_variant_sets_a_plugin_section_only_for_the_methods_that_use_it():
    """`protocol=paper` sets HDML's beta beside the protocol for HDML and DAML runs alike: the
    DAML runs drop the hdml section, as a dataset's shared `train` section is dropped; a section
    none of the variant's methods uses is still an error (it would rerun the default)."""
    cfg = copy.deepcopy(DEMO)
    cfg["variants"] = {"p": {"datasets": ["glyphs"], "methods": ["hdml-npair", "daml-npair"],
                             "set": {"protocol": "paper", "hdml.beta": 5.0}}}
    runs = {r.method: r for r in validate_workflow_config(cfg) if r.variant == "p"}
    assert runs["hdml-npair"].overrides["hdml.beta"] == 5.0 and runs["hdml-npair"].overrides["protocol"] == "paper"
    assert "hdml.beta" not in runs["daml-npair"].overrides and runs["daml-npair"].overrides["protocol"] == "paper"
    cfg["variants"]["p"]["methods"] = ["daml-npair", "npair"]
    with pytest.raises(ConfigError, match=r"variants\.p\.set: hdml\.beta: the hdml section belongs to .*none of this "
                                          r"variant's methods \(daml-npair, npair\)"):
        validate_workflow_config(cfg)


def test_demo_and_paper_run_both_generator_methods_under_both_protocols():
    paper = yaml.safe_load((Path(__file__).resolve().parent.parent / "config/paper.yaml").read_text())
    for cfg in (DEMO, paper):
        runs = validate_workflow_config(cfg)
        for method in ("hdml-triplet", "hdml-npair", "daml-triplet", "daml-npair"):
            for variant in ("default", "protocol=paper"):
                assert any(r.method == method and r.variant == variant for r in runs), (method, variant)


def test_set_args_round_trip():
    from hdml.core.config import parse_sets

    overrides = {"lr": 1e-3, "image": {"flip": False}, "eval_ks": [1, 2], "hdml.lambda0": None, "backbone": "smallcnn"}
    assert parse_sets(set_args(overrides)) == {"lr": 1e-3, "image.flip": False, "eval_ks": [1, 2],
                                               "hdml.lambda0": None, "backbone": "smallcnn"}


def test_paper_config_plans_the_papers_grid():
    paper = yaml.safe_load((Path(__file__).resolve().parent.parent / "config/paper.yaml").read_text())
    runs = validate_workflow_config(paper)
    table = [r for r in runs if r.variant == "default"]
    # 3 datasets x (the paper's 11 methods + Multi-Similarity and Proxy-Anchor) x 3 seeds
    assert {r.dataset for r in table} == {"cub200", "cars196", "sop"} and len(table) == 3 * 13 * 3
    # + 12 variants x 3 seeds on Cars196 (ablation, sweeps) + protocol=paper: 3 x 4 x 3 + the untrained
    # reference (hdml.core.reference): 3 datasets x 3 seeds of 0 steps
    assert len(runs) == 189 + 9
    reference = [r for r in runs if r.variant == "untrained"]
    assert {(r.dataset, r.seed) for r in reference} == {(d, s) for d in ("cub200", "cars196", "sop") for s in range(3)}
    assert all(r.overrides["steps"] == 0 and r.method == "contrastive" for r in reference)
    from hdml.report.inputs import paper_table
    from hdml.report.names import paper_row

    for dataset in ("cub200", "cars196", "sop"):  # every row of the paper's Tables 1-3 is trained, and two beyond
        papers = paper_table()
        assert {paper_row(r.method) for r in table if r.dataset == dataset} == set(
            papers[papers.dataset == dataset].method) | {"Multi-Similarity", "Proxy-Anchor"}
    by = {(r.dataset, r.method, r.seed): r.overrides for r in table}
    assert by[("cars196", "hdml-npair", 0)]["batch_size"] == 128 == by[("sop", "daml-npair", 0)]["batch_size"]
    assert by[("cars196", "triplet", 0)]["batch_size"] == 120
    assert by[("cub200", "npair", 0)]["lr"] == 6e-5 and by[("cub200", "npair", 0)]["npair"]["l2_reg"] == 1.5e-2
    assert by[("sop", "hdml-npair", 0)]["hdml"]["beta"] == 5e4 and by[("sop", "npair", 0)]["eval_ks"][-1] == 1000
    variants = {r.variant for r in runs}
    assert {"no-softmax", "no-recon", "alpha=0", "lambda0=0.5", "protocol=paper"} <= variants


def test_demo_config_exercises_every_report_section():
    variants = set(DEMO["variants"])
    assert {"no-softmax", "no-recon", "protocol=paper"} <= variants
    assert any(v.startswith("alpha=") for v in variants) and any(v.startswith("lambda0=") for v in variants)
    assert set(DEMO["datasets"]["glyphs"]["methods"]) == set(method_names())  # every registered method
    assert DEMO["tsne"]["dataset"] == "glyphs"


def test_dataset_names_come_from_the_registry_not_the_schema(monkeypatch):
    """A newly registered dataset is accepted with no schema edit: the schema lists no names."""
    from hdml.data import datasets
    from hdml.workflow.plan import load_schema

    assert "cub200" not in yaml.safe_dump(load_schema())
    cfg = copy.deepcopy(DEMO)
    cfg["datasets"]["glyphs2"] = copy.deepcopy(cfg["datasets"]["glyphs"])
    with pytest.raises(ConfigError, match="unknown dataset 'glyphs2' \\(did you mean 'glyphs'"):
        validate_workflow_config(cfg)
    datasets.dataset_names()
    monkeypatch.setitem(datasets.DATASETS, "glyphs2", datasets.DATASETS["glyphs"])
    runs = validate_workflow_config(cfg)
    assert {r.dataset for r in runs} == {"glyphs", "glyphs2"}


@pytest.mark.parametrize("dataset, expected", [
    # the authors' products cadence: 4650, then 465 past 5,000; the stop waits for an evaluation step
    ("sop", [4650, 9300]),
    ("cars196", [*range(500, 5001, 500), *range(5056, 8001, 64)]),  # step % 64, as main_npair.py:209
    ("cub200", [*range(500, 5001, 500), *range(5014, 8005, 46)]),  # step % 46, stop at 8,004
])
def test_paper_config_evaluates_at_the_authors_cadence(dataset, expected):
    from hdml.core.config import build_run_config
    from hdml.core.schedule import eval_due
    from hdml.data.datasets import get_dataset

    paper = yaml.safe_load((Path(__file__).resolve().parent.parent / "config/paper.yaml").read_text())
    run = next(r for r in validate_workflow_config(paper)
               if (r.dataset, r.method, r.variant) == (dataset, "hdml-npair", "default"))
    cfg = build_run_config(get_dataset(dataset).defaults_for(run.method), run.overrides, run.method)
    assert [s for s in range(1, cfg["steps"] + 1) if eval_due(s, cfg)] == expected
