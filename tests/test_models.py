"""Every architecture x switch combination: shapes, finite outputs, a gradient for every parameter;
output strides; published parameter counts; pretrained weight loading without downloads."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import SqueezeExcitation

from mtl.config import TrialConfig
from mtl.models import build_model, count_parameters
from mtl.models.encoder import PretrainedWeightsError, ResNetEncoder

TINY = {"encoder": "resnet18", "decoder_channels": 64}  # SE needs a few squeeze units (C // 16)


def _check_forward_backward(cfg: TrialConfig, size=(32, 64)) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    for m in model.modules():  # zero_init_residual silences residual branches on step one; undo it here
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    out = model(torch.randn(2, 3, *size))
    expected = set(cfg.tasks) | ({"semseg_aux", "depth_aux"} if cfg.architecture == "distilled" else set())
    assert set(out) == expected
    for name, y in out.items():
        assert y.shape == (2, 19 if name.startswith("semseg") else 1, *size), name
        assert torch.isfinite(y).all(), name
    sum(y.square().mean() for y in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    model.eval()
    with torch.no_grad():
        assert set(model(torch.randn(1, 3, *size))) == set(cfg.tasks)


@pytest.mark.parametrize(("architecture", "aspp", "skip", "se"),
                         list(itertools.product(["joint", "branched", "distilled"], [False, True], [False, True],
                                                [False, True])))
def test_every_architecture_and_switch(architecture, aspp, skip, se):
    _check_forward_backward(TrialConfig(architecture=architecture, aspp=aspp, skip=skip, se=se, **TINY))


@pytest.mark.parametrize(("architecture", "task"), list(itertools.product(["joint", "branched"], ["semseg", "depth"])))
def test_single_task_models_drop_the_other_head(architecture, task):
    cfg = TrialConfig(architecture=architecture, tasks=[task], aspp=True, skip=True, **TINY)
    _check_forward_backward(cfg)
    both = build_model(TrialConfig(architecture=architecture, aspp=True, skip=True, **TINY))
    single = build_model(cfg)
    # the other task's parameters are gone (not merely unused): fewer parameters, no key of the other task
    assert count_parameters(single) < count_parameters(both)
    other = "depth" if task == "semseg" else "semseg"
    assert not any(f".{other}." in f".{k}." for k in single.state_dict())


@pytest.mark.parametrize("dilation", [(False, False, True), (False, True, True)])
def test_dilated_models_train(dilation):
    _check_forward_backward(TrialConfig(dilation=dilation, aspp=True, skip=True, **TINY))


def test_bottleneck_encoder_with_se_trains():
    _check_forward_backward(TrialConfig(encoder="resnet50", se=["encoder"], decoder_channels=16), size=(32, 32))


@pytest.mark.parametrize(("encoder", "dilation", "stride"), [
    ("resnet18", (False, False, False), 32), ("resnet34", (False, False, True), 16),
    ("resnet18", (False, True, True), 8), ("resnet50", (False, True, True), 8),
])
def test_output_stride_follows_dilation_flags(encoder, dilation, stride):
    enc = ResNetEncoder(encoder, dilation=dilation).eval()
    with torch.no_grad():
        features = enc(torch.randn(1, 3, 64, 128))
    assert enc.bottleneck_stride == stride
    deepest = features[stride]
    assert deepest.shape[-2:] == (64 // stride, 128 // stride)
    assert deepest.shape[1] == (2048 if encoder == "resnet50" else 512)
    assert features[4].shape[1] == (256 if encoder == "resnet50" else 64)
    assert list(features)[-1] == stride  # the deepest feature is the last key


@pytest.mark.parametrize(("architecture", "published", "tolerance"),
                         [("joint", 26.73e6, 0.01), ("branched", 32.17e6, 0.01), ("distilled", 33.36e6, 0.05)])
def test_parameter_counts_match_the_published_design(architecture, published, tolerance):
    n = count_parameters(build_model(TrialConfig(architecture=architecture, aspp=True, skip=True)))
    assert abs(n - published) / published < tolerance, n


def test_se_places_are_switchable():
    model = build_model(TrialConfig(se=["aspp", "decoder"], aspp=True, skip=True, **TINY))
    assert not any(isinstance(m, SqueezeExcitation) for m in model.encoder.modules())
    assert isinstance(model.context.se, SqueezeExcitation) and isinstance(model.decoder.se, SqueezeExcitation)
    encoder_se = build_model(TrialConfig(se=["encoder"], **TINY)).encoder
    assert sum(isinstance(m, SqueezeExcitation) for m in encoder_se.modules()) == 8  # one per ResNet-18 block


def test_pretrained_true_without_cache_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("MTL_TUNE_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError, match=r"hub/checkpoints/resnet34-b627a593\.pth.*pretrained: false"):
        ResNetEncoder("resnet34", pretrained=True)


def test_pretrained_from_cache_and_from_a_file(tmp_path, monkeypatch):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), hub / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    enc = ResNetEncoder("resnet18", pretrained=True)
    assert torch.equal(enc.stem[0].weight, reference.conv1.weight)
    file = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), file)
    enc = ResNetEncoder("resnet18", pretrained=str(file), dilation=(False, False, True))
    assert torch.equal(enc.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    with pytest.raises(PretrainedWeightsError, match=r"missing\.pt not found"):
        ResNetEncoder("resnet18", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(PretrainedWeightsError, match="do not fit resnet34"):
        ResNetEncoder("resnet34", pretrained=str(file))
