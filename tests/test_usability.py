"""Errors and help that say what to do next (issue 18): did-you-mean, download hints, --help
listings, one-line workflow-config errors, quiet faiss, defaults that work for every method."""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hdml.cli import main, parser
from hdml.core.config import ConfigError, build_run_config, describe_keys, rules_for
from hdml.core.registry import method_names, method_sampler
from hdml.data.datasets import DATASETS, cub200, dataset_names, get_dataset, sop
from hdml.data.datasets.download import PrepareError
from hdml.data.samplers import build_sampler
from hdml.workflow.plan import validate_workflow_config

REPO = Path(__file__).resolve().parent.parent
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())
PAPER_METHODS = ["angular", "contrastive", "ddml", "hdml-npair", "hdml-triplet", "lifted", "npair", "semihard",
                 "triplet"]
ALL_METHODS = method_names()  # every registered plug-in: a new one is covered without editing this file


def hdml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hdml.cli", *args], capture_output=True, text=True, timeout=300)


def test_every_method_is_listed():
    assert set(PAPER_METHODS) <= set(ALL_METHODS) and ALL_METHODS == sorted(set(ALL_METHODS))


def test_unknown_method_lists_every_method_with_a_did_you_mean(capsys):
    assert main(["train", "--dataset", "digits", "--method", "hdml-triplett", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown method 'hdml-triplett' (did you mean 'hdml-triplet'" in err
    assert all(m in err for m in ALL_METHODS)
    assert not Path("unused").exists()


def test_unknown_dataset_and_run_config_key_get_a_did_you_mean(capsys):
    assert main(["train", "--dataset", "digit", "--method", "npair", "--out", "unused"]) == 2
    assert "unknown dataset 'digit' (did you mean 'digits'?)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"eval_evry: unknown key \(did you mean 'eval_every'"):
        build_run_config({}, {"eval_evry": 5})


def test_top_level_typo_in_a_workflow_config_is_one_line_with_a_did_you_mean():
    cfg = copy.deepcopy(DEMO)
    cfg["seed"] = cfg.pop("seeds")
    with pytest.raises(ConfigError) as err:
        validate_workflow_config(cfg)
    text = str(err.value)
    assert "\n" not in text
    assert "(top level): unknown key 'seed' (did you mean 'seeds'?)" in text


def test_nested_typo_and_unknown_workflow_method_get_a_did_you_mean():
    cfg = copy.deepcopy(DEMO)
    cfg["datasets"]["glyphs"]["per_metod"] = {}
    with pytest.raises(ConfigError, match=r"datasets\.glyphs: unknown key 'per_metod' \(did you mean 'per_method'"):
        validate_workflow_config(cfg)
    cfg = copy.deepcopy(DEMO)
    cfg["datasets"]["glyphs"]["methods"].append("lifted-structure")
    with pytest.raises(ConfigError, match=r"unknown method 'lifted-structure' \(did you mean 'lifted'"):
        validate_workflow_config(cfg)


def test_check_config_cli_gives_one_line_for_a_top_level_typo(tmp_path):
    cfg = copy.deepcopy(DEMO)
    cfg["seed"] = cfg.pop("seeds")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = hdml("check-config", str(path))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "did you mean 'seeds'?" in out.stderr


@pytest.mark.parametrize("module, filename, size", [(cub200, "CUB_200_2011.tgz", "1.1 GB"),
                                                     (sop, "Stanford_Online_Products.zip", "2.9 GB")])
def test_failed_download_ends_with_what_to_fetch_by_hand(http_server, tmp_path, module, filename, size, monkeypatch):
    monkeypatch.setattr(module, "URLS", [http_server.url(f"/dead/{filename}")])
    with pytest.raises(PrepareError) as err:
        module.prepare(tmp_path / "data")
    last = str(err.value).splitlines()[-1]
    assert f"`{filename}` (about {size}, md5 {module.MD5})" in last
    assert f"hdml prepare {module.NAME} --root ROOT --archive {filename}" in last
    assert "HTTP 404" in str(err.value)


def test_prepare_help_lists_datasets_and_their_files():
    text = _help("prepare")
    for name in dataset_names():
        assert f"\n  {name} " in text
    for spec in DATASETS.values():
        for filename, size, md5 in spec.files:
            assert f"{filename} ({size}, md5 {md5})" in text
    assert "--archive" in text


def test_train_help_lists_datasets_methods_and_the_key_listing():
    text = _help("train")
    assert "datasets: cars196, cub200, digits, glyphs, sop" in text
    assert f"methods:  {', '.join(ALL_METHODS)}" in text
    assert "hdml config --list" in text


def _help(command: str) -> str:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


def test_every_cli_option_has_help_text():
    p = parser()
    missing = [a.dest for a in p._actions if not isinstance(a, argparse._SubParsersAction) and not a.help]
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        missing += [f"{name} {a.dest}" for a in command._actions if not a.help]
    assert missing == []


def test_config_list_shows_key_default_and_allowed_values(capsys):
    assert main(["config", "--list", "--dataset", "digits", "--method", "hdml-npair"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[1:]}
    assert rows["batch_size"] == ["10", "integer > 0"]  # digits: one pair from each of its 5 classes
    assert rows["amp"] == ['"fp32"', "fp32 | tf32 | bf16"]
    assert rows["hdml.lambda0"] == ["null", "number | null, in [0, 1)"]  # declared by the HDML plug-in
    assert rows["tensorboard"] == ["false", "true | false"]
    assert len(rows) == len(describe_keys(build_run_config({}, {}, "hdml-npair"), rules_for("hdml-npair")))
    # only the method's own sections: HDML's and its base loss's
    assert {key.split(".")[0] for key in rows if "." in key} == {"image", "hdml", "npair"}
    assert main(["config", "--list", "--dataset", "digits", "--method", "triplet"]) == 0
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["triplet.reduction"] == ['"sum"', "sum | mean"]  # declared by the loss
    assert not any(key.startswith(("hdml.", "npair.")) for key in rows)


def test_config_prints_the_run_config_of_the_method(capsys):
    assert main(["config", "--dataset", "digits", "--method", "triplet", "--set", "triplet.margin=0.5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg == build_run_config(get_dataset("digits").defaults_for("triplet"), {"triplet.margin": 0.5}, "triplet")
    assert cfg["triplet"]["margin"] == 0.5 and "hdml" not in cfg and cfg["batch_size"] == 30


def test_faiss_import_info_is_silent_unless_very_verbose(tmp_path):
    np.save(tmp_path / "e.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    np.save(tmp_path / "l.npy", np.repeat(np.arange(4), 5))
    args = ["metrics", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]
    quiet, loud = hdml("-v", *args), hdml("-vv", *args)
    assert quiet.returncode == loud.returncode == 0
    assert "faiss" not in quiet.stderr
    assert "faiss.loader" in loud.stderr  # the line exists, so its absence above is the filter's doing


# Train-split class sizes of each dataset (EXPECTED counts of its prepare), as synthetic labels.
def _train_labels(dataset: str) -> np.ndarray:
    if dataset == "digits":
        return np.repeat(np.arange(5), 180)
    if dataset == "sop":  # 11,318 classes of 2-12 images, 59,551 in all
        rng = np.random.default_rng(0)
        return np.repeat(np.arange(11318), rng.integers(2, 9, 11318))
    classes, images = {"cub200": (100, 5864), "cars196": (98, 8054)}[dataset]
    return np.repeat(np.arange(classes), images // classes)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("dataset", ["digits", "cub200", "cars196", "sop"])
def test_every_dataset_default_suits_every_method(dataset, method):
    """With no overrides, a run config builds and its sampler draws a batch of the layout the
    method needs."""
    cfg = build_run_config(get_dataset(dataset).defaults_for(method), {})
    kind = method_sampler(method)
    batch = build_sampler(kind, _train_labels(dataset), cfg, torch.Generator().manual_seed(0))()
    expected = 3 * (cfg["batch_size"] // 3) if kind == "triplet" else cfg["batch_size"]
    assert len(batch) == expected and len(batch) >= (4 if kind == "npair" else 3)
    if kind == "npair":
        labels = _train_labels(dataset)[batch]
        n = len(batch) // 2
        assert (labels[:n] == labels[n:]).all() and len(set(labels[:n])) == n


@pytest.mark.parametrize("method", ALL_METHODS)
def test_digits_defaults_train_every_method(method, digits_root, tmp_path):
    """`hdml train --dataset digits --method M` with the defaults (only fewer steps) trains."""
    assert main(["train", "--dataset", "digits", "--method", method, "--root", str(digits_root),
                 "--out", str(tmp_path), "--set", "steps=2"]) == 0
    assert (tmp_path / "metrics.json").is_file()
