"""Metrics agree with scikit-image and behave as their papers say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from srgan_med import metrics


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    reference = gaussian_filter(rng.normal(0, 300, (40, 36, 5)), (2, 2, 0)) - 200  # HU-like texture
    test = reference + rng.normal(0, 15, reference.shape)
    return reference, test


def test_psnr_and_ssim_match_scikit_image(pair):
    reference, test = pair
    assert metrics.psnr(reference, test, 2000) == pytest.approx(
        peak_signal_noise_ratio(reference, test, data_range=2000), rel=1e-12
    )
    expected = np.mean(
        [
            structural_similarity(
                reference[..., k],
                test[..., k],
                data_range=2000,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for k in range(reference.shape[2])
        ]
    )
    assert metrics.ssim(reference, test, 2000) == pytest.approx(expected, rel=1e-9)


def test_masked_psnr_uses_only_the_mask(pair):
    reference, test = pair
    mask = np.zeros(reference.shape, bool)
    mask[10:20, 10:20] = True
    test = test.copy()
    test[~mask] += 5000  # errors outside the mask must not count
    mse = np.mean((reference[mask] - test[mask]) ** 2)
    assert metrics.psnr(reference, test, 2000, mask) == pytest.approx(10 * np.log10(2000**2 / mse))
    assert metrics.ssim(reference, test, 2000, mask) > metrics.ssim(reference, test, 2000)


def test_masked_ssim_of_every_voxel_is_unmasked_ssim(pair):
    """The masked mean leaves out the window's border as scikit-image's mean does, so a mask of
    every voxel scores as no mask (it averaged the border in: 0.002 higher on real CT)."""
    reference, test = pair
    everything = np.ones(reference.shape, bool)
    assert metrics.ssim(reference, test, 2000, everything) == pytest.approx(
        metrics.ssim(reference, test, 2000), rel=1e-12
    )
    rim = np.zeros(reference.shape, bool)
    rim[:3] = True  # only within the border
    with pytest.raises(ValueError, match="edges"):
        metrics.ssim(reference, test, 2000, rim)


def test_identical_images_score_perfectly(pair):
    reference, _ = pair
    assert metrics.psnr(reference, reference, 2000) == float("inf")
    assert metrics.ssim(reference, reference, 2000) == pytest.approx(1.0)
    assert metrics.nrmse(reference, reference) == 0
    assert metrics.mae(reference, reference) == 0
    assert metrics.hfen(reference, reference) == 0
    assert metrics.gmsd(reference, reference, 2000) == pytest.approx(0, abs=1e-12)


def test_hfen_and_gmsd_grow_with_blur(pair):
    reference, _ = pair
    blurred = [gaussian_filter(reference, (s, s, 0)) for s in (0.5, 1.0, 2.0)]
    hfen = [metrics.hfen(reference, b) for b in blurred]
    gmsd = [metrics.gmsd(reference, b, 2000) for b in blurred]
    assert hfen == sorted(hfen) and hfen[0] > 0
    assert gmsd == sorted(gmsd) and gmsd[0] > 0


def test_nrmse_and_mae_in_units(pair):
    reference, _ = pair
    shifted = reference + 10.0
    assert metrics.mae(reference, shifted) == pytest.approx(10.0)
    assert metrics.nrmse(reference, shifted) == pytest.approx(10.0 / np.sqrt(np.mean(reference**2)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(np.zeros((8, 8)), np.zeros((8, 9)), 1)
    with pytest.raises(ValueError, match="data_range must be positive"):
        metrics.psnr(np.zeros((8, 8)), np.ones((8, 8)), 0)
    with pytest.raises(ValueError, match="mask is empty"):
        metrics.mae(np.zeros((8, 8)), np.ones((8, 8)), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="HFEN is undefined"):
        metrics.hfen(np.ones((8, 8)), np.ones((8, 8)))
