"""Upscale every slice of a volume with a 2-D generator, in batches, with bounded memory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from srgan_med.enhance.tiling import tiled_upscale
from srgan_med.errors import InputError, SrganMedError
from srgan_med.io import scratch

logger = logging.getLogger(__name__)

PLANES = ("auto", "axial", "coronal", "sagittal")
# RAS world axis that each slice plane is perpendicular to.
_PLANE_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}
MIN_TILE = 32


def slice_axis_for(affine, plane: str, shape: tuple[int, ...] | None = None) -> int:
    """Voxel axis along which slices are taken.

    ``auto``: where two axes have the same spacing (within 2%: square pixels) and the third another, the
    third is the slice axis: 0.9x0.9x0.625 mm thin-slice CT and a 3x3x1.5 mm in-plane degraded scan
    are sliced along axis 2, where the coarsest axis (the rule before) was 0. Otherwise (rectangular
    pixels such as 0.45x0.9x1.0 mm, or an isotropic grid) the coarsest axis, axis 2 on a tie. A
    volume one voxel deep along some axis (``shape``: a single 2-D image) is sliced along that axis,
    whatever spacing it states there (often a default 1 mm, finer than its pixels); a named plane
    picks the voxel axis nibabel's orientation code (``io_orientation``) gives that plane's normal
    in RAS space.
    """
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    if plane not in PLANES:
        raise InputError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}")
    flat = [axis for axis, size in enumerate(shape or ()) if size == 1]
    if plane == "auto" and flat:
        return 2 if 2 in flat else flat[-1]
    if plane == "auto":
        spacing = np.linalg.norm(matrix, axis=0)
        # square within 2%: headers round spacings (0.8 and 0.8009 mm are one pixel size)
        same = [np.isclose(spacing[a], spacing[b], rtol=0.02) for a, b in ((1, 2), (0, 2), (0, 1))]
        if sum(same) == 1:  # exactly one square pair: the axis across it
            return int(same.index(True))
        coarsest = np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-3))
        return int(2 if 2 in coarsest else coarsest[0])
    # nibabel's one-to-one assignment of voxel axes to world axes (as ``aff2axcodes`` reports it):
    # a per-plane argmax gave two planes the same axis on double-oblique grids.
    from nibabel.orientations import io_orientation

    world_of_axis = io_orientation(np.asarray(affine, dtype=np.float64))[:, 0]
    return int(np.flatnonzero(world_of_axis == _PLANE_NORMAL[plane])[0])


def plane_of_axis(affine, axis: int) -> str:
    """The anatomical plane whose slices are taken across voxel ``axis`` (the plane
    :func:`slice_axis_for` maps to that axis): ``axial``, ``coronal`` or ``sagittal``."""
    from nibabel.orientations import io_orientation

    world = io_orientation(np.asarray(affine, dtype=np.float64))[int(axis), 0]
    return next(name for name, normal in _PLANE_NORMAL.items() if normal == world)


@dataclass
class EnhanceResult:
    """The upscaled volume and what the JSON report says about it."""

    image: object  # MetaTensor (1, I', J', K')
    slice_axis: int
    batch_size: int
    tile: int
    consistency_psnr_db: float
    clipped_fraction: float = 0.0  # of the output's values, clamped to ``value_range``
    clipped_most: float = 0.0  # the farthest a clamped value lay outside ``value_range``
    value_range: tuple[float, float] | None = None  # the bounds the output was clamped to; None: none


def enhance_volume(
    scan,
    upscale: Callable[[torch.Tensor], torch.Tensor],
    scale: int,
    *,
    normalise: Callable[[np.ndarray], np.ndarray],
    denormalise: Callable[[np.ndarray], np.ndarray],
    slice_axis: int = 2,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    tile: int = 256,
    halo: int = 48,
    max_pixels_per_pass: int | None = None,
    value_range: tuple[float, float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> EnhanceResult:
    """Upscale ``scan`` in the plane orthogonal to ``slice_axis``.

    Memory: besides ``scan`` this holds one float32 output volume (written in place, in its final
    layout) and one batch; the consistency PSNR is accumulated batch by batch, so no float64 or
    transposed copy of either volume is made.

    Args:
        scan: ``MetaTensor`` ``(1, I, J, K)`` in physical units.
        upscale: the generator, ``(B, 1, h, w)`` -> ``(B, 1, h * scale, w * scale)`` in model units.
        scale: in-plane factor of the generator.
        normalise / denormalise: physical units <-> model units (the model's intensity preset).
        slice_axis: voxel axis that is not upscaled.
        device: where the generator runs.
        batch_size: slices per forward pass (halved automatically on CUDA out-of-memory).
        tile: tile size in input pixels for large slices (halved after batch size 1 runs out of memory).
        halo: context around each tile, at least the generator's receptive-field radius.
        max_pixels_per_pass: cap on ``batch * H * W`` input pixels per forward pass (the batch is
            lowered to fit, never below 1), bounding activation memory; ``None``: no cap.
        value_range: ``(low, high)`` in physical units: output values outside are clamped to it
            (before the consistency PSNR, so that figure is the written volume's); ``None``: none.
        progress: called with the number of slices finished after each batch.

    Returns:
        :class:`EnhanceResult` whose image has the affine of the finer grid (voxel-centre correct).
    """
    from monai.data import MetaTensor

    from srgan_med.io.geometry import rescaled_affine

    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    volume = np.moveaxis(scan[0].detach().cpu().numpy(), slice_axis, -1)  # (H, W, N) view
    height, width, count = volume.shape
    if min(height, width) < 2:
        raise InputError(
            f"slices of {height}x{width} voxels are too small to upscale (plane axis {slice_axis})"
        )
    if max_pixels_per_pass is not None:
        batch_size = max(1, min(batch_size, max_pixels_per_pass // (height * width)))
    # The output is laid out slice by slice, each slice with its first in-plane axis fastest (for
    # axial slices: NIfTI's Fortran order). A batch's slices are then one contiguous block that the
    # device writes in a single copy, and the NIfTI writer streams the volume without transposing
    # it. A C-ordered (I', J', K') volume cost a strided scatter per batch, and a transposing copy at
    # write time: writing a 150 MiB int16 .nii took 1.0-1.1 s on a 2-core CPU, 0.1-0.4 s now
    # (benchmarks/enhance_overhead.py, docs/benchmarks.md).
    # (N, W * s, H * s), on disk when larger than the memory budget (srgan_med.io.scratch)
    storage = scratch.array((count, width * scale, height * scale), np.float32)
    output = np.moveaxis(storage.transpose(0, 2, 1), 0, slice_axis)  # (I', J', K') view
    data_range = float(np.ptp(volume)) or 1.0
    # Gathering a batch of slices is a transposing copy (the slice axis is not the slowest in
    # memory); torch's is tiled and uses every core. For a 512x512x300 input the engine's own work
    # went from 1.39-1.56 s to 1.20-1.23 s on a 2-core CPU (enhance_overhead.py, docs/benchmarks.md).
    source = torch.from_numpy(volume)
    squared_error, clipped, overshoot, start = 0.0, 0, 0.0, 0
    while start < count:
        stop = min(start + batch_size, count)
        batch = source[:, :, start:stop].permute(2, 0, 1).contiguous().numpy()[:, None]
        low_res = torch.from_numpy(normalise(batch).astype(np.float32, copy=False)).to(device)
        try:
            with torch.inference_mode():
                high_res = tiled_upscale(upscale, low_res, scale, tile, halo)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch_size > 1:
                batch_size = max(1, batch_size // 2)
            elif tile > MIN_TILE:
                tile = max(MIN_TILE, tile // 2)
            else:
                raise SrganMedError(
                    "GPU out of memory even at batch size 1 and the smallest tile; use --device cpu"
                ) from None
            logger.warning("CUDA out of memory: continuing with batch size %d, tile %d", batch_size, tile)
            continue
        # Physical units and the consistency error where the batch is (on a GPU the host only
        # copies the result); the error is summed on the device, read once at the end.
        values_device = denormalise(high_res[:, 0].float())  # (B, H * s, W * s)
        if value_range is not None:  # counted on the device too: read once at the end
            low, high = value_range
            smallest, largest = torch.aminmax(values_device)
            overshoot = torch.clamp(torch.maximum(low - smallest, largest - high), min=overshoot)
            # On the CPU the count and the clamp run only for a batch with values outside: each
            # comparison pass costs more there than the min/max pass (benchmarks/enhance_overhead.py
            # times the engine with and without clamping). On a GPU the check would wait for the
            # device, so there they always run.
            if values_device.device.type != "cpu" or smallest < low or largest > high:
                outside = torch.count_nonzero(values_device < low)
                if high != float("inf"):
                    outside = outside + torch.count_nonzero(values_device > high)
                clipped = clipped + outside
                values_device = values_device.clamp(low, high)
        # Block means in float32 (rounding ~1e-7 of the value, far below what the PSNR resolves),
        # the difference and its sum in float64 on the low-res grid: a float64 copy of the
        # high-res batch cost more than the rest of the engine's own work on a CPU.
        blocks = F.avg_pool2d(values_device[:, None], scale)[:, 0].double()
        difference = (blocks - torch.from_numpy(batch[:, 0]).to(blocks.device, torch.float64)).flatten()
        squared_error = squared_error + torch.vdot(difference, difference)
        # (B, H * s, W * s) -> the block's (B, W * s, H * s) layout. On a GPU transposed there, so
        # the copy to the host is one contiguous block; on the CPU copied from the strided view.
        transposed = values_device.transpose(1, 2)
        if transposed.device.type != "cpu":
            transposed = transposed.contiguous()
        torch.from_numpy(storage[start:stop]).copy_(transposed)
        if progress is not None:
            progress(stop - start)
        start = stop
    consistency = _consistency_psnr(float(squared_error) / volume.size, data_range)
    clipped_fraction = int(clipped) / (volume.size * scale * scale)
    clipped_most = max(float(overshoot), 0.0)
    factors = [scale, scale, scale]
    factors[slice_axis] = 1
    image = MetaTensor(
        torch.from_numpy(output[None]),
        affine=torch.as_tensor(rescaled_affine(scan.affine, factors)),
        meta=_output_meta(scan.meta, keeps_slices=slice_axis == 2),
    )
    return EnhanceResult(
        image, slice_axis, batch_size, tile, float(consistency), clipped_fraction, clipped_most, value_range
    )


def _output_meta(meta: dict, *, keeps_slices: bool) -> dict:
    """The input's meta for the output; its slice thickness only where the third voxel axis (a DICOM
    series' stacking axis) keeps its grid, as in-plane upscaling of axial slices does."""
    drop = {"affine"} if keeps_slices else {"affine", "slice_thickness_mm"}
    return {k: v for k, v in meta.items() if k not in drop}


def _block_mean(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Means of ``factor`` neighbours along ``axis``, summed from strided views into one new array
    (float32, on disk when large): ``reshape`` of the engine's strided output would copy it whole."""

    def part(offset: int) -> np.ndarray:
        index = [slice(None)] * volume.ndim
        index[axis] = slice(offset, None, factor)
        return volume[tuple(index)]

    first = part(0)
    total = scratch.array(first.shape, np.float32)
    total[...] = first
    for offset in range(1, factor):
        total += part(offset)
    total /= factor
    return total


def _consistency_psnr(mean_squared_error: float, data_range: float) -> float:
    """PSNR of the block-averaged output against the input, over the input's own value range."""
    return (
        float("inf") if mean_squared_error == 0 else float(10 * np.log10(data_range**2 / mean_squared_error))
    )


def enhance_through_plane(
    scan, upscale: Callable[[torch.Tensor], torch.Tensor], scale: int, *, slice_axis: int, **kwargs
) -> EnhanceResult:
    """Upsample along the slice axis by applying the 2-D model to the two orthogonal planes.

    The self-consistent idea of SMORE (Zhao et al., 2021, https://doi.org/10.1109/TMI.2020.3037187)
    and ECLARE: the slices orthogonal to the thick axis contain it as one of their two axes. Each of
    those two stacks is upscaled in 2-D; the in-plane axis that did not need it is block-averaged
    back to its original grid, and the two estimates of the finer slice grid are averaged.

    Args:
        scan: ``MetaTensor`` ``(1, I, J, K)``.
        upscale: the 2-D generator, as for :func:`enhance_volume`.
        scale: the generator's factor; the slice axis becomes ``scale`` times finer.
        slice_axis: the thick axis.
        **kwargs: passed on to :func:`enhance_volume` (normalise, denormalise, device, ...).

    Returns:
        :class:`EnhanceResult` on the grid ``rescaled_affine(affine, factors)`` with ``scale`` on
        ``slice_axis`` and 1 elsewhere; its consistency PSNR is that of the fused output averaged
        back over the slice axis, against the input; its clipped fraction is that of the two
        passes' values together (each pass is clamped, so their mean stays in ``value_range``).
    """
    from monai.data import MetaTensor

    from srgan_med.io.geometry import rescaled_affine

    others = [axis for axis in range(3) if axis != slice_axis]
    fused = first = None
    clipped_fraction = clipped_most = 0.0
    for plane_axis, keep_fine in ((others[0], others[1]), (others[1], others[0])):
        # slices orthogonal to plane_axis contain the thick axis and keep_fine
        result = enhance_volume(scan, upscale, scale, slice_axis=plane_axis, **kwargs)
        first = result if first is None else first  # its batch size and tile go into the report
        clipped_fraction += 0.5 * result.clipped_fraction  # the two passes have equally many values
        clipped_most = max(clipped_most, result.clipped_most)
        estimate = _block_mean(result.image[0].numpy(), keep_fine, scale)  # back to the original grid
        fused = estimate if fused is None else np.add(fused, estimate, out=fused)
        result.image = None  # the pass's output (scale x the result) is not needed any more
    fused *= 0.5  # the mean of the two estimates
    factors = [1, 1, 1]
    factors[slice_axis] = scale
    image = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(fused)[None]),
        affine=torch.as_tensor(rescaled_affine(scan.affine, factors)),
        meta=_output_meta(scan.meta, keeps_slices=slice_axis != 2),
    )
    shape = list(fused.shape)
    shape[slice_axis : slice_axis + 1] = [shape[slice_axis] // scale, scale]
    source = scan[0].detach().cpu().numpy()
    difference = fused.reshape(shape).mean(axis=slice_axis + 1, dtype=np.float64)  # input-sized
    difference -= source
    squared = float(np.vdot(difference.ravel(), difference.ravel()))  # no squared copy
    consistency = _consistency_psnr(squared / difference.size, float(np.ptp(source)) or 1.0)
    return EnhanceResult(
        image,
        slice_axis,
        first.batch_size,
        first.tile,
        consistency,
        clipped_fraction,
        clipped_most,
        first.value_range,
    )


def resample_slice_axis(image, axis: int, spacing_mm: float):
    """``image`` ``(1, I, J, K)`` resampled linearly along ``axis`` to slices ``spacing_mm`` apart.

    The new slices are centred on the same slab (the old first-to-last edge span holds as many as fit),
    so a target that the model's factor does not reach exactly (5 mm slices, x4, 1 mm asked) costs an
    interpolation of the model's output, not of the input. Linear along one axis is written here, as
    MONAI's ``Spacing`` would resample all three axes and move the grid's corner.
    """
    from monai.data import MetaTensor

    from srgan_med.io.geometry import as_numpy_affine, plane_spacing, strided_affine

    affine = as_numpy_affine(image.affine)
    count = int(image.shape[1 + axis])
    # in old voxels; ``spacing_mm`` is between slice planes, which a sheared (tilted) grid's column is not
    step = spacing_mm / plane_spacing(affine, axis)
    new_count = max(1, int(np.floor(count / step + 1e-6)))
    first = (count - 1) / 2 - (new_count - 1) / 2 * step
    positions = first + step * np.arange(new_count)
    below = np.clip(np.floor(positions), 0, count - 1).astype(np.int64)
    above = np.minimum(below + 1, count - 1)
    weights = np.clip(positions - below, 0.0, 1.0).astype(np.float32)
    source = np.moveaxis(image[0].detach().cpu().numpy(), axis, 0)
    resampled = scratch.array((new_count, *source.shape[1:]), np.float32)
    for index in range(new_count):  # one slice at a time: no second full-size temporary
        np.multiply(source[below[index]], 1.0 - weights[index], out=resampled[index])
        resampled[index] += weights[index] * source[above[index]]
    steps, firsts = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    steps[axis], firsts[axis] = step, first
    return MetaTensor(
        torch.from_numpy(np.moveaxis(resampled, 0, axis)[None]),
        affine=torch.as_tensor(strided_affine(affine, steps, firsts)),
        meta={k: v for k, v in image.meta.items() if k != "affine"},
    )
