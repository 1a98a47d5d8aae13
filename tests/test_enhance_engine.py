"""Volume-wise upscaling: seam-free tiles, voxel-centre geometry, plane choice, OOM back-off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from srgan_med.enhance.engine import enhance_volume, plane_of_axis, slice_axis_for
from srgan_med.enhance.tiling import receptive_field_radius, tiled_upscale


def _small_generator(scale: int = 2) -> nn.Module:
    """A real (randomly initialised) conv / pixel-shuffle network in eval mode."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(1, 8, 5, padding=2), nn.PReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU()]
    layers += [
        nn.Conv2d(8, 8 * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale),
        nn.Conv2d(8, 1, 3, padding=1),
    ]
    network = nn.Sequential(*layers).eval()
    with torch.no_grad():  # non-trivial BN statistics so eval-mode BN is not the identity
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return network


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_inference_equals_untiled(scale):
    network = _small_generator(scale)
    image = torch.randn(2, 1, 70, 93)
    with torch.inference_mode():
        whole = network(image)
        halo = receptive_field_radius(network)
        assert halo >= 6
        tiled = tiled_upscale(network, image, scale, tile=24, halo=halo)
        seams = tiled_upscale(network, image, scale, tile=24, halo=0)
    assert tiled.shape == whole.shape == (2, 1, 70 * scale, 93 * scale)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    assert (seams - whole).abs().max() > 1e-3  # without a halo the tiles do show seams


def _nearest(scale: int):
    return lambda x: F.interpolate(x, scale_factor=scale, mode="nearest")


def _scan(shape=(12, 10, 5), spacing=(0.8, 0.9, 3.0)) -> MetaTensor:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    volume = np.full(shape, -1000.0, np.float32)
    volume[4, 7, 2] = 1000.0
    return MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(affine), meta={"modality": "CT"})


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_output_grid_keeps_a_landmark_in_place(slice_axis):
    scan = _scan()
    result = enhance_volume(
        scan,
        _nearest(2),
        2,
        normalise=lambda v: v / 1000,
        denormalise=lambda v: v * 1000,
        slice_axis=slice_axis,
        batch_size=3,
    )
    image = result.image
    expected_shape = [24, 20, 10]
    expected_shape[slice_axis] //= 2
    assert tuple(image.shape[1:]) == tuple(expected_shape)
    bright = np.argwhere(image[0].numpy() > 0)
    assert len(bright) == 4
    centre = np.mean([(image.affine.numpy() @ np.array([*b, 1.0]))[:3] for b in bright], axis=0)
    np.testing.assert_allclose(centre, (scan.affine.numpy() @ np.array([4, 7, 2, 1.0]))[:3], atol=1e-6)
    assert result.consistency_psnr_db == float("inf")  # block means of nearest-neighbour = the input


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_every_output_slice_is_the_generator_applied_to_that_slice(slice_axis):
    """Batching and the slice-by-slice output layout place each upscaled slice where it belongs."""
    network = _small_generator(2)
    volume = np.random.default_rng(slice_axis).normal(0.0, 300.0, (9, 11, 7)).astype(np.float32)
    scan = MetaTensor(torch.from_numpy(volume[None]), affine=torch.eye(4), meta={"modality": "CT"})
    result = enhance_volume(
        scan,
        network,
        2,
        normalise=lambda v: v / 1000,
        denormalise=lambda v: v * 1000,
        slice_axis=slice_axis,
        batch_size=3,
    )
    output = result.image[0].numpy()
    slices = torch.from_numpy(np.moveaxis(volume, slice_axis, 0)[:, None] / 1000)
    with torch.inference_mode():
        expected = np.moveaxis(network(slices)[:, 0].numpy() * 1000, 0, slice_axis)
    assert output.shape == expected.shape
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-3)
    # each slice is one contiguous block (axial: NIfTI's Fortran order, written without a transpose)
    assert max(range(3), key=lambda a: output.strides[a]) == slice_axis
    assert output.flags.f_contiguous == (slice_axis == 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_cuda_engine_places_every_slice_as_the_cpu_engine_does(slice_axis):
    """On a GPU each batch is transposed on the device and copied into the host output block."""
    import copy

    network = _small_generator(2)
    volume = np.random.default_rng(slice_axis).normal(0.0, 300.0, (19, 23, 37)).astype(np.float32)
    scan = MetaTensor(torch.from_numpy(volume[None]), affine=torch.eye(4), meta={"modality": "CT"})
    settings = dict(normalise=lambda v: v / 1000, denormalise=lambda v: v * 1000, slice_axis=slice_axis)
    on_cpu = enhance_volume(scan, network, 2, batch_size=4, **settings)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # strict fp32 on both
        on_gpu = enhance_volume(
            scan, copy.deepcopy(network).cuda(), 2, device="cuda", batch_size=8, **settings
        )
    assert on_gpu.image.device.type == "cpu" and on_gpu.image.shape == on_cpu.image.shape
    np.testing.assert_allclose(on_gpu.image[0].numpy(), on_cpu.image[0].numpy(), rtol=1e-4, atol=1e-2)
    assert on_gpu.consistency_psnr_db == pytest.approx(on_cpu.consistency_psnr_db, abs=1e-3)


def test_plane_choice():
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    assert slice_axis_for(affine, "auto") == 2
    assert slice_axis_for(np.diag([3.0, 0.5, 0.5, 1.0]), "auto") == 0
    assert slice_axis_for(affine, "axial") == 2
    assert slice_axis_for(affine, "sagittal") == 0
    coronal_stack = np.array([[0.7, 0, 0, 0], [0, 0, 5.0, 0], [0, 0.7, 0, 0], [0, 0, 0, 1]])
    assert slice_axis_for(coronal_stack, "coronal") == 2 and slice_axis_for(coronal_stack, "auto") == 2


def test_named_planes_take_three_different_axes_on_double_oblique_grids():
    """A per-plane argmax gave coronal and axial the same voxel axis on some double-oblique grids
    (rotations of about 30 degrees about each axis); the planes follow nibabel's orientation code."""
    from nibabel.orientations import aff2axcodes
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    for angles in [(-29.5, -31.8, -32.2), *rng.uniform(-45, 45, (200, 3))]:
        affine = np.eye(4)
        affine[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(
            [0.8, 0.9, 2.5]
        )
        axes = {plane: slice_axis_for(affine, plane) for plane in ("sagittal", "coronal", "axial")}
        assert sorted(axes.values()) == [0, 1, 2], (angles, axes)
        codes = aff2axcodes(affine)
        for plane, letters in (("sagittal", "LR"), ("coronal", "PA"), ("axial", "IS")):
            assert codes[axes[plane]] in letters, (angles, plane, codes)


def test_a_single_image_is_sliced_across_its_one_voxel_axis():
    """pydicom's JPEG2000.dcm (NM, 1024x256, 2.26 mm pixels, no slice thickness: 1 mm assumed) was
    sliced along its coarsest axis, one of the image's own, into 1024x1 "slices" and refused."""
    pixels = np.diag([2.26, 2.26, 1.0, 1.0])
    assert slice_axis_for(np.diag([2.26, 1.0, 2.26, 1.0]), "auto") == 1  # by spacing alone
    assert slice_axis_for(np.diag([2.26, 1.0, 2.26, 1.0]), "auto", (256, 1024, 1)) == 2
    assert slice_axis_for(pixels, "auto", (256, 1024, 1)) == 2
    assert slice_axis_for(np.diag([1.0, 0.5, 0.5, 1.0]), "auto", (1, 64, 64)) == 0
    assert slice_axis_for(pixels, "auto", (64, 1, 1)) == 2  # a line: prefer the usual axis
    assert slice_axis_for(pixels, "auto", (64, 64, 8)) == 2  # a volume: square pixels make the plane
    assert slice_axis_for(pixels, "sagittal", (256, 1024, 1)) == 0  # a named plane is obeyed


def test_auto_plane_is_where_pixels_are_square_not_across_the_coarsest_axis():
    """The coarsest axis was the slice axis: thin-slice CT (0.9x0.9 mm pixels, 0.625 mm apart) and
    `degrade --scale 2` of an isotropic scan (3x3x1.5 mm) were sliced sagittally, and enhance
    upscaled the wrong two axes (40x80x12 for 80x80x6)."""
    assert slice_axis_for(np.diag([0.9, 0.9, 0.625, 1.0]), "auto") == 2
    assert slice_axis_for(np.diag([3.0, 3.0, 1.5, 1.0]), "auto") == 2
    assert slice_axis_for(np.diag([0.5, 0.6, 3.0, 1.0]), "auto") == 2  # no square pair: the coarsest
    assert slice_axis_for(np.diag([0.45, 0.9, 1.0, 1.0]), "auto") == 2  # rectangular MR pixels
    assert slice_axis_for(np.diag([0.5, 1.0, 1.2, 1.0]), "auto") == 2
    assert slice_axis_for(np.diag([2.0, 0.5, 0.5, 1.0]), "auto") == 0
    assert slice_axis_for(np.diag([1.0, 1.0, 1.0, 1.0]), "auto") == 2  # isotropic: axis 2
    assert slice_axis_for(np.diag([1.0, 2.0, 4.0, 1.0]), "auto") == 2  # as square twice: the coarser


def test_cuda_out_of_memory_lowers_the_batch_and_continues():
    seen = []

    def flaky(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return F.interpolate(x, scale_factor=2, mode="nearest")

    scan = _scan(shape=(8, 8, 9))
    result = enhance_volume(scan, flaky, 2, normalise=lambda v: v, denormalise=lambda v: v, batch_size=8)
    assert result.batch_size == 2 and seen[:3] == [8, 4, 2]
    np.testing.assert_array_equal(result.image[0].numpy()[::2, ::2], scan[0].numpy())


def test_through_plane_refines_only_the_slice_axis_and_keeps_the_landmark():
    from srgan_med.enhance.engine import enhance_through_plane

    scan = _scan(shape=(12, 10, 5), spacing=(0.8, 0.9, 3.0))
    result = enhance_through_plane(
        scan, _nearest(3), 3, slice_axis=2, normalise=lambda v: v, denormalise=lambda v: v, batch_size=4
    )
    image = result.image
    assert tuple(image.shape[1:]) == (12, 10, 15)
    np.testing.assert_allclose(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0), [0.8, 0.9, 1.0])
    bright = np.argwhere(image[0].numpy() > 0)
    assert len(bright) == 3  # the landmark voxel, split into three thinner slices
    centre = np.mean([(image.affine.numpy() @ np.array([*b, 1.0]))[:3] for b in bright], axis=0)
    np.testing.assert_allclose(centre, (scan.affine.numpy() @ np.array([4, 7, 2, 1.0]))[:3], atol=1e-6)


def test_through_plane_consistency_is_that_of_the_written_volume():
    """The report's figure: the fused output averaged back over the slice axis, against the input."""
    from srgan_med.enhance.engine import enhance_through_plane

    scan = _scan(shape=(12, 10, 5), spacing=(0.8, 0.9, 3.0))
    scan[0] += torch.from_numpy(np.random.default_rng(0).normal(0, 200, (12, 10, 5)).astype(np.float32))
    bilinear = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")  # noqa: E731 - not block-mean preserving
    result = enhance_through_plane(
        scan, bilinear, 2, slice_axis=2, normalise=lambda v: v, denormalise=lambda v: v, batch_size=4
    )
    source = scan[0].numpy().astype(np.float64)
    back = result.image[0].numpy().reshape(12, 10, 5, 2).mean(axis=3, dtype=np.float64)
    expected = 10 * np.log10(np.ptp(source) ** 2 / np.mean((back - source) ** 2))
    assert result.consistency_psnr_db == pytest.approx(expected, abs=1e-4)


def test_resampling_the_slice_axis_keeps_the_slab_and_world_positions():
    """A volume whose values are each voxel's world z comes back with each new voxel's world z."""
    from srgan_med.enhance.engine import resample_slice_axis
    from srgan_med.io.geometry import plane_spacing

    affine = np.array([[0.8, 0, 0, 10.0], [0, 0.9, 0, -20.0], [0, 0.2, 1.25, 30.0], [0, 0, 0, 1]])
    shape = (4, 5, 20)  # 20 slices of 1.25 mm (a slight shear too): a 25 mm slab
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world_z = (index @ affine[:3, :3].T + affine[:3, 3])[..., 2].astype(np.float32)
    image = MetaTensor(
        torch.from_numpy(world_z[None]), affine=torch.as_tensor(affine), meta={"modality": "MR"}
    )
    resampled = resample_slice_axis(image, 2, 2.0)
    new_affine = resampled.affine.numpy()
    assert resampled.shape[1:] == (4, 5, 12)  # 12 slices of 2 mm fit in the 24.4 mm between planes
    # 2 mm between slice planes (DICOM's SpacingBetweenSlices), which the shear tilts: the slice
    # column is longer than that (1.25 mm columns are 1.22 mm between planes)
    assert plane_spacing(new_affine, 2) == pytest.approx(2.0)
    assert np.linalg.norm(new_affine[:3, 2]) == pytest.approx(2.0 * 1.25 / plane_spacing(affine, 2))
    np.testing.assert_allclose(new_affine[:3, :2], affine[:3, :2])
    centre = lambda a, n: a @ np.array([0, 0, (n - 1) / 2, 1.0])  # noqa: E731
    np.testing.assert_allclose(centre(new_affine, 12), centre(affine, 20), atol=1e-9)  # same slab centre
    new_index = np.stack(np.meshgrid(*[np.arange(n) for n in (4, 5, 12)], indexing="ij"), axis=-1)
    expected = (new_index @ new_affine[:3, :3].T + new_affine[:3, 3])[..., 2]
    np.testing.assert_allclose(resampled[0].numpy(), expected, atol=1e-4)  # linear in z: exact


@pytest.mark.parametrize("scale", [2, 3])
def test_through_plane_is_the_mean_of_the_two_plane_estimates(scale):
    """The fused volume, summed from strided views, is the plain definition: each plane's pass
    block-averaged back along its other in-plane axis, and the two averaged."""
    from srgan_med.enhance.engine import enhance_through_plane

    scan = _scan(shape=(12, 10, 5), spacing=(0.8, 0.9, 3.0))
    scan[0] += torch.from_numpy(np.random.default_rng(1).normal(0, 200, (12, 10, 5)).astype(np.float32))
    bilinear = lambda x: F.interpolate(x, scale_factor=scale, mode="bilinear")  # noqa: E731
    options = dict(normalise=lambda v: v, denormalise=lambda v: v, batch_size=4)
    fused = enhance_through_plane(scan, bilinear, scale, slice_axis=2, **options).image[0].numpy()
    first = enhance_volume(scan, bilinear, scale, slice_axis=0, **options).image[0].numpy()  # (12, 10s, 5s)
    second = enhance_volume(scan, bilinear, scale, slice_axis=1, **options).image[0].numpy()  # (12s, 10, 5s)
    expected = (
        first.reshape(12, 10, scale, 5 * scale).mean(axis=2)
        + second.reshape(12, scale, 10, 5 * scale).mean(axis=1)
    ) / 2
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-3)  # HU; float32 sums in another order


def test_through_plane_on_disk_holds_less_than_its_output(tmp_path):
    """Over the budget, each pass's output (4x the result at x4) and the estimates are files; numpy
    allocates less than the result itself (the consistency check's float64 input-sized sum included)."""
    import tracemalloc

    from srgan_med.enhance.engine import enhance_through_plane
    from srgan_med.io import scratch

    scan = _scan(shape=(64, 48, 8), spacing=(0.8, 0.9, 3.0))
    nearest = _nearest(4)
    tracemalloc.start()
    try:
        with scratch.disk_backed(tmp_path, budget_bytes=0):
            result = enhance_through_plane(
                scan, nearest, 4, slice_axis=2, normalise=lambda v: v, denormalise=lambda v: v, batch_size=2
            )
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output_bytes = 64 * 48 * 32 * 4
    assert tuple(result.image.shape[1:]) == (64, 48, 32)
    assert peak < output_bytes, f"peak {peak / output_bytes:.2f}x the output"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ],
)
def test_value_range_clamps_the_output_counts_what_it_clamped_and_scores_the_clamped_volume(device):
    """The output equals the unclamped one clamped to the range, the counts and the farthest
    overshoot are exact, and the consistency PSNR is that of the clamped (written) volume. The
    first batch (slices 0-2) stays inside the range, so the CPU skips its count and clamp."""
    rng = np.random.default_rng(0)
    volume = rng.uniform(0.0, 1.0, (9, 7, 4)).astype(np.float32)
    volume[:, :, :3] = 0.25 + 0.5 * volume[:, :, :3]  # stretched below to 0..1: inside
    scan = MetaTensor(torch.from_numpy(volume[None]), affine=torch.eye(4), meta={"modality": "MR"})

    def overshooting(x):  # nearest upsampling stretched: 0..1 -> -0.5..1.5, half the values outside
        return F.interpolate(x, scale_factor=2, mode="nearest") * 2.0 - 0.5

    options = {"normalise": lambda v: v, "denormalise": lambda v: v, "batch_size": 3, "device": device}
    raw = enhance_volume(scan, overshooting, 2, **options)
    clamped = enhance_volume(scan, overshooting, 2, value_range=(0.0, 1.0), **options)
    expected = raw.image[0].numpy()
    assert expected.min() < -0.4 and expected.max() > 1.4
    assert 0 <= expected[:, :, :3].min() and expected[:, :, :3].max() <= 1
    outside = np.count_nonzero((expected < 0) | (expected > 1))
    assert clamped.clipped_fraction == pytest.approx(outside / expected.size)
    assert clamped.clipped_most == pytest.approx(max(-expected.min(), expected.max() - 1), rel=1e-6)
    assert raw.clipped_fraction == 0 and raw.clipped_most == 0 and raw.value_range is None
    assert clamped.value_range == (0.0, 1.0)
    np.testing.assert_array_equal(clamped.image[0].numpy(), np.clip(expected, 0.0, 1.0))
    blocks = np.clip(expected, 0, 1).reshape(9, 2, 7, 2, 4).mean(axis=(1, 3))
    error = np.mean((blocks.astype(np.float64) - volume) ** 2)
    assert clamped.consistency_psnr_db == pytest.approx(10 * np.log10(np.ptp(volume) ** 2 / error), abs=1e-4)
    assert clamped.consistency_psnr_db != pytest.approx(raw.consistency_psnr_db, abs=0.1)


def test_through_plane_clamps_both_passes_so_the_fused_volume_stays_in_range():
    from srgan_med.enhance.engine import enhance_through_plane

    rng = np.random.default_rng(1)
    volume = rng.uniform(0.0, 1.0, (8, 6, 3)).astype(np.float32)
    scan = MetaTensor(torch.from_numpy(volume[None]), affine=torch.eye(4), meta={"modality": "MR"})

    def overshooting(x):
        return F.interpolate(x, scale_factor=2, mode="nearest") * 2.0 - 0.5

    options = {"normalise": lambda v: v, "denormalise": lambda v: v, "slice_axis": 2}
    raw = enhance_through_plane(scan, overshooting, 2, **options)
    clamped = enhance_through_plane(scan, overshooting, 2, value_range=(0.0, 1.0), **options)
    assert raw.image.min() < -0.2 and raw.image.max() > 1.2
    assert 0.0 <= float(clamped.image.min()) and float(clamped.image.max()) <= 1.0
    assert clamped.value_range == (0.0, 1.0)
    assert 0.2 < clamped.clipped_fraction < 0.8 and clamped.clipped_most == pytest.approx(0.5, abs=0.01)


def test_the_plane_of_an_axis_is_the_plane_that_names_it():
    """The report's plane_used: the inverse of slice_axis_for's named planes, on an oblique,
    permuted grid (voxel axis 0 runs head to foot, axis 2 left to right)."""
    rotation = np.array([[0.0, 0.2, 0.98], [0.1, 0.99, -0.2], [-0.99, 0.1, 0.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * [2.5, 0.8, 0.8]
    for plane in ("axial", "coronal", "sagittal"):
        assert plane_of_axis(affine, slice_axis_for(affine, plane)) == plane
    assert plane_of_axis(affine, 0) == "axial"
