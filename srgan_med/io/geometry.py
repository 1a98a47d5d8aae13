"""Affine helpers: one convention everywhere.

Convention: an image is ``(C, I, J, K)`` and its ``affine`` (4x4, float64) maps the voxel index
``(i, j, k, 1)`` of a voxel CENTRE to RAS+ world coordinates in millimetres, exactly as nibabel
reports ``img.affine``. DICOM works in LPS+; :data:`LPS_TO_RAS` converts between the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def as_numpy_affine(affine) -> np.ndarray:
    """Return ``affine`` (torch tensor, array or nested list) as a float64 ``(4, 4)`` array."""
    array = np.asarray(
        affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=np.float64
    )
    if array.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {array.shape}")
    return array


def degenerate_voxels(affine) -> str | None:
    """Why ``affine`` places no voxel (``"NaN or infinite"``, ``"zero volume"``), or ``None``: what
    the NIfTI reader and ``save_scan`` refuse."""
    array = as_numpy_affine(affine)
    if not np.isfinite(array).all():
        return "NaN or infinite"
    if abs(np.linalg.det(array[:3, :3])) < 1e-12:
        return "zero volume"
    return None


def spacing_from_affine(affine) -> tuple[float, float, float]:
    """Voxel size in mm along i, j, k: the norms of the affine's first three columns."""
    matrix = as_numpy_affine(affine)[:3, :3]
    return tuple(float(v) for v in np.linalg.norm(matrix, axis=0))  # type: ignore[return-value]


def plane_spacing(affine, axis: int) -> float:
    """Distance in mm between the planes of consecutive voxels along ``axis``: the volume of a voxel
    over the area of its face across ``axis``. The column norm (:func:`spacing_from_affine`) except on
    a sheared grid, where it is shorter: a gantry-tilted series' slices 3.0 mm apart along the table
    are 2.934 mm apart as planes at 12 degrees (the SpacingBetweenSlices DICOM writes)."""
    matrix = as_numpy_affine(affine)[:3, :3]
    others = [matrix[:, a] for a in range(3) if a != axis]
    return float(abs(np.linalg.det(matrix)) / np.linalg.norm(np.cross(*others)))


def coarser_axis(affine, axis: int, tolerance: float = 0.02) -> int | None:
    """The coarsest voxel axis where it is coarser than ``axis`` by more than ``tolerance`` (headers
    round spacings: 0.8 and 0.8009 mm are one size), else None: ``axis`` is (about) the coarsest."""
    spacing = spacing_from_affine(affine)
    coarsest = int(np.argmax(spacing))
    return coarsest if spacing[axis] < spacing[coarsest] * (1.0 - tolerance) else None


def orientation_code(affine) -> str:
    """Three-letter axis code (e.g. ``"RAS"``, ``"LPS"``) of the closest orthogonal orientation."""
    import nibabel as nib

    return "".join(code or "?" for code in nib.orientations.aff2axcodes(as_numpy_affine(affine)))


def strided_affine(affine, steps: Sequence[float], first_centres: Sequence[float]) -> np.ndarray:
    """Affine of a grid whose voxel ``n`` sits at old index ``first_centres + n * steps`` per axis.

    The one place where grids are derived from grids: :func:`rescaled_affine` and the degradation
    model's block-averaged and thick-slice grids are special cases.

    Args:
        affine: ``(4, 4)`` voxel-centre affine of the source grid.
        steps: new voxel spacing per axis, in source voxels ``(si, sj, sk)``.
        first_centres: source index of the centre of new voxel 0 per axis.

    Returns:
        ``(4, 4)`` float64 affine.
    """
    steps = np.asarray(steps, dtype=np.float64)
    first_centres = np.asarray(first_centres, dtype=np.float64)
    if steps.shape != (3,) or first_centres.shape != (3,) or not np.all(steps > 0):
        raise ValueError(
            f"steps must be three positive numbers and first_centres three numbers, "
            f"got {steps.tolist()} and {first_centres.tolist()}"
        )
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(steps)
    index_map[:3, 3] = first_centres
    return as_numpy_affine(affine) @ index_map


def rescaled_affine(affine, factors: Sequence[float]) -> np.ndarray:
    """Affine of a grid resampled by ``factors`` over the same field of view.

    A factor ``f > 1`` upsamples (voxels ``f`` times smaller), ``f < 1`` downsamples. The voxel
    edges of both grids coincide, so the centre of new voxel 0 sits at old index
    ``(1 / f - 1) / 2``: ``-0.375`` for ``f = 4`` and ``+1.5`` for ``f = 1/4``. This keeps an
    upscaled volume exactly over its input in a viewer.

    Args:
        affine: ``(4, 4)`` voxel-centre affine of the input grid.
        factors: one positive factor per spatial axis ``(fi, fj, fk)``.

    Returns:
        The ``(4, 4)`` float64 affine of the new grid.
    """
    factors = np.asarray(factors, dtype=np.float64)
    if factors.shape != (3,) or not np.all(factors > 0):
        raise ValueError(f"factors must be three positive numbers, got {factors.tolist()}")
    return strided_affine(affine, 1.0 / factors, (1.0 / factors - 1.0) / 2.0)
