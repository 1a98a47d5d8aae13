"""Seeding, per-item draws, exact normalisation round trip, presets and config errors."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch
from _degrade_helpers import config, oblique_affine, scan

from srgan_med.degrade import (
    KSpaceConfig,
    NormaliseConfig,
    NormaliseIntensityd,
    QuantiseConfig,
    RandKSpaceTruncated,
    RandQuantised,
    config_from_dict,
    degradation_pipeline,
    denormalise,
    load_degradation_preset,
    normalise,
)
from srgan_med.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def ct_volume(seed: int = 0):
    rng = np.random.default_rng(seed)
    return scan(rng.uniform(-1024, 3071, (1, 32, 32, 4)).round(), oblique_affine())


def test_same_seed_same_pairs_and_different_items_different_draws():
    cfg = load_degradation_preset("ct")
    first = degradation_pipeline(cfg, 2, seed=7)
    second = degradation_pipeline(cfg, 2, seed=7)
    items = [ct_volume(0), ct_volume(1)]
    run_one = [first({"high_res": v})["low_res"] for v in items]
    run_two = [second({"high_res": v})["low_res"] for v in items]
    for a, b in zip(run_one, run_two, strict=True):
        torch.testing.assert_close(a.as_tensor(), b.as_tensor(), rtol=0, atol=0)
        assert a.meta["degradation"] == b.meta["degradation"]
    draws = [lr.meta["degradation"] for lr in run_one]
    assert draws[0]["blur"]["fwhm_mm"] != draws[1]["blur"]["fwhm_mm"]
    assert draws[0]["noise"]["std_hu"] != draws[1]["noise"]["std_hu"]
    assert draws[0]["noise"]["noise_seed"] != draws[1]["noise"]["noise_seed"]
    other_seed = degradation_pipeline(cfg, 2, seed=8)({"high_res": items[0]})["low_res"]
    assert not torch.allclose(other_seed.as_tensor(), run_one[0].as_tensor())


def test_one_draw_applied_to_all_keys():
    cfg = config(
        blur={"profile": "gaussian", "fwhm_mm": [1.0, 3.0]}, noise={"kind": "gaussian", "std_hu": [5.0, 50.0]}
    )
    volume = ct_volume(0)
    from srgan_med.degrade import RandNoised, RandPSFBlurd

    blur = RandPSFBlurd(keys=("low_res", "other"), config=cfg.blur).set_random_state(0)
    noise = RandNoised(keys=("low_res", "other"), noise=cfg.noise).set_random_state(0)
    item = noise(blur({"low_res": volume, "other": volume.clone()}))
    torch.testing.assert_close(item["low_res"].as_tensor(), item["other"].as_tensor(), rtol=0, atol=0)
    assert item["low_res"].meta["degradation"]["blur"] == item["other"].meta["degradation"]["blur"]


@pytest.mark.parametrize("kind", ["window", "percentile"])
def test_normalisation_round_trip_returns_the_original_values(kind):
    volume = ct_volume(3)
    item = NormaliseIntensityd(config=NormaliseConfig(kind=kind))({"high_res": volume.clone()})
    normalised = item["high_res"]
    record = normalised.meta["normalisation"]
    assert float(normalised.min()) < 0.05 and float(normalised.max()) > 0.95
    torch.testing.assert_close(
        denormalise(normalised, record).as_tensor(), volume.as_tensor(), rtol=0, atol=1e-3
    )
    if kind == "window":
        assert (record["low"], record["high"]) == (-1000.0, 2000.0)
        assert float(normalised.min()) < 0.0  # -1024 HU lies outside the window and is kept, not clipped


def test_low_res_carries_the_normalisation_back_to_hu():
    volume = scan(np.full((1, 16, 16, 2), 123.0))
    low_res = degradation_pipeline(config(), 4, seed=0)({"high_res": volume})["low_res"]
    hounsfield = denormalise(low_res, low_res.meta["normalisation"])
    torch.testing.assert_close(hounsfield.as_tensor(), torch.full((1, 4, 4, 2), 123.0), rtol=0, atol=1e-3)


def test_normalise_percentiles_are_recorded():
    volume = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10)
    scaled, record = normalise(volume, NormaliseConfig("percentile", percentiles=(1.0, 99.0)))
    assert record["low"] == pytest.approx(9.99) and record["high"] == pytest.approx(989.01)
    assert float(scaled.flatten()[10]) == pytest.approx((10 - 9.99) / (989.01 - 9.99), abs=1e-6)


def test_kspace_truncation_removes_high_frequencies_and_keeps_low_ones():
    rng = np.random.default_rng(0)
    image = scan(rng.uniform(0, 1, (1, 32, 32)))
    out = RandKSpaceTruncated(config=KSpaceConfig(True, (0.5, 0.5)))({"low_res": image})["low_res"]
    spectrum = torch.fft.fft2(out[0].double())
    frequencies = torch.fft.fftfreq(32).abs()
    high = (frequencies[:, None] > 0.25) | (frequencies[None, :] > 0.25)
    before = torch.fft.fft2(image[0].double())
    # Magnitude reconstruction is not exactly band-limited, but nearly all high-frequency energy goes.
    assert float((spectrum[high].abs() ** 2).sum()) < 0.05 * float((before[high].abs() ** 2).sum())
    assert float(spectrum[0, 0].real) == pytest.approx(float(image.double().sum()), rel=0.05)
    full = RandKSpaceTruncated(config=KSpaceConfig(True, (1.0, 1.0)))({"low_res": image})["low_res"]
    torch.testing.assert_close(full.as_tensor(), image.as_tensor(), rtol=0, atol=1e-5)
    assert out.meta["degradation"]["kspace"]["keep_fraction"] == 0.5
    assert float((out - image).abs().mean()) > 0.05


def test_jpeg_quantisation_lands_on_8_bit_levels_and_lower_quality_loses_more():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(1, 32, 32)), axis=1), axis=2)
    image = scan((smooth - smooth.min()) / np.ptp(smooth))
    errors = []
    for quality in (90.0, 20.0):
        out = RandQuantised(config=QuantiseConfig(True, (quality, quality)))({"low_res": image})["low_res"]
        levels = out.double().numpy() * 255
        np.testing.assert_allclose(levels, levels.round(), atol=1e-3)
        errors.append(float((out - image).abs().mean()))
    assert 0 < errors[0] < errors[1]


def test_presets_load_and_repository_copies_are_identical():
    for name in ("ct", "mr"):
        packaged = REPO / "srgan_med" / "presets" / f"{name}.yaml"
        assert filecmp.cmp(packaged, REPO / "configs" / "degradation" / f"{name}.yaml", shallow=False)
        assert load_degradation_preset(
            REPO / "configs" / "degradation" / f"{name}.yaml"
        ) == load_degradation_preset(name)
    assert load_degradation_preset("ct").noise.std_hu is not None
    assert load_degradation_preset("mr").noise.kind == "rician"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"blur": {"fwhm": [1, 2]}}, "blur.fwhm: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"noise": {"kind": "poisson", "std_hu": [1, 2]}}, "noise.kind"),
        ({"blur": {"fwhm_mm": [3, 1]}}, "blur.fwhm_mm"),
        ({"blur": {"fwhm_mm": "wide"}}, "blur.fwhm_mm"),
        ({"kspace": {"enabled": "yes"}}, "kspace.enabled"),
        ({"noise": {"kind": "gaussian"}}, "noise: give exactly one"),
        ({"through_plane": {"slice_gap_mm": -1}}, "through_plane.slice_gap_mm"),
    ],
)
def test_bad_config_names_the_dotted_key(data, path):
    with pytest.raises(ConfigError, match=path.replace("[", r"\[")):
        config_from_dict(data)


def test_unknown_preset_and_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not a preset name"):
        load_degradation_preset("pet")
    bad = tmp_path / "bad.yaml"
    bad.write_text("noise:\n  kind: gaussian\n  std_hu: [5, 10]\n  sigma: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: noise.sigma: unknown key"):
        load_degradation_preset(bad)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ConfigError, match=r"binary.yaml: cannot read degradation preset"):
        load_degradation_preset(binary)


def test_monai_dataloader_batches_loaded_scans_and_mixed_psf_draws(tmp_path):
    """MONAI's collate stopped on the items these transforms make: a NIfTI header's ``dim_info``
    [None, None, None] (even at batch size 1), and blur records whose keys differed by PSF family
    (``KeyError: 'fwhm_mm'`` as soon as a batch mixed a bicubic and a Gaussian draw)."""
    import nibabel as nib
    from monai.data import DataLoader, Dataset, decollate_batch
    from monai.transforms import Compose

    from srgan_med.degrade import load_degradation_preset
    from srgan_med.io import save_scan
    from srgan_med.io.transforms import LoadScand

    rng = np.random.default_rng(0)
    paths = []
    for index in range(4):
        image = nib.Nifti1Image(
            rng.integers(-1000, 1000, (32, 32, 4)).astype(np.int16), np.diag([1, 1, 2, 1])
        )
        if index == 1:  # one file with a registered sform beside its qform, another with a comment
            sform = image.affine.copy()
            sform[:3, 3] += 5.0
            image.set_sform(sform, code=2)
        if index == 2:
            image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment"))
        paths.append(tmp_path / f"s{index}.nii.gz")
        nib.save(image, paths[-1])
    pipeline = Compose(
        [LoadScand(keys="high_res"), degradation_pipeline(load_degradation_preset("ct"), 2, seed=0)]
    )
    batches = list(DataLoader(Dataset([{"high_res": str(p)} for p in paths] * 4, pipeline), batch_size=4))
    profiles = [p for batch in batches for p in batch["low_res"].meta["degradation"]["blur"]["profile"]]
    assert len(set(profiles)) > 1  # the batches did mix families
    assert tuple(batches[0]["low_res"].shape) == (4, 1, 16, 16, 4)
    item = decollate_batch(batches[0])[1]  # decollated, an item still writes with its own header
    written = save_scan(item["high_res"], tmp_path / "back.nii.gz")
    assert int(nib.load(written).header["sform_code"]) == 2
