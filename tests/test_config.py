import re

import pytest

from hdml.config import ConfigError, build_run_config, parse_sets, parse_value


def test_defaults_match_the_spec():
    cfg = build_run_config({}, {})
    assert cfg["steps"] == 8000 and cfg["lr_milestones"] == [5632, 6848] and cfg["lr_gamma"] == 0.5
    assert cfg["protocol"] == "code"
    assert cfg["hdml"]["block"] == 64 and cfg["hdml"]["init_avg"] == 1e6
    assert cfg["npair"]["l2_reg"] == 3e-3 and cfg["triplet"]["margin"] == 1.0


def test_dotted_and_nested_overrides_with_types():
    cfg = build_run_config({}, parse_sets(["steps=10", "lr=1e-3", "hdml.alpha=7", "image.crop=8",
                                           "hdml.softmax=false", "eval_ks=[1, 10]"]))
    assert cfg["steps"] == 10 and cfg["lr"] == 1e-3 and isinstance(cfg["lr"], float)
    assert cfg["hdml"]["alpha"] == 7.0 and isinstance(cfg["hdml"]["alpha"], float)
    assert cfg["image"]["crop"] == 8 and cfg["hdml"]["softmax"] is False and cfg["eval_ks"] == [1, 10]
    cfg = build_run_config({}, {"image": {"flip": False}})
    assert cfg["image"] == {"resize": 256, "crop": 227, "flip": False, "normalize": "auto"}


def test_dataset_defaults_sit_between_defaults_and_overrides():
    cfg = build_run_config({"embedding_dim": 64, "steps": 5}, {"steps": 7})
    assert cfg["embedding_dim"] == 64 and cfg["steps"] == 7


@pytest.mark.parametrize(
    "sets, key",
    [
        (["stepz=3"], "stepz"),
        (["hdml.alpah=3"], "hdml.alpah"),
        (["steps=-1"], "steps"),
        (["steps=0"], "steps"),
        (["steps=1.5"], "steps"),
        (["lr=fast"], "lr"),
        (["hdml.softmax=3"], "hdml.softmax"),
        (["protocol=tf"], "protocol"),
        (["backbone=vgg"], "backbone"),
        (["hdml.lambda0=1.0"], "hdml.lambda0"),
        (["image.crop=[1]"], "image.crop"),
        (["steps.x=1"], "steps"),
        (["image=3"], "image"),
        (["batch_size=7"], "batch_size"),
    ],
)
def test_bad_overrides_name_the_key(sets, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key)):
        build_run_config({}, parse_sets(sets))


def test_set_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_sets(["steps"])
    assert parse_value("1e-3") == 1e-3 and parse_value("null") is None and parse_value("abc") == "abc"
