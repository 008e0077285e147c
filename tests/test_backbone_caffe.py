"""`googlenet-caffe`: the HDML authors' Inception v1 (LRN, no BatchNorm) with Caffe weights read
from their MATLAB file, and the Caffe preprocessing that choosing it selects.

The weight files here are generated: random values under the names and shapes the authors'
lib/GoogleNet_Model.py reads with scipy.io.loadmat (Caffe layer names; kernels in Caffe's
(out, in, kh, kw) order; biases as `<layer>_bias`), the list below copied from the BVLC
GoogLeNet layers, not from the module under test."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from fakedata import cub
from hdml.core.config import ConfigError, build_run_config
from hdml.data.datasets import cub200
from hdml.data.streaming import split_images
from hdml.data.tensors import load_splits
from hdml.model.backbones import (
    CaffeGoogLeNet,
    TFLocalResponseNorm,
    build_backbone,
    input_normalisation,
    load_caffe_mat,
)
from hdml.train.trainer import train_run

STEM = {"conv1/7x7_s2": (64, 3, 7, 7), "conv2/3x3_reduce": (64, 64, 1, 1), "conv2/3x3": (192, 64, 3, 3)}
# block: input channels, outputs of 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj (BVLC prototxt).
BLOCKS = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
          "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
          "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
          "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
          "5b": (832, 384, 192, 384, 48, 128, 128)}


def caffe_shapes() -> dict[str, tuple[int, ...]]:
    shapes = dict(STEM)
    for block, (cin, n1, n3r, n3, n5r, n5, npool) in BLOCKS.items():
        name = f"inception_{block}"
        shapes.update({f"{name}/1x1": (n1, cin, 1, 1), f"{name}/3x3_reduce": (n3r, cin, 1, 1),
                       f"{name}/3x3": (n3, n3r, 3, 3), f"{name}/5x5_reduce": (n5r, cin, 1, 1),
                       f"{name}/5x5": (n5, n5r, 5, 5), f"{name}/pool_proj": (npool, cin, 1, 1)})
    return shapes


def authors_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Every array of the authors' file: kernels scaled so activations neither die nor explode
    through 57 layers, biases as 1-D vectors (loadmat hands them back as 1 x C, as it would the
    authors' file), and the extra embedding matrix their file also holds."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for layer, shape in caffe_shapes().items():
        fan_in = shape[1] * shape[2] * shape[3]
        arrays[layer] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        arrays[f"{layer}_bias"] = (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)
    arrays["fc_embedding"] = rng.standard_normal((64, 1024)).astype(np.float32)
    return arrays


def save_mat(path, arrays: dict[str, np.ndarray]) -> str:
    scipy.io.savemat(path, arrays)
    return str(path)


def cfg(pretrained: bool = False, weights: str | None = None, normalize: str = "auto") -> dict:
    return {"backbone": "googlenet-caffe", "pretrained": pretrained, "weights": weights,
            "image": {"resize": 256, "crop": 227, "flip": True, "normalize": normalize}}


def reference_forward(arrays: dict[str, np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """The authors' forward pass written out from their code, with PyTorch's own
    LocalResponseNorm standing in for TensorFlow's (window 2*5+1 = 11 channels; PyTorch divides
    alpha by the window, TensorFlow does not, hence alpha 11e-4)."""
    w = {k: torch.from_numpy(v) for k, v in arrays.items()}
    lrn = nn.LocalResponseNorm(11, alpha=11e-4, beta=0.75, k=1.0)

    def conv(h: torch.Tensor, layer: str, pad: int = 0, stride: int = 1) -> torch.Tensor:
        return F.relu(F.conv2d(F.pad(h, (pad,) * 4), w[layer], w[f"{layer}_bias"].flatten(), stride))

    def pool(h: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(h, (0, 1, 0, 1)), 3, 2)

    h = lrn(pool(conv(x, "conv1/7x7_s2", 3, 2)))
    h = F.max_pool2d(lrn(conv(conv(h, "conv2/3x3_reduce"), "conv2/3x3", 1)), 3, 2)
    for block in BLOCKS:
        name = f"inception_{block}"
        h = torch.cat([conv(h, f"{name}/1x1"), conv(conv(h, f"{name}/3x3_reduce"), f"{name}/3x3", 1),
                       conv(conv(h, f"{name}/5x5_reduce"), f"{name}/5x5", 2),
                       conv(F.max_pool2d(F.pad(h, (1,) * 4), 3, 1), f"{name}/pool_proj")], 1)
        if block in ("3b", "4e"):
            h = pool(h)
    assert h.shape[-2:] == (7, 7)  # a 227 input: the 7x7 VALID average pool is the whole map
    return F.avg_pool2d(h, 7).flatten(1)


def test_every_layer_gets_its_weights_from_the_authors_file(tmp_path):
    arrays = authors_arrays()
    path = save_mat(tmp_path / "tf_ckpt_from_caffe.mat", arrays)
    net, dim = build_backbone(cfg(pretrained=True, weights=path), 3)
    assert dim == 1024
    state = net.state_dict()
    assert len(state) == 2 * len(caffe_shapes()) == 114  # 57 convolutions, nothing else learnt
    for layer in caffe_shapes():
        module = layer.replace("/", ".")
        assert torch.equal(state[f"{module}.weight"], torch.from_numpy(arrays[layer])), layer
        assert torch.equal(state[f"{module}.bias"], torch.from_numpy(arrays[f"{layer}_bias"])), layer
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout, nn.Linear)) for m in net.modules())


def test_forward_at_227_is_the_authors_network(tmp_path):
    arrays = authors_arrays(seed=1)
    net, _ = build_backbone(cfg(pretrained=True, weights=save_mat(tmp_path / "w.mat", arrays)), 3)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 227, 227) * 60  # the scale of mean-subtracted 0-255 pixels
    with torch.no_grad():
        ours, ref = net.eval()(x), reference_forward(arrays, x)
    assert ours.shape == (2, 1024)
    assert ref.abs().mean() > 1e-2  # the check is not between two vectors of zeros
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_local_response_norm_is_tensorflows():
    x = torch.randn(2, 13, 3, 4, dtype=torch.float64) * 30
    got = TFLocalResponseNorm()(x)
    a = x.numpy()
    want = np.empty_like(a)
    for c in range(13):  # tf.nn.local_response_normalization(depth_radius=5, bias=1, alpha=1e-4, beta=0.75)
        window = (a[:, max(0, c - 5) : c + 6] ** 2).sum(1)
        want[:, c] = a[:, c] / (1.0 + 1e-4 * window) ** 0.75
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.pop("inception_4c/pool_proj_bias"), r"no array 'inception_4c/pool_proj_bias'"),
    (lambda a: a.pop("conv1/7x7_s2"), r"no array 'conv1/7x7_s2'"),
    (lambda a: a.update({"inception_5b/5x5": np.zeros((128, 48, 3, 3), np.float32)}),
     r"'inception_5b/5x5' is float32 \(128, 48, 3, 3\), expected \(128, 48, 5, 5\)"),
    (lambda a: a.update({"conv2/3x3_bias": np.zeros(191, np.float32)}),
     r"'conv2/3x3_bias' is float32 \(1, 191\), expected 192 values"),
    (lambda a: a.update({"conv1/7x7_s2": np.zeros((3, 64, 7, 7), np.float32)}),  # TF's order is not Caffe's
     r"'conv1/7x7_s2' is float32 \(3, 64, 7, 7\), expected \(64, 3, 7, 7\)"),
])
def test_missing_or_misshaped_array_names_key_and_file(tmp_path, edit, message):
    arrays = authors_arrays()
    edit(arrays)
    path = save_mat(tmp_path / "bad.mat", arrays)
    net = CaffeGoogLeNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=rf"weights: {path}: not the Caffe GoogLeNet weights .*{message}"):
        build_backbone(cfg(pretrained=True, weights=path), 3)
    with pytest.raises(ValueError, match=message):
        load_caffe_mat(net, path)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # nothing half-loaded


def test_bad_files_and_settings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights: .*nope.mat: no such file"):
        build_backbone(cfg(pretrained=True, weights=str(tmp_path / "nope.mat")), 3)
    pth = tmp_path / "googlenet.pth"
    torch.save(CaffeGoogLeNet().state_dict(), pth)
    with pytest.raises(ValueError, match=f"weights: {pth}: not a MATLAB v4/v5 .mat file"):
        build_backbone(cfg(pretrained=True, weights=str(pth)), 3)
    with pytest.raises(ValueError, match="googlenet-caffe has no download; set `weights: PATH`"):
        build_backbone(cfg(pretrained=True), 3)
    mat = save_mat(tmp_path / "w.mat", authors_arrays())
    with pytest.raises(ValueError, match="image.normalize: the Caffe GoogLeNet weights expect 'caffe'"):
        build_backbone(cfg(pretrained=True, weights=mat, normalize="imagenet"), 3)
    with pytest.raises(ValueError, match="pretrained is false"):
        build_backbone(cfg(weights=mat), 3)
    with pytest.raises(ValueError, match="colour images"):
        build_backbone(cfg(), 1)


def test_config_registers_the_backbone_and_auto_preprocessing():
    run = build_run_config({}, {"backbone": "googlenet-caffe"})
    assert run["image"]["normalize"] == "auto" and input_normalisation(run) == "caffe"
    assert input_normalisation(build_run_config({}, {})) == "imagenet"  # torchvision's GoogLeNet
    explicit = build_run_config({}, {"backbone": "googlenet-caffe", "image.normalize": "unit"})
    assert input_normalisation(explicit) == "unit"
    with pytest.raises(ConfigError, match="backbone: must be one of"):
        build_run_config({}, {"backbone": "googlenet_caffe"})


def test_choosing_the_backbone_chooses_bgr_0_255_mean_subtracted_input(tmp_path):
    fake = cub(tmp_path)
    cub200.prepare(tmp_path / "data", archive=fake.files["archive"])
    overrides = {"backbone": "googlenet-caffe", "device": "cpu", "image": {"resize": 20, "crop": 16}}
    run = build_run_config({}, overrides)
    _, test, transform = load_splits(tmp_path / "data", "cub200", run, 3, torch.device("cpu"), input_normalisation(run))
    pixels = torch.from_numpy(np.asarray(test.pixels))
    x = transform(pixels, train=False)
    rgb = pixels[:, :, 2:18, 2:18].double()  # the centre 16x16 of 20x20
    want = torch.stack([rgb[:, 2] - 104, rgb[:, 1] - 117, rgb[:, 0] - 123], 1)  # B, G, R minus the mean pixel
    torch.testing.assert_close(x.double(), want)
    assert x.abs().max() > 50  # 0-255 scale, not [0, 1]
    # the per-image pipeline agrees
    one = split_images(tmp_path / "data", "cub200", run, 3, "test", input_normalisation(run))[0][0]
    torch.testing.assert_close(one.double(), want[0])
    # The default backbone keeps torchvision's RGB, [0, 1], mean/std input.
    default = build_run_config({}, {"device": "cpu", "image": {"resize": 20, "crop": 16}})
    _, _, imagenet = load_splits(tmp_path / "data", "cub200", default, 3, torch.device("cpu"),
                                  input_normalisation(default))
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet(pixels, train=False), ((rgb / 255 - mean) / std).float())


def test_one_training_step_from_random_init(tmp_path):
    fake = cub(tmp_path)
    cub200.prepare(tmp_path / "data", archive=fake.files["archive"])
    overrides = {"backbone": "googlenet-caffe", "steps": 1, "batch_size": 4, "embedding_dim": 8,
                 "eval_batch_size": 6, "eval_ks": [1], "pretrained": False, "device": "cpu", "num_workers": 0,
                 "lr_milestones": [], "image": {"resize": 64, "crop": 56}}
    result = train_run(root=tmp_path / "data", dataset="cub200", method="npair", seed=0, out=tmp_path / "run",
                       overrides=overrides)
    assert result["steps"] == 1 and set(result["metrics"]) >= {"recall@1", "nmi", "f1"}
    assert all(np.isfinite(v) for v in json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"].values())
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["backbone"] == "googlenet-caffe" and saved["image"]["normalize"] == "auto"
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert state["backbone.conv1.7x7_s2.weight"].shape == (64, 3, 7, 7) and state["head.fc.weight"].shape == (8, 1024)
    # Caffe's filler set every bias to 0.2; one Adam step moved them: the backbone was trained.
    assert not torch.all(state["backbone.inception_5b.pool_proj.bias"] == 0.2)
    assert not torch.all(state["backbone.conv1.7x7_s2.bias"] == 0.2)
