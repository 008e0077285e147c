"""Every registered method trains on digits: its loss falls, outputs are complete."""
import json

import pandas as pd
import pytest

from hdml.core.config import ConfigError
from hdml.core.registry import method_names
from hdml.train.trainer import train_run

TINY = {"steps": 60, "batch_size": 10, "lr": 1e-3, "eval_every": 30, "device": "cpu", "weight_decay": 0.0,
        "embedding_dim": 16}


@pytest.mark.parametrize("method", method_names())
def test_method_trains_and_its_loss_falls(method, digits_root, tmp_path):
    result = train_run(root=digits_root, dataset="digits", method=method, seed=0, out=tmp_path, overrides=TINY)
    losses = pd.read_csv(tmp_path / "losses.csv")
    column = "j_m" if "j_m" in losses else "loss"
    assert len(losses) == 60 and losses[column].notna().all()
    assert losses[column].iloc[-15:].mean() < losses[column].iloc[:15].mean()
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert list(curve.step) == [30, 60]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert 0 <= saved["metrics"]["recall@1"] <= 1 and {"nmi", "f1", "recall@8"} <= set(saved["metrics"])
    assert (tmp_path / "model.pt").exists() and (tmp_path / "config.yaml").exists()


def test_same_seed_same_result(digits_root, tmp_path):
    a = train_run(root=digits_root, dataset="digits", method="npair", seed=3, out=tmp_path / "a", overrides=TINY)
    b = train_run(root=digits_root, dataset="digits", method="npair", seed=3, out=tmp_path / "b", overrides=TINY)
    c = train_run(root=digits_root, dataset="digits", method="npair", seed=4, out=tmp_path / "c", overrides=TINY)
    assert a["metrics"] == b["metrics"] and a["metrics"] != c["metrics"]


def test_evaluate_from_saved_embeddings_reproduces_final_metrics(digits_root, tmp_path):
    from hdml.eval.evaluate import evaluate_run

    result = train_run(root=digits_root, dataset="digits", method="triplet", seed=1, out=tmp_path, overrides=TINY)
    evaluation = evaluate_run(tmp_path, recompute=True)
    assert evaluation["metrics_source"] == "recomputed"
    for key, value in result["metrics"].items():
        assert evaluation["metrics"][key] == pytest.approx(value, abs=1e-9)
    assert evaluation["test_selected"]["step"] in (30, 60)


def test_evaluate_takes_the_trainings_metrics_only_for_the_same_embeddings(digits_root, tmp_path, monkeypatch):
    """The final clustering is not done twice; a changed embeddings file is evaluated afresh."""
    import numpy as np

    import hdml.eval.evaluate
    from hdml.eval.evaluate import evaluate_run, load_embeddings, save_npz

    result = train_run(root=digits_root, dataset="digits", method="triplet", seed=1, out=tmp_path, overrides=TINY)
    real = hdml.eval.evaluate.metrics.evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("clustered again")

    monkeypatch.setattr(hdml.eval.evaluate.metrics, "evaluate", refuse)
    evaluation = evaluate_run(tmp_path)
    assert evaluation["metrics_source"] == "training" and evaluation["metrics"] == result["metrics"]

    saved = load_embeddings(tmp_path / "embeddings.npz")
    z, labels = saved.query, saved.labels
    save_npz(tmp_path / "embeddings.npz", embeddings=z[::-1].copy(), labels=labels)  # other bytes
    with pytest.raises(AssertionError, match="clustered again"):
        evaluate_run(tmp_path)
    monkeypatch.setattr(hdml.eval.evaluate.metrics, "evaluate", real)
    save_npz(tmp_path / "embeddings.npz", embeddings=z + np.float32(0.5), labels=labels)
    assert evaluate_run(tmp_path)["metrics_source"] == "recomputed"


def test_bad_config_fails_before_writing(digits_root, tmp_path):
    with pytest.raises(ConfigError, match="stepz"):
        train_run(root=digits_root, dataset="digits", method="npair", seed=0, out=tmp_path / "x",
                  overrides={"stepz": 3})
    assert not (tmp_path / "x").exists()


def test_bf16_autocast_trains(digits_root, tmp_path):
    """The GPU fast path's autocast, exercised on the CPU: finite losses that fall."""
    train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=0, out=tmp_path,
              overrides={**TINY, "amp": "bf16"})
    losses = pd.read_csv(tmp_path / "losses.csv")
    assert losses.j_m.notna().all() and losses.j_m.iloc[-15:].mean() < losses.j_m.iloc[:15].mean()


@pytest.mark.parametrize("amp", ["bf16", "fp32"])
def test_bf16_covers_the_backbone_only(amp):
    """`amp: bf16`: the backbone's convolutions in bf16, features and embeddings in float32."""
    import torch

    from hdml.core.config import build_run_config
    from hdml.model.embedding import build_model
    from hdml.train.trainer import place_model

    cfg = build_run_config({}, {"backbone": "smallcnn", "pretrained": False, "embedding_dim": 8, "amp": amp})
    model = place_model(build_model(cfg, 1), cfg, torch.device("cpu"))
    seen = []
    model.backbone[0].register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    y = model.features(torch.randn(4, 1, 8, 8))
    z = model.head(y)
    assert seen == [torch.bfloat16 if amp == "bf16" else torch.float32]
    assert y.dtype == z.dtype == torch.float32


@pytest.mark.slow
def test_compiled_backbone_trains_like_eager(digits_root, tmp_path):
    """`compile: true` (inductor, here on the CPU): the eager run's losses and embeddings up to
    float rounding, and a model.pt whose keys load into the plain, uncompiled model."""
    import numpy as np
    import torch
    from torch._dynamo.utils import counters

    from hdml.core.config import build_run_config
    from hdml.data.datasets import get_dataset
    from hdml.model.embedding import build_model

    overrides = {**TINY, "steps": 8, "eval_every": 0}
    counters.clear()
    for name, compiled in (("eager", False), ("compiled", True)):
        train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=0, out=tmp_path / name,
                  overrides={**overrides, "compile": compiled})
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really compiled the backbone
    eager, comp = (pd.read_csv(tmp_path / n / "losses.csv") for n in ("eager", "compiled"))
    assert np.allclose(eager.j_m, comp.j_m, rtol=1e-4) and np.allclose(eager.j_gen, comp.j_gen, rtol=1e-3)
    z_eager, z_comp = (np.load(tmp_path / n / "embeddings.npz")["embeddings"] for n in ("eager", "compiled"))
    assert np.allclose(z_eager, z_comp, atol=1e-4)
    plain = build_model(build_run_config(get_dataset("digits").run_defaults, overrides), 1)
    plain.load_state_dict(torch.load(tmp_path / "compiled" / "model.pt", weights_only=True))


@pytest.mark.parametrize(("amp", "conv", "matmul"), [("fp32", "ieee", "highest"), ("bf16", "ieee", "highest"),
                                                    ("tf32", "tf32", "high")])
def test_float32_precision_on_a_gpu_follows_amp(amp, conv, matmul):
    """cuDNN convolutions default to TF32: `fp32` must switch them to IEEE (flags only; no GPU
    needed to set them). The CPU leaves every flag as it was."""
    import torch

    from hdml.train.trainer import set_precision

    before = torch.backends.cudnn.conv.fp32_precision, torch.get_float32_matmul_precision()
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [b.fp32_precision for b in backends]
    try:
        set_precision(amp, torch.device("cpu"))
        assert (torch.backends.cudnn.conv.fp32_precision, torch.get_float32_matmul_precision()) == before
        set_precision(amp, torch.device("cuda"))
        assert torch.backends.cudnn.conv.fp32_precision == conv
        assert torch.get_float32_matmul_precision() == matmul
        assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if amp == "tf32" else "ieee")
    finally:
        torch.backends.cudnn.conv.fp32_precision = before[0]
        torch.set_float32_matmul_precision(before[1])
        for b, value in zip(backends, saved, strict=True):
            b.fp32_precision = value


def test_zero_steps_evaluates_the_network_at_initialisation(digits_root, tmp_path):
    """`steps: 0` (the report's reference row): no step, one evaluation at step 0 of exactly the
    weights the seed initialises, the same whatever method would have trained them."""
    from hdml.eval.evaluate import evaluate_run

    a = train_run(root=digits_root, dataset="digits", method="triplet", seed=2, out=tmp_path / "a",
                  overrides={**TINY, "steps": 0})
    b = train_run(root=digits_root, dataset="digits", method="contrastive", seed=2, out=tmp_path / "b",
                  overrides={**TINY, "steps": 0})
    assert list(pd.read_csv(tmp_path / "a" / "curve.csv").step) == [0]
    assert a["steps"] == 0 and a["metrics"] == b["metrics"]
    import torch

    weights = [torch.load(tmp_path / run / "model.pt") for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert evaluate_run(tmp_path / "a")["test_selected"]["step"] == 0
