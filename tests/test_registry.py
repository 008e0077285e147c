"""Plug-in discovery: a loss file dropped into baselines/ registers itself without being listed in
baselines/__init__.py, and a broken or unregistered one is an error naming its file."""
import ast
import re
import sys
from pathlib import Path

import pytest

import baselines
from hdml.core import registry
from hdml.core.registry import method_names
from hdml.data import datasets

LOSS_FILE = '''
import torch
from hdml.core.registry import MetricLoss, register_loss


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
from hdml.data.datasets import DatasetSpec, register

register(DatasetSpec(name="tinyplugin", prepare=lambda root, **_: root, channels=1))
"""


def test_a_new_dataset_file_is_discovered(tmp_path, monkeypatch):
    """hdml/data/datasets/ loads the same way: a module there registers its dataset with no import line."""
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
            sys.modules.pop(f"hdml.data.datasets.{name}", None)


REPO = Path(__file__).resolve().parent.parent
REGISTRIES = {"hdml.core.registry"}  # where plug-ins are loaded and looked up
SAMPLER_LAYOUTS = {"triplet", "npair", "m_per_class"}  # batch layouts, named like two losses


def plugin_modules() -> set[str]:
    registry.load_plugins()
    return {cls.__module__ for cls in [*registry.METHODS.values(), *registry.LOSSES.values()]}


def named_plugins(path: Path, modules: set[str], names: set[str]) -> list[str]:
    """Where the file at `path` imports a plug-in module or spells a plug-in's name as a string."""
    text = path.read_text()
    if path.suffix != ".py":  # Snakefile, .smk: not Python's grammar; their quoted words
        return [f"{path}: {word!r}" for word in re.findall(r"[\"']([\w-]+)[\"']", text) if word in names]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and node.value in names:
            found.append(f"{path}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno}: import {a.name}" for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            found += [f"{path}:{node.lineno}: imports {m}" for m in sorted(imported & modules)]
    return found


def test_no_module_names_a_specific_plugin_except_the_registry():
    """One way in for each kind of plug-in (issue 15): outside the plug-in files and the
    registries, no module of the package or the workflow imports a method or loss plug-in or
    names one (a registered name as a string; the sampler layouts `triplet`/`npair` excepted).
    What the report needs to know of a method it reads from the plug-in (`base`, `family`,
    `display_name`, ...)."""
    modules = plugin_modules()
    names = (set(registry.METHODS) | set(registry.LOSSES)) - SAMPLER_LAYOUTS
    files = [REPO / "Snakefile", *(REPO / "workflow").rglob("*.smk"), *(REPO / "workflow").rglob("*.py"),
             *(REPO / "hdml").rglob("*.py"), *(REPO / "baselines").rglob("*.py")]
    module_of = {f: ".".join(f.relative_to(REPO).with_suffix("").parts) for f in files}
    checked = [f for f in files if module_of[f] not in modules | REGISTRIES]
    assert len(checked) > 30 and REPO / "hdml" / "report" / "sections" / "datasets.py" in checked
    assert not [hit for f in checked for hit in named_plugins(f, modules, names)]


def test_the_plugin_scan_finds_a_name_and_an_import(tmp_path):
    modules, names = plugin_modules(), {"hdml-npair", "proxyanchor"}
    bad = tmp_path / "bad.py"
    bad.write_text('from baselines.proxyanchor import ProxyAnchorLoss\nimport baselines.hdml\nX = "hdml-npair"\n')
    assert len(named_plugins(bad, modules, names)) == 3
    rule = tmp_path / "x.smk"
    rule.write_text('rule a:\n    params:\n        m="proxyanchor",\n')
    assert named_plugins(rule, modules, names) == [f"{rule}: 'proxyanchor'"]


def test_methods_declare_their_base_loss_and_family():
    from hdml.report.names import base_loss
    from hdml.report.sections.synthetic import pairs

    registry.load_plugins()
    built_on_a_loss = {name: cls for name, cls in registry.METHODS.items() if hasattr(cls, "loss_class")}
    assert len(built_on_a_loss) == 4
    for name, cls in built_on_a_loss.items():
        assert cls.base == cls.loss_class.name and cls.base in registry.LOSSES, name
        assert base_loss(name) == cls.base and cls.family in ("HDML", "DAML"), name
    assert base_loss("triplet") is None and base_loss("no-such-method") is None
    assert pairs() == {"triplet": ("daml-triplet", "hdml-triplet"), "npair": ("daml-npair", "hdml-npair")}
