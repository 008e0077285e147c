"""The shared base of the methods that synthesise samples (hdml/methods/synthesis.py): one gradient
routing for HDML and DAML, and a name registry below the layers that ask it."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hdml.core import registry
from hdml.methods.optim import lr_schedule
from hdml.methods.synthesis import SynthesisMethod, set_grads

REPO = Path(__file__).resolve().parent.parent


def test_every_method_with_synthetic_samples_routes_through_the_shared_base():
    """HDML and DAML are `SynthesisMethod`s that keep its routing and section wiring, and no plug-in
    takes gradients itself (the copy of `_set_grads` in each is gone)."""
    registry.load_plugins()
    families = {name: cls for name, cls in registry.METHODS.items() if cls.family is not None}
    assert {cls.family for cls in families.values()} == {"HDML", "DAML"} and len(families) == 4
    for name, cls in families.items():
        assert issubclass(cls, SynthesisMethod), name
        assert "routed_step" not in vars(cls) and "set_grads" not in vars(sys.modules[cls.__module__]), name
        assert set(cls.config_sections()) == {cls.section_name, cls.loss_class.name}, name
    calls = [f"{path}:{node.lineno}" for path in [*(REPO / "baselines").glob("*.py"), *(REPO / "hdml").rglob("*.py")]
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "grad" and ast.unparse(node.value) == "torch.autograd"]
    assert len(calls) == 1 and calls[0].startswith(f"{REPO / 'hdml' / 'methods' / 'synthesis.py'}:")


class TwoLosses(SynthesisMethod):
    """A bare routed step: two losses of one graph, each moving its own parameter."""

    def __init__(self) -> None:
        self.a, self.b = nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(3.0))
        self.opt = torch.optim.SGD([self.a, self.b], lr=0.1)
        self.sched = lr_schedule(self.opt, {"lr_milestones": [1], "lr_gamma": 0.5})


def test_routed_step_keeps_each_gradient_to_its_group_and_frees_the_graph_last():
    m = TwoLosses()
    shared = (m.a * m.b).exp()  # one graph both losses use: a freed graph would fail the second backward
    m.routed_step([([m.a], shared * 2), ([m.b], shared)])
    e6 = torch.tensor(6.0).exp()
    assert m.a.item() == pytest.approx(2 - 0.1 * 2 * 3 * e6.item())  # d(2 e^ab)/da = 2 b e^ab
    assert m.b.item() == pytest.approx(3 - 0.1 * 2 * e6.item())  # d(e^ab)/db = a e^ab
    assert m.a.grad is None and m.b.grad is None and m.opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_a_non_finite_loss_moves_nothing():
    p = nn.Parameter(torch.tensor(1.0))
    set_grads([p], p * float("nan"), retain_graph=False)
    set_grads([p], torch.tensor(1.0), retain_graph=False)  # no graph
    assert p.grad is None
    set_grads([p], p * 3, retain_graph=False)
    assert p.grad.item() == 3


def test_the_name_registry_imports_no_method_code():
    """Config, datasets and the workflow ask the registry for names and sections at import time;
    the registry itself stays below the methods layer."""
    code = ("import sys, hdml.core.registry, hdml.core.config, hdml.data.datasets; "
            "print(sorted(m for m in sys.modules if m.startswith(('hdml.methods', 'hdml.model', 'baselines'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
