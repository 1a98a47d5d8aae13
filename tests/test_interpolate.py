"""Baseline interpolators: no half-voxel shifts, constants preserved, volume geometry updated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from srgan_med.interpolate import METHODS, upscale_slices, upscale_volume


def _blob(shape=(24, 20), centre=(10.3, 8.7), sigma=2.5) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(image: np.ndarray) -> np.ndarray:
    grid = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float64)
    return np.array([(g * image).sum() / image.sum() for g in grid])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factors", [(2, 2), (3, 4)])
def test_no_half_voxel_shift(method, factors):
    low = _blob()
    high = upscale_slices(low[None], factors, method)[0]
    assert high.shape == (low.shape[0] * factors[0], low.shape[1] * factors[1])
    # centre of high-res voxel n sits at low-res coordinate (n + 0.5) / f - 0.5
    centre_high = (_centroid(high) + 0.5) / np.array(factors) - 0.5
    np.testing.assert_allclose(centre_high, _centroid(low), atol=0.02)


@pytest.mark.parametrize("method", METHODS)
def test_constants_are_preserved(method):
    out = upscale_slices(np.full((2, 6, 5), 42.5, np.float32), (2, 3), method)
    np.testing.assert_allclose(out, 42.5, rtol=1e-5)


def test_smooth_methods_beat_nearest_on_a_smooth_image():
    high = _blob((48, 40), (20.6, 17.4), 5.0)
    low = high.reshape(24, 2, 20, 2).mean(axis=(1, 3))  # area downsampling by 2
    errors = {m: float(np.abs(upscale_slices(low[None], (2, 2), m)[0] - high).mean()) for m in METHODS}
    assert all(errors[m] < errors["nearest"] for m in ("linear", "bicubic", "bspline", "lanczos")), errors


def test_upscale_volume_updates_the_affine_and_keeps_slices():
    affine = torch.tensor(
        [[-0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 3.0, 30], [0, 0, 0, 1.0]], dtype=torch.float64
    )
    volume = MetaTensor(torch.rand(1, 6, 5, 4), affine=affine, meta={"modality": "CT"})
    out = upscale_volume(volume, (2, 3), "bicubic", slice_axis=2)
    assert tuple(out.shape) == (1, 12, 15, 4) and out.meta["modality"] == "CT"
    np.testing.assert_allclose(np.linalg.norm(out.affine.numpy()[:3, :3], axis=0), [0.4, 0.3, 3.0], atol=1e-9)
    # the first high-res voxel centre sits a quarter / third of a low-res voxel before the old one
    np.testing.assert_allclose(out.affine.numpy()[:3, 3], [10 + 0.8 * 0.25, -20 - 0.9 / 3, 30], atol=1e-9)
    sagittal = upscale_volume(volume, (2, 2), "linear", slice_axis=0)
    assert tuple(sagittal.shape) == (1, 6, 10, 8)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown interpolation method 'sinc'"):
        upscale_slices(np.ones((1, 4, 4)), (2, 2), "sinc")
    with pytest.raises(ValueError, match="two positive integers"):
        upscale_slices(np.ones((1, 4, 4)), (1.5, 2), "linear")
