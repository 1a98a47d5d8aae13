"""The batched (device) degradation equals the per-item MONAI pipeline for identical parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _degrade_helpers import config, scan

from srgan_med.degrade import (
    BatchDegradation,
    Downsampled,
    RandKSpaceTruncated,
    RandNoised,
    RandPSFBlurd,
    load_degradation_preset,
)
from srgan_med.degrade.blur import psf_kernel, psf_kernels
from srgan_med.errors import ConfigError, InputError


def per_item(cfg, scale, spacing, high_res, params, index, record=None):
    """Run the dictionary transforms on item ``index`` with the batch's draws forced in; ``record``:
    the item's normalisation (``meta["normalisation"]``) of an MR scan, whose no-signal value (stored
    0) the magnitude steps take."""
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    item = {"low_res": scan(high_res[index].numpy(), affine, modality="CT" if record is None else "MR")}
    if record is not None:
        item["low_res"].meta["normalisation"] = record
    blur = RandPSFBlurd(config=cfg.blur, scale=scale)
    blur.fwhm_mm = tuple(float(v) for v in params.fwhm_mm[index])
    blur.profile = params.profiles(cfg)[index]
    kspace = RandKSpaceTruncated(config=cfg.kspace)
    kspace.keep_fraction = float(params.keep_fraction[index])
    noise = RandNoised(noise=cfg.noise, normalise=cfg.normalise)
    noise.level, noise.noise_seed = float(params.noise_level[index]), int(params.noise_seed[index])
    item = blur(item, randomize=False)
    item = kspace(item, randomize=False)
    item = Downsampled(scale=scale)(item)
    item = noise(item, randomize=False)
    return item["low_res"].as_tensor()


CASES = {
    "ct_gaussian_signal_dependent": dict(
        blur={"profile": "gaussian", "fwhm_mm": [0.8, 2.5], "anisotropic": True},
        noise={"kind": "gaussian", "std_hu": [5.0, 40.0], "signal_dependence": 0.3},
    ),
    "ct_box": dict(
        blur={"profile": "box", "fwhm_mm": [1.0, 3.0]}, noise={"kind": "gaussian", "std_hu": [10.0, 10.0]}
    ),
    "ct_bicubic": dict(blur={"profile": "bicubic"}, noise={"kind": "gaussian", "std_hu": [5.0, 20.0]}),
    "ct_mixture": dict(
        blur={"profile": ["gaussian", "box", "bicubic", "none"], "fwhm_mm": [0.8, 3.0], "anisotropic": True},
        noise={"kind": "gaussian", "std_hu": [5.0, 20.0]},
    ),
    "mr_mixture_kspace": dict(
        normalise={"kind": "percentile"},
        blur={"profile": ["none", "gaussian", "box", "bicubic"], "fwhm_mm": [1.0, 2.0]},
        kspace={"enabled": True, "keep_fraction": [0.7, 1.0]},
        noise={"kind": "rician", "std_relative": [0.01, 0.05]},
    ),
    "mr_kspace_rician": dict(
        normalise={"kind": "percentile"},
        kspace={"enabled": True, "keep_fraction": [0.5, 0.9]},
        noise={"kind": "rician", "std_relative": [0.01, 0.05]},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_batched_equals_per_item_pipeline(case, scale):
    cfg = config(**CASES[case])
    spacing = (0.7, 0.9)
    degrader = BatchDegradation(cfg, scale, spacing_mm=spacing)
    high_res = torch.rand(3, 1, 36, 30, generator=torch.Generator().manual_seed(1))
    params = degrader.sample_params(3, torch.Generator().manual_seed(2))
    batched = degrader.apply(high_res, params)
    assert tuple(batched.shape) == (3, 1, 36 // scale, 30 // scale)
    for index in range(3):
        expected = per_item(cfg, scale, spacing, high_res, params, index)
        torch.testing.assert_close(batched[index], expected, rtol=1e-5, atol=1e-5)
    # The items got different draws, and they matter.
    assert len(set(params.noise_seed.tolist())) == 3
    assert not torch.allclose(batched[0], batched[1])
    # Each item's own magnitude zero (an MR scan normalised by percentiles far above 0), as training
    # passes them: the same in both paths, and it matters where the magnitude is taken
    records = [
        {"kind": "percentile", "low": low, "high": high} for low, high in ((200, 1000), (0, 10), (50, 250))
    ]
    zero = [-r["low"] / (r["high"] - r["low"]) for r in records]
    shifted = degrader.apply(high_res, params, zero=zero)
    for index in range(3):
        expected = per_item(cfg, scale, spacing, high_res, params, index, records[index])
        torch.testing.assert_close(shifted[index], expected, rtol=1e-5, atol=1e-5)
    if cfg.kspace.enabled or cfg.noise.kind == "rician":
        assert not torch.allclose(shifted[0], batched[0]) and torch.allclose(shifted[1], batched[1])


def test_same_generator_seed_same_batch_and_presets_work():
    for name in ("ct", "mr"):
        degrader = BatchDegradation(load_degradation_preset(name), 4)
        high_res = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        first = degrader(high_res, torch.Generator().manual_seed(5))
        second = degrader(high_res, torch.Generator().manual_seed(5))
        third = degrader(high_res, torch.Generator().manual_seed(6))
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        assert not torch.allclose(first, third)
        assert first.shape == (4, 1, 8, 8)


def test_ct_noise_level_converted_through_the_window():
    cfg = config(noise={"kind": "gaussian", "std_hu": [30.0, 30.0]})
    degrader = BatchDegradation(cfg, 1)
    low_res = degrader(torch.full((2, 1, 96, 96), 0.5), torch.Generator().manual_seed(0))
    assert float(low_res.double().std()) * 3000.0 == pytest.approx(30.0, rel=0.10)


def test_bad_inputs_raise():
    with pytest.raises(ConfigError, match="scale"):
        BatchDegradation(config(), 0)
    with pytest.raises(ConfigError, match="quantise.enabled"):
        BatchDegradation(config(quantise={"enabled": True}), 2)
    with pytest.raises(InputError, match="B, 1, H, W"):
        BatchDegradation(config(), 2)(torch.zeros(1, 8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batch_matches_cpu_batch():
    cfg = config(
        blur={"profile": ["gaussian", "box", "bicubic", "none"], "fwhm_mm": [1.0, 3.0]},
        kspace={"enabled": True},
    )
    degrader = BatchDegradation(cfg, 4)
    high_res = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    params = degrader.sample_params(8, torch.Generator().manual_seed(1))
    on_gpu = degrader.apply(high_res.cuda(), params)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), degrader.apply(high_res, params), rtol=1e-4, atol=1e-5)


def test_per_item_spacing_matches_per_item_pipeline():
    cfg = config(**CASES["ct_box"])
    spacings = [(0.5, 0.8), (1.5, 1.0)]
    degrader = BatchDegradation(cfg, 2)
    high_res = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    params = degrader.sample_params(2, torch.Generator().manual_seed(4))
    batched = degrader.apply(high_res, params, spacing_mm=torch.tensor(spacings))
    for index, spacing in enumerate(spacings):
        expected = per_item(cfg, 2, spacing, high_res, params, index)
        torch.testing.assert_close(batched[index], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="spacing_mm"):
        degrader.apply(high_res, params, spacing_mm=[(1.0, 1.0)])


def centred(kernels, radius):
    """Per-item kernels, each centred in ``2 radius + 1`` taps with zeros around it: ``(B, 2R+1)``."""
    weight = torch.zeros(len(kernels), 2 * radius + 1, dtype=torch.float64)
    for index, kernel in enumerate(kernels):
        offset = radius - kernel.numel() // 2
        weight[index, offset : offset + kernel.numel()] = kernel
    return weight


@pytest.mark.parametrize("scale", [None, 2, 3, 4])
def test_psf_kernels_equal_the_per_item_kernels(scale):
    generator = torch.Generator().manual_seed(scale or 0)
    families = ["gaussian", "box", "none"] + (["bicubic"] if scale else [])
    count = 600
    profiles = [families[i] for i in torch.randint(0, len(families), (count,), generator=generator).tolist()]
    fwhm = torch.rand(count, generator=generator, dtype=torch.float64) * 8.5 - 0.5
    spacing = 0.2 + 2.0 * torch.rand(count, generator=generator, dtype=torch.float64)
    fwhm[::11] = 0.0
    fwhm[1::13] = 1e-6  # a Gaussian of 3 taps, two of them 0; a box of 1 tap
    fwhm[2::17] = spacing[2::17]  # a box exactly one voxel wide: the identity
    fwhm[3::19] = 2.0 * spacing[3::19]  # two voxels: [1/4, 1/2, 1/4]
    weight = psf_kernels(profiles, fwhm, spacing, scale)
    kernels = [
        psf_kernel(p, float(w), float(d), scale) for p, w, d in zip(profiles, fwhm, spacing, strict=True)
    ]
    radius = max(k.numel() for k in kernels) // 2
    assert weight.dtype == torch.float64 and weight.shape == (count, 2 * radius + 1)
    torch.testing.assert_close(weight, centred(kernels, radius), rtol=0, atol=1e-12)
    torch.testing.assert_close(weight.sum(dim=1), torch.ones(count, dtype=torch.float64))


def test_psf_kernels_edge_cases():
    identity = psf_kernels(["none", "box", "gaussian"], torch.tensor([2.0, 0.5, -1.0]), torch.ones(3), 2)
    assert identity.shape == (3, 1) and bool((identity == 1).all())
    with pytest.raises(ConfigError, match="bicubic"):
        psf_kernels(["bicubic"], torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="2 profiles"):
        psf_kernels(["box", "box"], torch.ones(3), torch.ones(3))


@pytest.mark.parametrize("case", ["ct_mixture", "mr_mixture_kspace", "ct_gaussian_signal_dependent"])
def test_mixture_with_per_item_spacing_matches_per_item_pipeline(case):
    cfg = config(**CASES[case])
    count = 8
    spacings = 0.4 + 1.2 * torch.rand(
        count, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    degrader = BatchDegradation(cfg, 3)
    high_res = torch.rand(count, 1, 30, 33, generator=torch.Generator().manual_seed(6))
    params = degrader.sample_params(count, torch.Generator().manual_seed(7))
    if params.profile is not None:
        assert len(set(params.profile)) >= 3  # the batch really mixes families
    batched = degrader.apply(high_res, params, spacing_mm=spacings)
    for index in range(count):
        spacing = tuple(float(v) for v in spacings[index])
        expected = per_item(cfg, 3, spacing, high_res, params, index)
        torch.testing.assert_close(batched[index], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batch_does_not_wait_for_the_device():
    blur = {"profile": ["gaussian", "box", "bicubic", "none"], "fwhm_mm": [1.0, 3.0]}
    high_res = torch.rand(16, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    spacing = 0.5 + torch.rand(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    on_device = high_res.cuda()
    for noise in ({"kind": "none"}, {"kind": "gaussian", "std_hu": [5.0, 20.0], "signal_dependence": 0.3}):
        degrader = BatchDegradation(config(blur=blur, kspace={"enabled": True}, noise=noise), 4)
        degrader(on_device, torch.Generator().manual_seed(2), spacing_mm=spacing)  # warm-up (cuFFT plans)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # a synchronising call inside raises
        try:
            on_gpu = degrader(on_device, torch.Generator().manual_seed(2), spacing_mm=spacing)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if noise["kind"] == "none":  # CUDA's random numbers differ from the CPU's
            on_cpu = degrader(high_res, torch.Generator().manual_seed(2), spacing_mm=spacing)
            torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)


def test_batch_noise_draw_is_seeded_and_has_the_per_item_distribution():
    """``per_item_noise=False`` (GPU training): same parameters and blur, one seeded noise draw."""
    config = load_degradation_preset("ct")
    high_res = torch.full((64, 1, 32, 32), 0.4)
    per_item = BatchDegradation(config, 2)
    batch = BatchDegradation(config, 2, per_item_noise=False)
    params = per_item.sample_params(64, torch.Generator().manual_seed(3))
    a, b = batch.apply(high_res, params), batch.apply(high_res, params)
    assert torch.equal(a, b)
    reference = per_item.apply(high_res, params)
    assert not torch.equal(a, reference)
    std = params.noise_std.float().reshape(-1, 1, 1, 1)
    for output in (a, reference):  # flat input: the output minus 0.4 is the noise alone
        z = (output - 0.4) / std
        assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02
