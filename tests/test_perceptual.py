"""VGG19 perceptual loss: zero for identical inputs, grows with blur, gradients only to the output,
weights found the standard way or a clear error."""

from __future__ import annotations

import logging

import pytest
import torch
from scipy.ndimage import gaussian_filter

from srgan_med.errors import WeightsNotFoundError
from srgan_med.losses import LAYERS, PerceptualLoss, vgg19_features
from srgan_med.losses.perceptual import RANDOM_SOURCE, VGG19_FILE


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def cached_vgg(torch_home):
    """A VGG19 state dict saved where torchvision caches ImageNet weights (random values, real format)."""
    torch.manual_seed(1)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    path = torch_home / "hub" / "checkpoints" / VGG19_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


def _image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, 48, 48, generator=generator)


def test_layout_matches_torchvision_keys():
    keys = set(vgg19_features().state_dict())
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert keys == {f"{i}.{p}" for i in conv_indices for p in ("weight", "bias")}
    assert LAYERS["relu5_4"] == 35 and LAYERS["conv5_4"] == 34


def test_loads_the_cached_file_and_is_zero_for_identical_inputs(cached_vgg, monkeypatch):
    import hashlib

    from srgan_med.losses import perceptual

    # the fixture holds random values: made "torchvision's file" by taking its own digest as the
    # expected one (the real 548 MB file cannot be downloaded here)
    digest = hashlib.sha256(cached_vgg.read_bytes()).hexdigest()
    monkeypatch.setattr(perceptual, "VGG19_SHA256_PREFIX", digest[:8])
    loss = PerceptualLoss(layer_weights={"relu2_2": 1.0, "relu5_4": 1.0})
    assert loss.weight_source == f"imagenet:{cached_vgg.resolve()}"
    image = _image()
    assert loss(image, image).item() == 0.0


def test_a_file_that_is_not_torchvisions_imagenet_vgg_is_recorded_as_unverified(cached_vgg, caplog):
    """Any .pth file given as the weights (here random values under torchvision's very name) was
    recorded as "imagenet:..." in checkpoints and model cards, without a check."""
    import hashlib

    with caplog.at_level(logging.WARNING, logger="srgan_med.losses.perceptual"):
        loss = PerceptualLoss(layer_weights={"relu2_2": 1.0})
    digest = hashlib.sha256(cached_vgg.read_bytes()).hexdigest()
    assert not loss.weight_source.startswith("imagenet")
    assert loss.weight_source == (
        f"unverified VGG19 file (NOT torchvision's ImageNet weights): {cached_vgg.resolve()} sha256:{digest}"
    )
    assert (
        f"is not torchvision's ImageNet VGG19 (vgg19-dcbb9e9d.pth; its SHA-256 starts {digest[:8]}"
        in caplog.text
    )


def test_grows_with_blur(cached_vgg):
    loss = PerceptualLoss(layer_weights={"relu2_2": 1.0, "relu3_4": 1.0})
    sharp = _image()
    values = [
        loss(torch.from_numpy(gaussian_filter(sharp.numpy(), (0, 0, s, s))), sharp).item()
        for s in (0.5, 1.0, 2.0)
    ]
    assert 0 < values[0] < values[1] < values[2]


def test_gradients_reach_only_the_generator_output(cached_vgg):
    loss = PerceptualLoss()
    output = _image(1).requires_grad_(True)
    target = _image(2).requires_grad_(True)
    loss(output, target).backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert target.grad is None
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.features.training


def test_missing_weights_give_the_how_to(torch_home):
    with pytest.raises(WeightsNotFoundError, match="ImageNet VGG19 weights not found") as error:
        PerceptualLoss()
    assert "IMAGENET1K_V1" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(WeightsNotFoundError, match="not found at"):
        PerceptualLoss(weights=str(torch_home / "elsewhere.pth"))


def test_random_weights_are_said_loudly(caplog, monkeypatch):
    # the CLI's handler stops propagation once a CLI test has run; let caplog see the records
    monkeypatch.setattr(logging.getLogger("srgan_med"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="srgan_med.losses.perceptual"):
        loss = PerceptualLoss(weights="random")
    assert loss.weight_source == RANDOM_SOURCE
    assert "RANDOMLY INITIALISED" in caplog.text
