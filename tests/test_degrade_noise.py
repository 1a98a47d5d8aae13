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
