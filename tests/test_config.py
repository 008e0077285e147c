import re

import pytest

from hdml.core.config import ConfigError, build_run_config, parse_sets, parse_value


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


def float_keys() -> list[str]:
    """Every run-config key that holds a float (float default, or nullable float)."""
    from hdml.core.config import default_config, rules_for

    nullable = rules_for().nullable

    def walk(node: dict, prefix: str) -> list[str]:
        out = []
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                out += walk(value, f"{dotted}.")
            elif isinstance(value, float) and not isinstance(value, bool) or float in nullable.get(dotted, ()):
                out.append(dotted)
        return out

    return walk(default_config(), "")


def test_float_keys_cover_the_known_ones():
    keys = float_keys()
    assert {"lr", "lr_gamma", "weight_decay", "hdml.alpha", "hdml.lambda0", "triplet.margin"} <= set(keys)
    assert len(keys) > 15


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "nan", "inf", "-Infinity"])
def test_non_finite_numbers_are_refused_for_every_float_key(text):
    for key in float_keys():
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be a finite number"):
            build_run_config({}, parse_sets([f"{key}={text}"]))  # --set
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be a finite number"):
            build_run_config({}, {key: float(text.replace(".", "")) if text.startswith((".", "-.")) else text})


def test_yaml_exponent_without_dot_is_a_number_in_a_workflow_config(tmp_path):
    # YAML 1.1 (PyYAML, Snakemake) reads `1e-3` as a string; it is a number, as with --set.
    import yaml

    from hdml.workflow.plan import validate_workflow_config

    text = ("data_root: d\nresults_dir: r\nreport_dir: p\nseeds: [0]\n"
            "datasets: {digits: {methods: [hdml-triplet], train: {lr: 1e-3, hdml.alpha: 2e1, triplet.margin: 5E-1}}}\n")
    config = yaml.safe_load(text)
    assert config["datasets"]["digits"]["train"]["lr"] == "1e-3"  # the YAML 1.1 reading
    run, _reference = validate_workflow_config(config)  # the run, and its untrained reference (hdml.core.reference)
    cfg = build_run_config({}, run.overrides)
    assert cfg["lr"] == 1e-3 and cfg["hdml"]["alpha"] == 20.0 and cfg["triplet"]["margin"] == 0.5
    with pytest.raises(ConfigError, match="lr: expected a number, got 'fast'"):
        build_run_config({}, {"lr": "fast"})


def test_check_config_refuses_nan(tmp_path, capsys):
    from hdml.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("data_root: d\nresults_dir: r\nreport_dir: p\nseeds: [0]\n"
                    "datasets: {digits: {methods: [triplet], train: {lr: .nan}}}\n")
    assert main(["check-config", str(path)]) == 2
    assert "lr: must be a finite number, got nan" in capsys.readouterr().err


def test_a_run_config_holds_only_its_methods_sections():
    triplet = build_run_config({}, {}, "triplet")
    assert "triplet" in triplet and not {"hdml", "npair", "contrastive", "proxyanchor"} & set(triplet)
    hdml = build_run_config({}, {}, "hdml-npair")
    assert {"hdml", "npair"} <= set(hdml) and not {"triplet", "contrastive"} & set(hdml)
    assert hdml["hdml"]["block"] == 64 and hdml["npair"]["l2_reg"] == 3e-3


@pytest.mark.parametrize("override", [{"hdml.alpha": 3.0}, {"hdml": {"alpha": 3.0}}])
def test_another_methods_section_is_refused_naming_who_uses_it(override):
    key = "hdml.alpha" if "hdml.alpha" in override else "hdml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: the hdml section belongs to hdml-npair, "
                                          r"hdml-triplet, not to method triplet"):
        build_run_config({}, override, "triplet")
    with pytest.raises(ConfigError, match=r"^hdml\.alpah: unknown key"):
        build_run_config({}, {"hdml.alpah": 3.0}, "hdml-triplet")


def test_shared_train_settings_reach_only_the_methods_that_use_them():
    from hdml.workflow.plan import validate_workflow_config

    config = {"data_root": "d", "results_dir": "r", "report_dir": "p", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet", "hdml-triplet"],
                                      "train": {"steps": 5, "hdml": {"block": 8}, "triplet.margin": 0.5}}}}
    runs = {run.method: run.overrides for run in validate_workflow_config(config) if run.variant == "default"}
    assert runs["triplet"] == {"steps": 5, "triplet.margin": 0.5}
    assert runs["hdml-triplet"] == {"steps": 5, "hdml": {"block": 8}, "triplet.margin": 0.5}
    # a method's own settings and a variant's are not filtered: a wrong section there is an error
    config["datasets"]["digits"]["per_method"] = {"triplet": {"hdml.block": 4}}
    with pytest.raises(ConfigError, match=r"per_method.triplet: hdml.block: the hdml section belongs to"):
        validate_workflow_config(config)


def test_adding_a_plugin_changes_no_other_methods_run_config(monkeypatch):
    """The checkpoint fingerprint is the run config: a new loss must leave other runs' alone."""
    from hdml.core.registry import LOSSES, MetricLoss

    class Extra(MetricLoss):
        name = "extra"
        defaults = {"scale": 1.0, "mode": "a"}
        choices = {"mode": ("a", "b")}

    before = {m: build_run_config({}, {}, m) for m in ("triplet", "npair", "hdml-npair", "proxyanchor")}
    everything = build_run_config({}, {})
    monkeypatch.setitem(LOSSES, "extra", Extra)
    assert {m: build_run_config({}, {}, m) for m in before} == before
    assert build_run_config({}, {}, "extra")["extra"] == {"scale": 1.0, "mode": "a"}
    assert build_run_config({}, {}) == {**everything, "extra": {"scale": 1.0, "mode": "a"}}
    with pytest.raises(ConfigError, match=r"^extra.mode: must be one of \['a', 'b'\]"):
        build_run_config({}, {"extra.mode": "c"}, "extra")


def test_selection_val_needs_the_datasets_val_split_in_the_workflow_config():
    from hdml.workflow.plan import validate_workflow_config

    config = {"data_root": "d", "results_dir": "r", "report_dir": "p", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet"], "train": {"selection": "val"}}}}
    with pytest.raises(ConfigError, match=r"datasets.digits: triplet \(default\) has selection: val, which needs a "
                                          r"validation split: add prepare: \{val_folds: 4\}"):
        validate_workflow_config(config)
    config["datasets"]["digits"]["prepare"] = {"val_folds": 4}
    run, _reference = validate_workflow_config(config)  # + the untrained reference run
    assert run.overrides == {"selection": "val"}
    config["datasets"]["digits"]["prepare"] = {"val_folds": 1}
    with pytest.raises(ConfigError, match="val_folds"):
        validate_workflow_config(config)


def test_val_fold_within_the_folds_and_only_with_selection_val():
    from hdml.workflow.plan import validate_workflow_config

    config = {"data_root": "d", "results_dir": "r", "report_dir": "p", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet"], "prepare": {"val_folds": 4},
                                      "train": {"selection": "val", "val_fold": 3}}}}
    run, _reference = validate_workflow_config(config)
    assert run.overrides["val_fold"] == 3
    config["datasets"]["digits"]["train"]["val_fold"] = 4
    with pytest.raises(ConfigError, match=r"val_fold: 4, but prepare: \{val_folds: 4\} makes folds 0..3"):
        validate_workflow_config(config)
    config["datasets"]["digits"]["train"] = {"val_fold": 1}
    with pytest.raises(ConfigError, match=r"val_fold: 1 only applies to selection: val"):
        validate_workflow_config(config)
    config["datasets"]["digits"]["train"] = {"selection": "val", "val_fold": -1}
    with pytest.raises(ConfigError, match=r"val_fold: must be >= 0"):
        validate_workflow_config(config)


def test_evaluate_test_false_only_with_selection_val_and_never_in_a_reported_run():
    """A run without test images has only its validation score to report; the report's runs need
    their test metrics, so only tuning trials (hdml.workflow.tune) train with evaluate_test: false."""
    from hdml.workflow.plan import validate_workflow_config

    assert build_run_config({}, {})["evaluate_test"] is True
    assert build_run_config({}, {"selection": "val", "evaluate_test": False})["evaluate_test"] is False
    for selection in ("last", "test"):
        with pytest.raises(ConfigError, match=f"evaluate_test: false needs selection: val.*{selection}"):
            build_run_config({}, {"selection": selection, "evaluate_test": False})
    with pytest.raises(ConfigError, match="evaluate_test"):
        build_run_config({}, {"selection": "val", "evaluate_test": "no test"})
    config = {"data_root": "d", "results_dir": "r", "report_dir": "p", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet"], "prepare": {"val_folds": 4},
                                      "train": {"selection": "val", "evaluate_test": False}}}}
    with pytest.raises(ConfigError, match=r"digits/triplet \(default\): evaluate_test: false is for tuning trials"):
        validate_workflow_config(config)
