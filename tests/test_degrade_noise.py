"""Noise: the configured std in HU in a flat region; Rician bias at low SNR equals the Rice mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _degrade_helpers import config, scan
from scipy.special import i0e, i1e

from srgan_med.degrade import (
    NoiseConfig,
    NormaliseConfig,
    RandNoised,
    degradation_pipeline,
    denormalise,
)
from srgan_med.degrade.normalise import image_magnitude_zero, magnitude_zero


@pytest.mark.parametrize("std_hu", [5.0, 20.0, 60.0])
def test_ct_noise_std_in_hu_in_a_flat_region(std_hu):
    cfg = config(noise={"kind": "gaussian", "std_hu": [std_hu, std_hu]})
    high_res = scan(np.full((1, 128, 128, 2), 40.0))  # soft tissue, 40 HU
    item = degradation_pipeline(cfg, 2, seed=0)({"high_res": high_res})
    low_res = item["low_res"]
    hounsfield = denormalise(low_res, low_res.meta["normalisation"]).double()
    assert float(hounsfield.std()) == pytest.approx(std_hu, rel=0.10)
    assert float(hounsfield.mean()) == pytest.approx(40.0, abs=3 * std_hu / 90)
    assert low_res.meta["degradation"]["noise"]["std_hu"] == std_hu


def test_ct_noise_level_is_drawn_from_the_range():
    cfg = config(noise={"kind": "gaussian", "std_hu": [10.0, 30.0]})
    pipeline = degradation_pipeline(cfg, 1, seed=0)
    for _ in range(3):
        low_res = pipeline({"high_res": scan(np.zeros((1, 96, 96, 2)))})["low_res"]
        level = low_res.meta["degradation"]["noise"]["std_hu"]
        assert 10.0 <= level <= 30.0
        measured = float(denormalise(low_res, low_res.meta["normalisation"]).double().std())
        assert measured == pytest.approx(level, rel=0.10)


def test_signal_dependent_ct_noise_grows_with_density():
    cfg = config(noise={"kind": "gaussian", "std_hu": [20.0, 20.0], "signal_dependence": 0.5})
    volume = np.zeros((1, 128, 128, 2))
    volume[0, :64] = -1000.0  # air: std 20
    volume[0, 64:] = 1000.0  # bone: std 20 * (1 + 0.5 * 2) = 40
    low_res = degradation_pipeline(cfg, 1, seed=0)({"high_res": scan(volume)})["low_res"]
    hounsfield = denormalise(low_res, low_res.meta["normalisation"]).double()
    assert float(hounsfield[0, :64].std()) == pytest.approx(20.0, rel=0.10)
    assert float(hounsfield[0, 64:].std()) == pytest.approx(40.0, rel=0.10)


def rice_mean(amplitude: float, sigma: float) -> float:
    """Analytic mean of a Rice distribution: sigma sqrt(pi/2) L_1/2(-A^2 / 2 sigma^2)."""
    x = -(amplitude**2) / (2 * sigma**2)
    # L_1/2(x) = e^{x/2} [(1 - x) I0(-x/2) - x I1(-x/2)], with exponentially scaled Bessels.
    laguerre = (1 - x) * i0e(-x / 2) - x * i1e(-x / 2)
    return float(sigma * np.sqrt(np.pi / 2) * laguerre)


@pytest.mark.parametrize("snr", [0.0, 1.0, 2.0])
def test_rician_noise_has_the_rice_bias_at_low_snr(snr):
    sigma = 0.05
    amplitude = snr * sigma
    noise = RandNoised(
        noise=NoiseConfig("rician", std_relative=(sigma, sigma)), normalise=NormaliseConfig("percentile")
    )
    noise.set_random_state(0)
    noisy = noise({"low_res": scan(np.full((1, 128, 128), amplitude))})["low_res"].double()
    expected = rice_mean(amplitude, sigma)
    assert float(noisy.mean()) == pytest.approx(expected, abs=0.03 * sigma)
    assert float(noisy.min()) >= 0.0
    # The bias is real: a Gaussian model (mean = amplitude) would be far off at these SNRs.
    assert expected - amplitude > 0.2 * sigma


def test_rician_at_high_snr_has_the_gaussian_std():
    sigma = 0.02
    noise = RandNoised(
        noise=NoiseConfig("rician", std_relative=(sigma, sigma)), normalise=NormaliseConfig("percentile")
    )
    noisy = noise.set_random_state(1)({"low_res": scan(np.full((1, 128, 128), 1.0))})["low_res"]
    assert float(noisy.double().std()) == pytest.approx(sigma, rel=0.10)
    assert isinstance(noisy, torch.Tensor)


def _cropped_mr(dark: float = 200.0, bright: float = 1000.0) -> np.ndarray:
    """An MR crop whose darkest tissue lies far above 0 (its 0.5th percentile is ``dark``), with an
    8x8 patch of no signal (0) in its first slice: 0.39% of the voxels."""
    volume = np.full((1, 64, 64, 4), dark, np.float32)
    volume[:, :, 32:] = bright
    volume[0, :8, :8, 0] = 0.0
    return volume


@pytest.mark.parametrize("normalise", ["percentile", "window"])
@pytest.mark.parametrize("step", ["noise", "kspace"])
def test_mr_magnitudes_are_taken_about_zero_signal_not_the_lowest_percentile(step, normalise):
    """The MR preset maps the 0.5th percentile to 0; Rician noise and the k-space magnitude were
    taken about that point, not about 0: on a crop whose dark tissue lies at 200, voxels of no signal
    came out at 400, and the dark tissue's Rician bias was that of zero signal. A window whose low end
    lies at 200 (a user's YAML) had the same fault after the percentile case was fixed."""
    sections = {
        "normalise": {"kind": "percentile"}
        if normalise == "percentile"
        else {"kind": "window", "window_hu": [200.0, 1000.0]},
        "noise": {"kind": "rician", "std_relative": [0.02, 0.02]} if step == "noise" else {"kind": "none"},
        "kspace": {"enabled": step == "kspace", "keep_fraction": [0.9, 0.9]},
    }
    item = degradation_pipeline(config(**sections), 1, seed=0)(
        {"high_res": scan(_cropped_mr(), modality="MR")}
    )
    low_res = item["low_res"]
    values = denormalise(low_res, low_res.meta["normalisation"]).double()[0].numpy()
    assert low_res.meta["normalisation"]["low"] == 200.0  # the 0.5th percentile, mapped to 0
    no_signal = values[2:6, 2:6, 0]  # inside the patch of zeros, away from its edges
    sigma = 0.02 * 800.0
    if step == "noise":  # zero signal: Rayleigh, mean sigma * sqrt(pi / 2) (was about 400)
        assert float(no_signal.mean()) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.35)
        dark = values[8:, :32, 1:]  # signal 200 = 12.5 sigma: about Gaussian, bias sigma^2 / 400
        assert float(dark.mean()) == pytest.approx(200.0 + sigma**2 / 400.0, abs=0.5)
        assert float(dark.std()) == pytest.approx(sigma, rel=0.05)
    else:  # no noise: the truncation's ringing about 0, not a mirror image about 200
        assert float(np.abs(no_signal).mean()) < 50.0 and float(np.abs(no_signal).max()) < 100.0
        dark = values[8:, :32, 1:]  # the dark tissue rings about 200 (was |ringing| added to it)
        assert float(dark.mean()) == pytest.approx(200.0, abs=2.0)


def test_no_signal_is_stored_zero_for_mr_and_air_for_ct():
    """Where the magnitude steps put no signal, in normalised units: stored 0 for MR whatever maps
    to 0, -1000 HU for CT (0 in the presets' window, where it had been put for every window)."""
    assert magnitude_zero(200.0, 1000.0, "MR") == pytest.approx(-0.25)
    assert magnitude_zero(-1000.0, 2000.0, "CT") == 0.0
    assert magnitude_zero(-160.0, 240.0, "CT") == pytest.approx(-2.1)  # a soft-tissue window
    assert magnitude_zero(-500.0, 1500.0, "ct") == pytest.approx(-0.25)  # CT by percentiles
    assert magnitude_zero(5.0, 5.0, "MR") == 0.0  # a constant scan's degenerate record
    image = scan(np.zeros((1, 4, 4, 1)), modality="CT")
    image.meta["normalisation"] = {"kind": "window", "low": -160.0, "high": 240.0}
    assert image_magnitude_zero(image) == pytest.approx(-2.1)
    assert image_magnitude_zero(torch.zeros(1, 4, 4)) == 0.0  # a plain tensor: a magnitude already


def test_the_batch_degradation_takes_magnitudes_about_each_items_zero():
    """Training's batched path: ``zero`` per item, as the per-volume pipeline takes it."""
    from srgan_med.degrade import BatchDegradation

    cfg = config(
        normalise={"kind": "percentile"},
        noise={"kind": "rician", "std_relative": [0.02, 0.02]},
        kspace={"enabled": True, "keep_fraction": [0.9, 0.9]},
    )
    degrader = BatchDegradation(cfg, 2)
    zero = torch.tensor([-0.25, 0.0], dtype=torch.float64)
    no_signal = zero.float().reshape(2, 1, 1, 1).expand(2, 1, 32, 32).contiguous()
    low_res = degrader(no_signal, torch.Generator().manual_seed(0), zero=zero)
    above = low_res - zero.float().reshape(2, 1, 1, 1)  # Rayleigh about each item's zero
    assert float(above.min()) >= 0.0
    np.testing.assert_allclose(above.mean(dim=(1, 2, 3)).numpy(), 0.02 * np.sqrt(np.pi / 2), rtol=0.15)
    before = degrader(no_signal, torch.Generator().manual_seed(0))  # about 0: the item at -0.25 mirrored
    assert float(before[0].mean()) > 0.2
    with pytest.raises(Exception, match="3 magnitude zeros for a batch of 2"):
        degrader(no_signal, torch.Generator().manual_seed(0), zero=[0.0, 0.0, 0.0])
