"""Plug-in discovery: a loss file dropped into baselines/ registers itself without being listed in
baselines/__init__.py, and a broken or unregistered one is an error naming its file."""
import sys

import pytest

import baselines
from hdml import datasets, registry
from hdml.methods import method_names

LOSS_FILE = '''
import torch
from hdml.registry import MetricLoss, register_loss


@register_loss
class ZeroLoss(MetricLoss):
    name = "{name}"

    def forward(self, z, labels):
        return z.sum() * 0
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder that is part of the `baselines` package for the test; its modules and the losses
    they register are removed afterwards."""
    registry.load_plugins()  # the shipped plug-ins, which stay
    monkeypatch.setattr(baselines, "__path__", [*baselines.__path__, str(tmp_path)])
    before = set(registry.LOSSES)
    yield tmp_path
    for name in set(registry.LOSSES) - before:
        del registry.LOSSES[name]
    for path in tmp_path.glob("*.py"):
        sys.modules.pop(f"baselines.{path.stem}", None)


def test_a_new_loss_file_is_discovered_without_an_import_line(plugin_dir):
    (plugin_dir / "zero_loss_plugin.py").write_text(LOSS_FILE.format(name="zero-plugin"))
    assert "zero_loss_plugin" not in (baselines.__doc__ or "")
    cls = registry.get_loss("zero-plugin")
    assert cls.__module__ == "baselines.zero_loss_plugin"
    assert "zero-plugin" in method_names()


def test_the_shipped_losses_are_all_found():
    registry.load_plugins()
    assert {"angular", "contrastive", "ddml", "lifted", "npair", "semihard", "triplet"} <= set(registry.LOSSES)


def test_a_plugin_that_fails_to_import_names_its_file(plugin_dir):
    bad = plugin_dir / "broken_plugin.py"
    bad.write_text("import torch\nraise RuntimeError('half-written loss')\n")
    with pytest.raises(ImportError, match=r"broken_plugin\.py.*half-written loss"):
        registry.load_plugins()


def test_an_unregistered_loss_class_names_its_file(plugin_dir):
    (plugin_dir / "forgot_plugin.py").write_text(LOSS_FILE.format(name="forgot").replace("@register_loss\n", ""))
    message = r"forgot_plugin\.py: loss class ZeroLoss \(name 'forgot'\) is not registered"
    with pytest.raises(ImportError, match=message):
        registry.load_plugins()


DATASET_FILE = """
from hdml.datasets import DatasetSpec, register

register(DatasetSpec(name="tinyplugin", prepare=lambda root, **_: root, channels=1))
"""


def test_a_new_dataset_file_is_discovered(tmp_path, monkeypatch):
    """hdml/datasets/ loads the same way: a module there registers its dataset with no import line."""
    datasets.dataset_names()  # the shipped ones, which stay
    monkeypatch.setattr(datasets, "__path__", [*datasets.__path__, str(tmp_path)])
    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))
    (tmp_path / "tinyplugin_ds.py").write_text(DATASET_FILE)
    try:
        assert "tinyplugin" in datasets.dataset_names()
        assert datasets.get_dataset("tinyplugin").channels == 1
        (tmp_path / "broken_ds.py").write_text("raise RuntimeError('half-written dataset')\n")
        with pytest.raises(ImportError, match=r"broken_ds\.py: dataset module .*half-written dataset"):
            datasets.dataset_names()
    finally:
        for name in ("tinyplugin_ds", "broken_ds"):
            sys.modules.pop(f"hdml.datasets.{name}", None)
