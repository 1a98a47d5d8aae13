"""Slices keep their world position; LR/HR patches cover the same millimetres; background is skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _degrade_helpers import config, oblique_affine, scan

from srgan_med.degrade import (
    BatchDegradation,
    RandAlignedPatchd,
    RandSliced,
    degradation_pipeline,
    downsampled_affine,
    extract_slice,
)
from srgan_med.errors import InputError


def world(affine, index):
    return (np.asarray(affine, dtype=np.float64) @ np.append(np.asarray(index, dtype=np.float64), 1.0))[:3]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_keeps_world_position(axis):
    rng = np.random.default_rng(0)
    volume = scan(rng.uniform(0, 1, (1, 6, 7, 8)), oblique_affine())
    plane = extract_slice(volume, axis, 3)
    in_plane = [a for a in range(3) if a != axis]
    assert tuple(plane.shape) == (1, volume.shape[1 + in_plane[0]], volume.shape[1 + in_plane[1]])
    index = [0, 0, 0]
    index[axis], index[in_plane[0]], index[in_plane[1]] = 3, 2, 4
    assert float(plane[0, 2, 4]) == float(volume[(0, *index)])
    np.testing.assert_allclose(world(plane.affine, (2, 4, 0)), world(volume.affine, index), atol=1e-12)
    assert plane.meta["slice_axis"] == axis and plane.meta["slice_index"] == 3


def test_rand_slice_same_index_for_all_keys_and_all_axes_reachable():
    volume = scan(np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 8)))
    sampler = RandSliced(keys=("high_res", "copy"), axes=(0, 1, 2)).set_random_state(0)
    seen = set()
    for _ in range(12):
        item = sampler({"high_res": volume, "copy": volume.clone()})
        torch.testing.assert_close(item["high_res"].as_tensor(), item["copy"].as_tensor())
        seen.add(item["high_res"].meta["slice_axis"])
    assert seen == {0, 1, 2}
    with pytest.raises(InputError, match="differ in size"):
        RandSliced(keys=("a", "b"), axes=(0,))({"a": volume, "b": scan(np.zeros((1, 4, 8, 8)))})


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_aligned_patches_cover_the_same_region(scale):
    rng = np.random.default_rng(scale)
    plane = extract_slice(scan(rng.uniform(0, 1, (1, 48, 48, 3)), oblique_affine()), 2, 1)
    pair = degradation_pipeline(config(), scale, seed=0, normalise=False)({"high_res": plane})
    crop = RandAlignedPatchd(scale=scale, low_res_patch_size=(5, 4), min_foreground_fraction=0.0)
    crop.set_random_state(scale)
    patches = crop(pair)
    high_res, low_res = patches["high_res"], patches["low_res"]
    assert tuple(high_res.shape) == (1, 5 * scale, 4 * scale) and tuple(low_res.shape) == (1, 5, 4)
    # Same physical region: the LR grid is exactly the block-averaged HR patch grid, values included.
    np.testing.assert_allclose(
        low_res.affine.numpy(), downsampled_affine(high_res.affine, (scale, scale, 1)), atol=1e-9
    )
    expected = high_res.as_tensor().reshape(1, 5, scale, 4, scale).mean(dim=(2, 4))
    torch.testing.assert_close(low_res.as_tensor(), expected, rtol=1e-5, atol=1e-6)


def test_background_patches_are_skipped():
    volume = np.zeros((1, 64, 64))
    volume[0, 40:, 40:] = 1.0  # one small bright corner in a black field
    crop = RandAlignedPatchd(
        low_res_key=None, scale=2, low_res_patch_size=(8, 8), min_foreground_fraction=0.5, max_tries=200
    )
    for seed in range(5):
        patch = crop.set_random_state(seed)({"high_res": scan(volume)})["high_res"]
        assert float((patch > 0.05).float().mean()) >= 0.5
    never = RandAlignedPatchd(
        low_res_key=None, scale=2, low_res_patch_size=(8, 8), min_foreground_fraction=0.0
    )
    fractions = [
        float((never.set_random_state(s)({"high_res": scan(volume)})["high_res"] > 0.05).float().mean())
        for s in range(10)
    ]
    assert min(fractions) < 0.5  # without the threshold, background patches do come out


def test_hr_patches_then_batched_degradation_give_training_pairs():
    volume = scan(np.random.default_rng(0).uniform(0, 1, (1, 40, 40, 6)))
    sampler = RandSliced(axes=(2,)).set_random_state(0)
    crop = RandAlignedPatchd(low_res_key=None, scale=4, low_res_patch_size=(6, 6)).set_random_state(0)
    patches = torch.stack([crop(sampler({"high_res": volume}))["high_res"].as_tensor() for _ in range(4)])
    low_res = BatchDegradation(config(), 4)(patches)
    assert tuple(patches.shape) == (4, 1, 24, 24) and tuple(low_res.shape) == (4, 1, 6, 6)
    with pytest.raises(InputError, match="does not fit"):
        RandAlignedPatchd(low_res_key=None, scale=4, low_res_patch_size=(20, 20))(
            {"high_res": volume[..., 0]}
        )


@pytest.mark.parametrize("thickness", [1.0, 2.0, 3.0])
def test_a_gaussian_slice_profile_blurs_as_the_gaussian_does(thickness):
    """Sampled taps blurred less than asked about one slice of FWHM (1 slice measured 0.79); the
    band-limited profile passes each frequency as the continuous Gaussian of that FWHM does, and
    the end slabs are not cut and renormalised (their centres were 0.28-0.58 slices off)."""
    from srgan_med.degrade.downsample import thick_slice_weights

    weights, step, first = thick_slice_weights(60, 1.0, thickness, 0.0, "gaussian")
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    index, centres = np.arange(60), first + step * np.arange(len(weights))
    sigma = thickness / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    middle = len(weights) // 2
    for cycles in (0.1, 0.25, 0.4):
        response = abs(np.sum(weights[middle] * np.exp(-2j * np.pi * cycles * (index - centres[middle]))))
        assert response == pytest.approx(np.exp(-2 * (np.pi * sigma * cycles) ** 2), abs=0.01)
    replicated = np.clip(np.arange(-24, 84), 0, 59)  # the volume continued as its edge slices
    row = weights[0]
    assert row[0] > 0 and np.all(row[-20:] == 0)
    # slab 0 as the same slab of a longer volume 24 slices further in sees it, folded back
    virtual = thick_slice_weights(108, 1.0, thickness, 0.0, "gaussian")[0][int(24 / step)]
    folded = np.zeros(60)
    np.add.at(folded, replicated, virtual)
    np.testing.assert_allclose(row, folded, atol=1e-12)
