"""Affines of downsampled / thick-slice / upsampled grids: LR voxel centres where the HR voxels were."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _degrade_helpers import config, oblique_affine, scan

from srgan_med.degrade import (
    ThroughPlaneConfig,
    degradation_pipeline,
    downsampled_affine,
    upsampled_affine,
)


def world(affine, index) -> np.ndarray:
    return (np.asarray(affine, dtype=np.float64) @ np.append(np.asarray(index, dtype=np.float64), 1.0))[:3]


def test_downsampled_affine_formula_and_types():
    affine = oblique_affine()
    result = downsampled_affine(affine, (4, 4, 1))
    expected = affine @ np.array([[4, 0, 0, 1.5], [0, 4, 0, 1.5], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(result, expected)
    as_torch = downsampled_affine(torch.as_tensor(affine), (4, 4, 1))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float64
    np.testing.assert_allclose(as_torch.numpy(), expected)


@pytest.mark.parametrize("factors", [(2, 2, 1), (3, 3, 1), (4, 4, 2), (8, 8, 1)])
def test_upsampled_inverts_downsampled(factors):
    affine = oblique_affine()
    np.testing.assert_allclose(
        upsampled_affine(downsampled_affine(affine, factors), factors), affine, atol=1e-12
    )
    # HR voxel 0 sits at LR index -(f - 1) / (2 f).
    low = downsampled_affine(affine, factors)
    f = np.asarray(factors, dtype=np.float64)
    np.testing.assert_allclose(
        world(upsampled_affine(low, factors), (0, 0, 0)), world(low, -(f - 1) / (2 * f))
    )


def test_bad_factors_raise():
    with pytest.raises(ValueError, match="factors"):
        downsampled_affine(np.eye(4), (0, 2, 2))
    with pytest.raises(ValueError, match="4x4"):
        upsampled_affine(np.eye(3), (2, 2, 2))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_shape_affine_and_landmark(scale):
    rng = np.random.default_rng(0)
    affine = oblique_affine()
    high_res = scan(rng.uniform(-1000, 1000, (1, 24, 26, 3)), affine)
    item = degradation_pipeline(config(), scale, seed=0)({"high_res": high_res})
    low_res = item["low_res"]
    assert tuple(low_res.shape) == (1, 24 // scale, 26 // scale, 3)
    np.testing.assert_allclose(
        low_res.affine.numpy(), downsampled_affine(affine, (scale, scale, 1)), atol=1e-12
    )
    # Landmark: LR voxel (2, 1, 1) centre = mean of the HR centres it averaged; its value = their mean.
    block = [(i, j, 1) for i in range(2 * scale, 3 * scale) for j in range(scale, 2 * scale)]
    centre = np.mean([world(affine, index) for index in block], axis=0)
    np.testing.assert_allclose(world(low_res.affine, (2, 1, 1)), centre, atol=1e-9)
    hr_values = item["high_res"][0, 2 * scale : 3 * scale, scale : 2 * scale, 1]
    assert float(low_res[0, 2, 1, 1]) == pytest.approx(float(hr_values.mean()), abs=1e-6)


def test_thick_slices_1mm_to_5mm_with_1mm_gap():
    rng = np.random.default_rng(1)
    affine = oblique_affine((0.8, 0.8, 1.0))
    high_res = scan(rng.uniform(0, 100, (1, 8, 8, 30)), affine)
    cfg = config(through_plane={"slice_thickness_mm": 5.0, "slice_gap_mm": 1.0})
    item = degradation_pipeline(cfg, 2, seed=0, normalise=False)({"high_res": high_res})
    low_res = item["low_res"]
    # Slices start every 6 mm; 30 slices hold 5 whole 5 mm slabs (0-4, 6-10, ..., 24-28).
    assert tuple(low_res.shape) == (1, 4, 4, 5)
    spacing = np.linalg.norm(low_res.affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [1.6, 1.6, 6.0], atol=1e-9)
    for k in range(5):
        slab = range(6 * k, 6 * k + 5)
        block = [(i, j, s) for i in (2, 3) for j in (4, 5) for s in slab]
        centre = np.mean([world(affine, index) for index in block], axis=0)
        np.testing.assert_allclose(world(low_res.affine, (1, 2, k)), centre, atol=1e-9)
        expected = high_res[0, 2:4, 4:6, 6 * k : 6 * k + 5].double().mean()
        assert float(low_res[0, 1, 2, k]) == pytest.approx(float(expected), rel=1e-5)
    assert low_res.meta["degradation"]["downsample"]["slice_thickness_mm"] == 5.0


def test_thick_slice_thinner_than_source_is_a_config_error():
    from srgan_med.errors import ConfigError

    high_res = scan(np.zeros((1, 4, 4, 10)), np.diag([1.0, 1.0, 2.0, 1.0]))
    pipeline = degradation_pipeline(config(through_plane={"slice_thickness_mm": 1.0}), 2, normalise=False)
    with pytest.raises(ConfigError, match="through_plane.slice_thickness_mm"):
        pipeline({"high_res": high_res})
    assert ThroughPlaneConfig().slice_thickness_mm is None


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_agrees_with_the_io_writers_rescaled_affine(factor):
    from srgan_med.io import rescaled_affine

    affine = oblique_affine()
    factors = (factor, factor, 1)
    inverse = (1 / factor, 1 / factor, 1)
    np.testing.assert_allclose(upsampled_affine(affine, factors), rescaled_affine(affine, factors))
    np.testing.assert_allclose(downsampled_affine(affine, factors), rescaled_affine(affine, inverse))


def test_a_thickness_equal_to_slices_measured_from_rounded_positions_is_whole():
    """DICOM positions written to 4 decimals make 2.5 mm slices measure 2.500007 mm: a 2.5 mm
    thickness was refused as "thinner than the 2.50001 mm slices" (the tolerance was 1e-6 slice)."""
    from srgan_med.degrade.downsample import thick_slice_weights

    weights, step, first = thick_slice_weights(4, 2.500007, 2.5, 2.5, "box")
    assert weights.shape == (2, 4) and step == pytest.approx(2.0, abs=1e-5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.argmax(weights[1]) == 2
