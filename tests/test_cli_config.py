"""`hdml config` prints a run config as YAML (ruff's F821 found it raising NameError instead)."""
import yaml

from hdml.cli import main


def test_hdml_config_prints_the_run_config_as_yaml(capsys):
    main(["config", "--dataset", "digits", "--set", "lr=0.5"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["lr"] == 0.5 and cfg["image"]["resize"] == 8
