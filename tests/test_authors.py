"""The suite against the HDML authors' own TF 1 code (bench/authors.py), and the fixes it led to.

The harness tests need TensorFlow and a checkout of wzzheng/HDML at fa03ef0 (never part of this project);
they skip without them. Run them with
    pip install -e '.[authors]'; HDML_AUTHORS_PATH=/path/to/HDML pytest tests/test_authors.py
The other tests check the suite's side of the fixes (initialisation, BatchNorm running variance, TF's
Adam) against hand computations, without TensorFlow.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines.hdml import HDMLNPair
from hdml.core.config import default_config, merge, validate
from hdml.methods.base import build_method
from hdml.methods.optim import TFAdam
from hdml.model.embedding import EmbeddingNet, TFBatchNorm1d, build_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import authors  # noqa: E402 (bench/ is not a package)
import authors_shims  # noqa: E402

RUN = "pip install -e '.[authors]'; HDML_AUTHORS_PATH=/path/to/wzzheng/HDML@fa03ef0 pytest tests/test_authors.py"


def authors_checkout() -> Path:
    """The checkout named by HDML_AUTHORS_PATH, or a skip that says how to run the test."""
    path = os.environ.get("HDML_AUTHORS_PATH")
    if not path:
        pytest.skip(f"HDML_AUTHORS_PATH is not set (the authors' code is not part of the project): {RUN}")
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None:
        pytest.skip(f"tensorflow / tf-keras are not installed: {RUN}")
    return Path(path)


@pytest.mark.parametrize("variant", sorted(authors.VARIANTS))
def test_authors_graph_agrees_term_by_term_and_after_k_steps(variant: str) -> None:
    """Every term of every one of 20 steps within 1e-5 of its scale (two J_avg blocks of 8 crossed), every
    parameter and BatchNorm statistic within 1e-4 after each step from the same state (bar at most 1e-4 of a
    tensor's elements, noise-level gradients that Adam steps either way), initial values (bench/authors.py)."""
    checkout = authors_checkout()
    rows, drift, control = authors.run_variant(checkout, variant, steps=20, block=8, log=lambda _: None)
    failed = [f"{r['term']}: {r['max_abs_diff']:.2e} > {r['tolerance']:.2e}" for r in rows if not r["passed"]]
    assert not failed, "\n".join(failed)
    assert len(drift) == len(control) == 20
    terms = {r["term"].split(": ", 1)[1] for r in rows}
    assert {"J_m (unweighted, weight decay in)", "J_syn (the base loss on the synthetic tuple)", "J_metric",
            "J_gen", "J_recon, (1 - lambda) sum", "J_soft, S lambda CE", "softmax CE on real features (J_cls)",
            "pulling output (synthetic tuple), relative L2", "generator output, relative L2",
            "J_avg fed to the pulling", "w = exp(-beta / J_gen_avg), the weight of J_m"} <= terms
    # 14 trainable variables and 4 BatchNorm statistics, after each step from the same state
    assert sum(t.startswith("one step, from the same state") for t in terms) == 18
    # fc1, two generator layers, softmax layer: weights (std) and biases; two BatchNorms' four tensors
    assert sum(t.startswith("initial value") for t in terms) == 16


def test_harness_refuses_a_path_that_is_not_the_authors_checkout(tmp_path: Path) -> None:
    assert authors.main(["--authors", str(tmp_path)]) == 2


def test_python2_prints_become_calls() -> None:
    src = "def f(x):\n    print 'done'\n    print 'K: %d' % (x,), x\n    print(x)\n    printer = 1\n"
    out = authors_shims.py2_prints(src)
    assert out == "def f(x):\n    print('done')\n    print('K: %d' % (x,), x)\n    print(x)\n    printer = 1\n"
    compile(out, "f", "exec")


def test_integral_float_sizes_become_ints_and_others_are_refused() -> None:
    assert authors_shims._int_sizes([64.0, 1]) == [64, 1] and authors_shims._int_sizes(None) is None
    with pytest.raises(ValueError, match="2.5"):
        authors_shims._int_sizes([2.5])


def config(protocol: str, head_init: str = "glorot") -> dict:
    cfg = default_config()
    merge(cfg, {"protocol": protocol, "backbone": "smallcnn", "pretrained": False, "embedding_dim": 64,
                "head_init": head_init})
    validate(cfg)
    return cfg


def glorot_bound(layer: nn.Linear) -> float:
    return math.sqrt(6 / (layer.in_features + layer.out_features))


def test_protocol_code_starts_generator_and_softmax_layer_and_head_init_glorot_fc1_as_the_authors() -> None:
    """lib/nn_Ops.py:18,38: Glorot-uniform weights (the uniform's std is bound / sqrt 3), zero biases."""
    torch.manual_seed(0)
    cfg = config("code")
    model = build_model(cfg, 3)
    method = build_method("hdml-npair", model, cfg, 98)
    assert isinstance(method, HDMLNPair)
    layers = [model.head.fc, method.generator.net[0], method.generator.net[3], method.classifier]
    for layer in layers:
        w, bound = layer.weight.detach(), glorot_bound(layer)
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0


def test_baselines_of_the_authors_code_start_fc1_as_they_do_and_daml_keeps_its_own() -> None:
    """Their fc1 serves their baselines too (main_npair.py without HDML); DAML has code of its own."""
    cfg = config("code")
    for name, glorot in (("npair", True), ("triplet", True), ("daml-npair", False)):
        torch.manual_seed(0)
        model = build_model(cfg, 3)
        build_method(name, model, cfg, 98)
        fc = model.head.fc
        assert (fc.weight.abs().max() > 1.5 / math.sqrt(fc.in_features)) == glorot
        assert (torch.count_nonzero(fc.bias) == 0) == glorot


def test_protocol_paper_and_the_default_head_init_keep_pytorchs_default_initialisation() -> None:
    torch.manual_seed(0)
    model = build_model(config("code", head_init="pytorch"), 3)
    build_method("hdml-npair", model, config("code", head_init="pytorch"), 98)
    assert model.head.fc.weight.abs().max() <= 1 / math.sqrt(model.head.fc.in_features)
    cfg = config("paper", head_init="pytorch")
    model = build_model(cfg, 3)
    method = build_method("hdml-npair", model, cfg, 98, train_size=1000)
    for layer in (model.head.fc, method.generator.net[0], method.generator.net[3], method.classifier):
        bound = 1 / math.sqrt(layer.in_features)
        assert layer.weight.abs().max() <= bound and layer.weight.std().item() == pytest.approx(
            bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(layer.bias) == layer.out_features


def test_batchnorm_running_variance_is_the_biased_batch_variance_as_tensorflow() -> None:
    """tf.layers.batch_normalization on 2-D input: moving_var += 0.01 (sum (x - mean)^2 / n - moving_var);
    PyTorch's BatchNorm1d would take sum / (n - 1)."""
    x = np.random.default_rng(0).normal(3.0, 2.0, (6, 5)).astype(np.float32)
    bn, ref = TFBatchNorm1d(5), nn.BatchNorm1d(5, momentum=0.01, eps=1e-3)
    out, want_out = bn(torch.from_numpy(x)), ref(torch.from_numpy(x))
    mean = x.astype(np.float64).mean(0)
    biased = ((x - mean) ** 2).sum(0) / 6
    np.testing.assert_allclose(bn.running_var.numpy(), 0.99 * 1 + 0.01 * biased, rtol=1e-6)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.01 * mean, rtol=1e-6)
    np.testing.assert_allclose(ref.running_var.numpy(), 0.99 + 0.01 * biased * 6 / 5, rtol=1e-6)  # torch's
    torch.testing.assert_close(out, want_out)  # normalisation in training: the batch's biased variance
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    ref.running_var.copy_(bn.running_var)
    ref.eval()
    torch.testing.assert_close(bn(torch.from_numpy(x)), ref(torch.from_numpy(x)))


def test_tf_adam_adds_epsilon_before_the_bias_correction() -> None:
    """TF's AdamOptimizer: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), p -= lr_t m / (sqrt(v) + eps), by hand;
    at gradients near 1e-7 PyTorch's Adam moves the weight visibly further."""
    grads = [1e-7, -3e-8, 2e-7]
    p, torch_p = nn.Parameter(torch.zeros(1, dtype=torch.float64)), nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt, torch_opt = TFAdam([{"params": [p], "lr": 0.1}]), torch.optim.Adam([torch_p], lr=0.1)
    want, m, v = 0.0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        for param, o in ((p, opt), (torch_p, torch_opt)):
            param.grad = torch.tensor([g], dtype=torch.float64)
            o.step()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        want -= 0.1 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (math.sqrt(v) + 1e-8)
    assert p.item() == pytest.approx(want, rel=1e-9)
    assert abs(torch_p.item() - want) > 0.05 * abs(want)


def test_protocol_code_trains_with_tensorflows_adam() -> None:
    model = EmbeddingNet(nn.Linear(6, 12), 12, 4)
    assert type(build_method("npair", model, config("code"), 3).opt) is TFAdam
    assert type(build_method("npair", model, config("paper"), 3).opt) is torch.optim.Adam
