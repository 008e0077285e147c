"""Block averages J_avg / J_gen_avg (code: blocks of 64 steps, init 1e6; paper: one epoch) and
the e^(-beta / J_gen_avg) and 1 - e^(-alpha / J_avg) weights they drive."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from baselines.hdml import HDMLTriplet, metric_weight
from hdml.core.config import default_config, merge, validate
from hdml.methods.base import build_method
from hdml.methods.synthesis import BlockAverage
from hdml.model.embedding import EmbeddingNet

LABELS = torch.tensor([0, 1, 2, 0] * 2 + [1, 2, 0, 2])  # 4 triplets: [anchors; positives; negatives]


def tiny(overrides: dict, train_size: int | None = None) -> HDMLTriplet:
    torch.manual_seed(0)
    model = EmbeddingNet(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12)), 12, 4)
    cfg = default_config()
    merge(cfg, {"lr": 1e-2, "weight_decay": 1e-3, "batch_size": 12, **overrides})
    validate(cfg)
    return build_method("hdml-triplet", model, cfg, 3, train_size=train_size)


def run(method: HDMLTriplet, steps: int) -> list[dict[str, float]]:
    gen = torch.Generator().manual_seed(1)
    return [method.step(torch.randn(12, 6, generator=gen), LABELS) for _ in range(steps)]


def test_block_average_unit() -> None:
    avg = BlockAverage(64, 1e6)
    seen = []
    for s in range(129):
        seen.append(avg.value)
        avg.update(float(s))
    assert seen[0] == seen[63] == 1e6
    assert seen[64] == seen[127] == np.mean(np.arange(64))  # 31.5
    assert seen[128] == np.mean(np.arange(64, 128))  # 95.5


def test_block_average_skips_nans_and_keeps_value_when_a_block_has_none() -> None:
    avg = BlockAverage(4, 1e6)
    for x in [1.0, float("nan"), 3.0, float("inf")]:
        avg.update(x)
    assert avg.value == 2.0
    for _ in range(4):
        avg.update(float("nan"))
    assert avg.value == 2.0


def test_block_average_state_round_trip_and_mismatch() -> None:
    a = BlockAverage(3, 10.0)
    a.update(1.0)
    b = BlockAverage(3, 10.0)
    b.load_state_dict(a.state_dict())
    for avg in (a, b):
        avg.update(2.0)
        avg.update(6.0)
    assert a.value == b.value == 3.0
    with pytest.raises(ValueError, match="block"):
        BlockAverage(4, 10.0).load_state_dict(a.state_dict())


def test_weights() -> None:
    assert metric_weight(1e4, 1e6) == pytest.approx(math.exp(-0.01), rel=1e-12)
    assert metric_weight(5e3, 5e3) == pytest.approx(math.exp(-1), rel=1e-12)
    assert metric_weight(0.0, 7.0) == 1.0
    assert metric_weight(1e4, 0.0) == 0.0


def test_code_protocol_blocks_of_64_in_the_method() -> None:
    logs = run(tiny({}), 129)
    jmw = [row["j_m_weighted"] for row in logs]
    jgen = [row["j_gen"] for row in logs]
    for s in (0, 63):
        assert logs[s]["j_avg"] == logs[s]["j_gen_avg"] == 1e6
    for s, block in ((64, range(0, 64)), (127, range(0, 64)), (128, range(64, 128))):
        assert logs[s]["j_avg"] == pytest.approx(np.mean([jmw[i] for i in block]), rel=1e-12)
        assert logs[s]["j_gen_avg"] == pytest.approx(np.mean([jgen[i] for i in block]), rel=1e-12)
    # the code averages the weighted J_m, which differs from the raw one here (w = e^-(1e4/1e6) at first)
    assert logs[64]["j_avg"] != pytest.approx(np.mean([row["j_m"] for row in logs[:64]]), rel=1e-6)
    assert logs[0]["j_m_weighted"] == pytest.approx(math.exp(-1e4 / 1e6) * logs[0]["j_m"], rel=1e-6)
    # the weights the averages drive, at every step
    for row in logs:
        assert row["lambda0"] == pytest.approx(1 - math.exp(-7.0 / row["j_avg"]), rel=1e-6)
        w = math.exp(-1e4 / row["j_gen_avg"])
        assert row["j_metric"] == pytest.approx(w * row["j_m"] + (1 - w) * row["j_syn"], rel=1e-5, abs=1e-6)
    assert logs[128]["lambda0"] > logs[0]["lambda0"]


def test_paper_protocol_averages_over_an_epoch_of_raw_jm() -> None:
    method = tiny({"protocol": "paper", "hdml.beta": 5.0}, train_size=30)  # ceil(30 / 12) = 3 steps
    assert method.j_avg.block == method.j_gen_avg.block == 3
    logs = run(method, 7)
    assert [row["j_avg"] for row in logs[:3]] == [1e6] * 3
    assert logs[3]["j_avg"] == pytest.approx(np.mean([row["j_m"] for row in logs[:3]]), rel=1e-12)
    assert logs[6]["j_avg"] == pytest.approx(np.mean([row["j_m"] for row in logs[3:6]]), rel=1e-12)
    assert logs[6]["j_gen_avg"] == pytest.approx(np.mean([row["j_gen"] for row in logs[3:6]]), rel=1e-12)


def test_paper_protocol_needs_the_training_set_size() -> None:
    with pytest.raises(ValueError, match="train_size"):
        tiny({"protocol": "paper"})


def test_fixed_lambda0_does_not_adapt() -> None:
    logs = run(tiny({"hdml.lambda0": 0.3, "hdml.block": 2}), 5)
    assert logs[4]["j_avg"] != 1e6  # the average moves ...
    assert [row["lambda0"] for row in logs] == [pytest.approx(0.3)] * 5  # ... the hardness does not
