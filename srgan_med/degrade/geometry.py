"""Voxel-centre-correct affines of block-averaged (downsampled) and upsampled grids.

The affine maps voxel *centres* (nibabel convention). When a factor ``f`` averages high-res voxels
``0 .. f-1`` into low-res voxel 0, that low-res voxel's centre is the mean of their centres, at
high-res index ``(f - 1) / 2``. Getting this half-voxel right is what keeps a simulated low-res scan
exactly over its source in a viewer, and an upscaled result exactly over its input.

These are pure functions of ``(4, 4)`` numpy arrays or torch tensors, shared with the I/O writer
and ``enhance``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from srgan_med.io import geometry as io_geometry


def _return_like(result: np.ndarray, like):
    if hasattr(like, "detach"):
        import torch

        return torch.as_tensor(result, dtype=torch.float64)
    return result


def strided_affine(affine, steps: Sequence[float], first_centres: Sequence[float]):
    """:func:`srgan_med.io.geometry.strided_affine`, returning the array type of ``affine``."""
    return _return_like(io_geometry.strided_affine(affine, steps, first_centres), affine)


def downsampled_affine(affine, factors: Sequence[float]):
    """Affine after averaging blocks of ``factors`` voxels (low-res voxel 0 = high-res 0..f-1).

    ``new_affine = affine @ [[diag(f), (f - 1) / 2], [0, 1]]``.

    Args:
        affine: ``(4, 4)`` voxel-centre affine of the high-res grid (numpy or torch).
        factors: integer (or real) factor per spatial axis ``(fi, fj, fk)``; 1 leaves an axis alone.

    Returns:
        ``(4, 4)`` float64 affine of the low-res grid, same array type as ``affine``.

    Example:
        >>> downsampled_affine(np.eye(4), (4, 4, 1))[:3, 3].tolist()
        [1.5, 1.5, 0.0]
    """
    factors = np.asarray(factors, dtype=np.float64)
    if factors.shape != (3,) or not np.all(factors > 0):
        raise ValueError(f"factors must be three positive numbers, got {factors.tolist()}")
    return _return_like(io_geometry.rescaled_affine(affine, 1.0 / factors), affine)


def upsampled_affine(affine, factors: Sequence[float]):
    """Inverse of :func:`downsampled_affine`: the high-res grid over a low-res one.

    High-res voxel 0's centre sits at low-res index ``(1 / f - 1) / 2 = -(f - 1) / (2 f)``, so the
    voxel edges of both grids coincide.

    Args:
        affine: ``(4, 4)`` voxel-centre affine of the low-res grid (numpy or torch).
        factors: upsampling factor per spatial axis ``(fi, fj, fk)``.

    Returns:
        ``(4, 4)`` float64 affine of the high-res grid, same array type as ``affine``.

    Example:
        >>> upsampled_affine(np.eye(4), (4, 4, 1))[:3, 3].tolist()
        [-0.375, -0.375, 0.0]
    """
    return _return_like(io_geometry.rescaled_affine(affine, factors), affine)


def spacing_mm(affine) -> tuple[float, float, float]:
    """Voxel spacing in mm: the column norms of ``affine[:3, :3]``."""
    return io_geometry.spacing_from_affine(affine)
