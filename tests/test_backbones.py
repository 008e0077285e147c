"""GoogLeNet and ResNet-50 backbones (random init; weights from a file; torchvision's download
path with the download replaced), and one training step through GoogLeNet on a CUB layout."""
from __future__ import annotations

import json
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision import models

from fakedata import cub
from hdml.core.config import CHOICES
from hdml.data.datasets import cub200
from hdml.model import backbones
from hdml.model.backbones import GlobalAvgPool, build_backbone
from hdml.train.trainer import train_run


def cfg(backbone: str, normalize: str = "imagenet", pretrained: bool = False, weights: str | None = None) -> dict:
    return {"backbone": backbone, "pretrained": pretrained, "weights": weights,
            "image": {"resize": 72, "crop": 64, "flip": True, "normalize": normalize}}


def torchvision_googlenet(seed: int) -> nn.Module:
    """A GoogLeNet as torchvision's weight file holds it: 1000-way fc and both auxiliary heads."""
    torch.manual_seed(seed)
    return models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)


def test_googlenet_is_1024d_without_heads_or_dropout():
    net, dim = build_backbone(cfg("googlenet"), 3)
    assert dim == 1024
    assert net.aux1 is None and net.aux2 is None and not net.aux_logits
    assert isinstance(net.fc, nn.Identity) and isinstance(net.dropout, nn.Identity)
    assert net.transform_input  # ImageNet-normalised input, rescaled to [-1, 1] as torchvision's weights expect
    net.train()
    out = net(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1024)
    assert not build_backbone(cfg("googlenet", "caffe"), 3)[0].transform_input


def test_resnet50_is_2048d():
    net, dim = build_backbone(cfg("resnet50"), 3)
    assert dim == 2048 and isinstance(net.fc, nn.Identity)
    assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2048)


@pytest.mark.parametrize("name", ["smallcnn", "googlenet", "resnet50"])
def test_global_pool_is_deterministic_and_equals_adaptive_pooling(name):
    """No nn.AdaptiveAvgPool2d left (its CUDA backward refuses deterministic mode); our pool
    gives its values and gradients."""
    net, _ = build_backbone(cfg(name), 1 if name == "smallcnn" else 3)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in net.modules())
    x = torch.randn(3, 5, 7, 6, requires_grad=True)
    ours = GlobalAvgPool()(x)
    ref = nn.AdaptiveAvgPool2d(1)(x).flatten(1)
    assert torch.allclose(ours, ref, atol=1e-6) and GlobalAvgPool(keepdim=True)(x).shape == (3, 5, 1, 1)
    g_ours, = torch.autograd.grad(ours.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(g_ours, g_ref)


def test_weights_from_a_local_file_equal_the_saved_network(tmp_path):
    ref = torchvision_googlenet(seed=1)
    path = tmp_path / "googlenet.pth"
    torch.save(ref.state_dict(), path)
    net, _ = build_backbone(cfg("googlenet", pretrained=True, weights=str(path)), 3)
    for key, value in net.state_dict().items():
        assert torch.equal(value, ref.state_dict()[key]), key
    # Same pooled features as the reference network with its classifier taken off.
    ref.fc, ref.dropout = nn.Identity(), nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(net.eval()(x), ref.eval()(x), atol=1e-6)


def test_torchvision_download_path_loads_its_weights(monkeypatch):
    ref = torchvision_googlenet(seed=2)
    asked = []
    monkeypatch.setattr(backbones, "torchvision_weights", lambda name: asked.append(name) or ref.state_dict())
    net, _ = build_backbone(cfg("googlenet", pretrained=True), 3)
    assert asked == ["googlenet"]
    assert torch.equal(net.conv1.conv.weight, ref.conv1.conv.weight)


def test_failed_download_says_how_to_work_offline(monkeypatch):
    def offline(url, *args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)  # the network call
    with pytest.raises(ValueError, match=r"cannot download torchvision's googlenet weights from https://.*"
                                         r"set `weights: PATH`"):
        build_backbone(cfg("googlenet", pretrained=True), 3)


def test_bad_weight_settings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights: .*nope.pth: no such file"):
        build_backbone(cfg("googlenet", pretrained=True, weights=str(tmp_path / "nope.pth")), 3)
    resnet = tmp_path / "resnet.pth"
    torch.save(models.resnet18().state_dict(), resnet)
    with pytest.raises(ValueError, match=f"weights: {resnet}: weights do not fit"):
        build_backbone(cfg("googlenet", pretrained=True, weights=str(resnet)), 3)
    with pytest.raises(ValueError, match="pretrained is false"):
        build_backbone(cfg("googlenet", weights=str(resnet)), 3)
    with pytest.raises(ValueError, match="image.normalize: torchvision's googlenet weights expect 'imagenet'"):
        build_backbone(cfg("googlenet", "caffe", pretrained=True), 3)
    with pytest.raises(ValueError, match="RGB images"):
        build_backbone(cfg("resnet50"), 1)


def test_one_training_step_on_cub_layout_through_googlenet(tmp_path):
    fake = cub(tmp_path)
    cub200.prepare(tmp_path / "data", archive=fake.files["archive"])
    overrides = {"steps": 1, "batch_size": 4, "embedding_dim": 8, "eval_batch_size": 6, "eval_ks": [1],
                 "pretrained": False, "device": "cpu", "num_workers": 0, "lr_milestones": [],
                 "image": {"resize": 64, "crop": 56}}
    result = train_run(root=tmp_path / "data", dataset="cub200", method="npair", seed=0, out=tmp_path / "run",
                       overrides=overrides)
    assert result["steps"] == 1 and set(result["metrics"]) >= {"recall@1", "nmi", "f1"}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["metrics"] == result["metrics"]
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert state["backbone.conv1.conv.weight"].shape == (64, 3, 7, 7) and state["head.fc.weight"].shape == (8, 1024)


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_each_registered_backbone_outputs_its_declared_feature_dim(name):
    """The registry is the one table of backbones: the names `backbone` accepts, and for each the
    feature dimension the head is sized by, which must be what the module really outputs."""
    entry, channels = backbones.BACKBONES[name], 1 if name == "smallcnn" else 3
    net, dim = build_backbone(cfg(name, entry.normalisation), channels)
    assert dim == entry.feature_dim
    assert net.eval()(torch.randn(2, channels, 64, 64)).shape == (2, dim)


def test_registry_is_what_the_config_accepts_and_auto_is_each_entrys_normalisation():
    assert sorted(backbones.BACKBONES) == sorted(CHOICES["backbone"])
    assert {n: backbones.input_normalisation(cfg(n, "auto")) for n in backbones.BACKBONES} == {
        "smallcnn": "imagenet", "googlenet": "imagenet", "resnet50": "imagenet", "googlenet-caffe": "caffe"}
    assert backbones.input_normalisation(cfg("googlenet-caffe", "unit")) == "unit"  # explicit wins


def test_unknown_backbone_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet'.*known: googlenet, googlenet-caffe, resnet50, "
                                         r"smallcnn"):
        build_backbone(cfg("resnet"), 3)
