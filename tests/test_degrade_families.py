"""PSF families: anti-aliased bicubic equals torch's antialiased bicubic, mixtures draw per item,
evaluation family configs are single-family and the presets cover every family."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _degrade_helpers import config, oblique_affine, scan

from srgan_med.degrade import (
    PSF_PROFILES,
    BatchDegradation,
    BlurConfig,
    RandPSFBlurd,
    antialiased_bicubic_taps,
    bicubic_psf_kernel,
    config_from_dict,
    degradation_pipeline,
    downsampled_affine,
    load_degradation_preset,
)
from srgan_med.degrade.blur import psf_kernel
from srgan_med.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("box", "gaussian", "bicubic")
# Replicate padding (every PSF here) and PIL's renormalised truncated kernel differ within two
# low-res voxels of the border; inside, the two must agree to float precision.
MARGIN = 2


def torch_antialiased_bicubic(image: torch.Tensor, scale: int) -> torch.Tensor:
    """``(1, H, W)`` -> ``(1, H // s, W // s)`` with torch's anti-aliased bicubic, in float64."""
    return F.interpolate(image[None].double(), scale_factor=1 / scale, mode="bicubic", antialias=True)[0]


def interior(image: torch.Tensor) -> torch.Tensor:
    return image[..., MARGIN:-MARGIN, MARGIN:-MARGIN]


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_bicubic_psf_times_box_is_the_stretched_keys_kernel(scale):
    kernel = bicubic_psf_kernel(scale).numpy()
    np.testing.assert_allclose(kernel, kernel[::-1], atol=1e-15)  # symmetric: no shift of the image
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    assert kernel.size == (3 * scale + 1 if scale % 2 == 0 else 3 * scale)
    target = antialiased_bicubic_taps(scale)
    assert target.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(np.convolve(kernel, np.ones(scale) / scale), target, atol=1e-14)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("shape", [(48, 40), (50, 43)])
def test_per_item_bicubic_equals_torch_antialiased_bicubic(scale, shape):
    rng = np.random.default_rng(scale)
    high_res = scan(rng.uniform(0, 1, (1, *shape)), np.diag([0.7, 1.3, 1.0, 1.0]))
    cfg = config(blur={"profile": "bicubic"})
    low_res = degradation_pipeline(cfg, scale, seed=0, normalise=False)({"high_res": high_res})["low_res"]
    expected = torch_antialiased_bicubic(high_res.as_tensor(), scale)
    assert tuple(low_res.shape) == tuple(expected.shape)
    torch.testing.assert_close(interior(low_res.as_tensor().double()), interior(expected), rtol=0, atol=1e-5)
    # At the border only the padding differs: close, not equal.
    assert float((low_res.as_tensor().double() - expected).abs().max()) < 0.1
    assert low_res.meta["degradation"]["blur"] == {
        "profile": "bicubic",
        "fwhm_mm": [0.0, 0.0],
        "scale": scale,
    }


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_batched_bicubic_equals_torch_antialiased_bicubic(scale):
    high_res = torch.rand(3, 1, 40, 36, generator=torch.Generator().manual_seed(scale))
    degrader = BatchDegradation(config(blur={"profile": "bicubic"}), scale, spacing_mm=(0.6, 0.9))
    low_res = degrader(high_res, torch.Generator().manual_seed(0))
    expected = F.interpolate(high_res.double(), scale_factor=1 / scale, mode="bicubic", antialias=True)
    torch.testing.assert_close(interior(low_res.double()), interior(expected), rtol=0, atol=1e-5)


def test_bicubic_volume_keeps_the_block_average_grid():
    rng = np.random.default_rng(0)
    affine = oblique_affine()
    volume = scan(rng.uniform(0, 1, (1, 32, 24, 3)), affine)
    low_res = degradation_pipeline(config(blur={"profile": "bicubic"}), 4, seed=0, normalise=False)(
        {"high_res": volume}
    )["low_res"]
    np.testing.assert_allclose(low_res.affine.numpy(), downsampled_affine(affine, (4, 4, 1)), atol=1e-12)
    for k in range(3):  # in-plane only: each slice is its own antialiased bicubic downsampling
        expected = torch_antialiased_bicubic(volume.as_tensor()[..., k], 4)
        torch.testing.assert_close(
            interior(low_res.as_tensor()[..., k].double()), interior(expected), rtol=0, atol=1e-5
        )


def test_bicubic_needs_the_scale():
    with pytest.raises(ConfigError, match="bicubic.*scale"):
        psf_kernel("bicubic", 1.0, 1.0)
    blur = RandPSFBlurd(config=BlurConfig("bicubic"))
    with pytest.raises(ConfigError, match="bicubic"):
        blur({"low_res": scan(np.zeros((1, 8, 8)))})


def test_mixture_draws_every_family_per_item_and_records_it():
    cfg = config(
        blur={"profile": ["gaussian", "box", "bicubic", "none"], "fwhm_mm": [1.0, 3.0]},
        noise={"kind": "gaussian", "std_hu": [10.0, 10.0]},
    )
    pipeline = degradation_pipeline(cfg, 2, seed=3)
    counts: Counter[str] = Counter()
    image = scan(np.random.default_rng(0).uniform(-1000, 1000, (1, 8, 8)))
    for _ in range(40):
        record = pipeline({"high_res": image})["low_res"].meta["degradation"]["blur"]
        counts[record["profile"]] += 1
        assert set(record) == {"profile", "fwhm_mm", "scale"}  # one set of keys: batches collate
        assert (record["fwhm_mm"] != [0.0, 0.0]) == (record["profile"] in ("gaussian", "box"))
    assert set(counts) == {"gaussian", "box", "bicubic", "none"}
    assert min(counts.values()) >= 4


def test_one_family_list_draws_as_the_plain_family():
    image = scan(np.random.default_rng(1).uniform(-1000, 1000, (1, 24, 24)))
    outputs = []
    for profile in ("gaussian", ["gaussian"]):
        cfg = config(
            blur={"profile": profile, "fwhm_mm": [1.0, 3.0]}, noise={"kind": "gaussian", "std_hu": [5, 30]}
        )
        outputs.append(degradation_pipeline(cfg, 2, seed=4)({"high_res": image})["low_res"])
    torch.testing.assert_close(outputs[0].as_tensor(), outputs[1].as_tensor(), rtol=0, atol=0)
    assert outputs[0].meta["degradation"] == outputs[1].meta["degradation"]


def test_batch_mixture_gives_items_different_families_and_matches_their_single_family():
    cfg = config(blur={"profile": ["gaussian", "box", "bicubic"], "fwhm_mm": [1.5, 3.0]})
    degrader = BatchDegradation(cfg, 2)
    high_res = torch.rand(12, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    params = degrader.sample_params(12, torch.Generator().manual_seed(1))
    assert set(params.profile) == {"gaussian", "box", "bicubic"}
    mixed = degrader.apply(high_res, params)
    for family in FAMILIES:
        single = BatchDegradation(config(blur={"profile": family, "fwhm_mm": [1.5, 3.0]}), 2)
        chosen = [i for i, p in enumerate(params.profile) if p == family]
        expected = single.apply(high_res, params)[chosen]
        torch.testing.assert_close(mixed[chosen], expected, rtol=0, atol=1e-6)


def test_profile_list_config_errors():
    assert config(blur={"profile": ["box", "bicubic"]}).blur.profiles == ("box", "bicubic")
    assert BlurConfig(profile=["box", "gaussian"]).profile == ("box", "gaussian")  # hashable
    with pytest.raises(ConfigError, match=r"blur.profile\[1\]: must be one of"):
        config_from_dict({"blur": {"profile": ["box", "cubic"]}})
    with pytest.raises(ConfigError, match="blur.profile: a mixture needs"):
        config_from_dict({"blur": {"profile": []}})
    with pytest.raises(ConfigError, match="blur.profile: must be one of"):
        config_from_dict({"blur": {"profile": "lanczos"}})
    with pytest.raises(ConfigError, match=r"blur.profile\[0\]: expected text"):
        config_from_dict({"blur": {"profile": [3]}})


def test_presets_mix_every_family_and_mr_keeps_kspace():
    for name in ("ct", "mr"):
        preset = load_degradation_preset(name)
        assert set(FAMILIES) <= set(preset.blur.profiles)
    mr = load_degradation_preset("mr")
    assert mr.kspace.enabled and "none" in mr.blur.profiles  # k-space truncation alone stays in the mix


@pytest.mark.parametrize("modality", ["ct", "mr"])
@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_family_configs_are_one_family_with_the_preset_noise(modality, family):
    from srgan_med.evaluate.run import synthesise_pair

    path = REPO / "configs" / "degradation" / "families" / f"{modality}-{family}.yaml"
    cfg = load_degradation_preset(path)
    preset = load_degradation_preset(modality)
    assert cfg.blur.profile == family and family in PSF_PROFILES
    assert cfg.modality == preset.modality and cfg.normalise == preset.normalise
    assert cfg.noise == preset.noise and cfg.noise.kind != "none"
    assert not cfg.kspace.enabled and cfg.through_plane.slice_thickness_mm is None
    # Usable as `evaluate --degradation PATH`: the simulated LR scan records the family.
    rng = np.random.default_rng(0)
    values = (
        rng.uniform(-1000, 1000, (1, 20, 20, 2)) if modality == "ct" else rng.uniform(0, 500, (1, 20, 20, 2))
    )
    high_res = scan(values, np.diag([0.8, 0.8, 2.0, 1.0]), modality=modality.upper())
    cropped, low_res = synthesise_pair(high_res, str(path), 4, 0, "phantom")
    assert tuple(low_res.shape) == (1, 5, 5, 2) and tuple(cropped.shape) == (1, 20, 20, 2)
    assert low_res.meta["degradation"]["blur"]["profile"] == family
