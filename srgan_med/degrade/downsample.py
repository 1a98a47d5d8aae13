"""Downsampling: block averaging in-plane by an integer factor, thick slices through-plane.

MONAI's ``RandSimulateLowResolution`` zooms down and back up to the original grid, and ``Zoom`` /
``Resize`` interpolate; neither gives a smaller grid whose voxels average exactly the high-res voxels
they cover with a voxel-centre-correct affine, which is what a paired LR/HR dataset needs. So both
steps are written here; the affine comes from :mod:`srgan_med.degrade.geometry`.

Thick-slice model: a slice of thickness ``T`` every ``T + G`` mm (``G`` = gap) integrates the signal
over ``T`` with a box (ideal) or Gaussian (FWHM ``T``) slice profile. See e.g. Greenspan 2009,
https://doi.org/10.1093/comjnl/bxm075
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform

from srgan_med.degrade._common import in_plane_axes_of, record, spacing_of, with_array
from srgan_med.degrade.config import ThroughPlaneConfig
from srgan_med.degrade.geometry import strided_affine
from srgan_med.errors import ConfigError, InputError

_WHOLE = 1e-3  # of a slice: the tolerance of slab widths and counts (see thick_slice_weights)


def block_average(image: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Average non-overlapping blocks of ``factors`` voxels; trailing voxels that do not fill a block drop.

    Args:
        image: ``(C, *spatial)`` tensor.
        factors: integer factor per spatial axis (1 leaves an axis alone).

    Returns:
        ``(C, *[n // f for n, f in zip(spatial, factors, strict=True)])`` tensor.
    """
    data = torch.as_tensor(image)
    spatial = data.shape[1:]
    if len(factors) != len(spatial):
        raise ValueError(f"need one factor per spatial axis {tuple(spatial)}, got {list(factors)}")
    kept = [n // f for n, f in zip(spatial, factors, strict=True)]
    if min(kept) < 1:
        raise InputError(f"image of shape {tuple(spatial)} is smaller than the factors {list(factors)}")
    cropped = data[(slice(None), *[slice(0, k * f) for k, f in zip(kept, factors, strict=True)])]
    blocked_shape = [data.shape[0]]
    for k, f in zip(kept, factors, strict=True):
        blocked_shape += [k, f]
    blocks = cropped.reshape(blocked_shape)
    return blocks.mean(dim=tuple(range(2, 2 * len(kept) + 1, 2)))


def thick_slice_weights(
    n_slices: int, spacing_mm: float, thickness_mm: float, gap_mm: float = 0.0, profile: str = "box"
) -> tuple[np.ndarray, float, float]:
    """Weights of the high-res slices in each simulated thick slice.

    Slice ``k`` is centred at high-res index ``c_k = (T / s - 1) / 2 + k (T + G) / s`` (its box starts
    at the edge of high-res slice 0) and only whole thick slices inside the volume are kept.

    Args:
        n_slices: number of high-res slices along the axis.
        spacing_mm: high-res slice spacing ``s``.
        thickness_mm: simulated slice thickness ``T``.
        gap_mm: gap ``G`` between simulated slices.
        profile: ``"box"`` (overlap-weighted average over ``T``) or ``"gaussian"`` (FWHM ``T``).

    Returns:
        ``(weights (n_thick, n_slices), step in high-res slices, centre of thick slice 0 in high-res
        index)``; each row sums to 1.
    """
    width = thickness_mm / spacing_mm
    step = (thickness_mm + gap_mm) / spacing_mm
    # Spacings come from float32 headers (0.7 mm is 0.69999999 there) and from DICOM positions
    # written to a few decimals (2.5 mm slices measure 2.500007 mm): widths and steps within a
    # thousandth of a slice of a whole slab count as whole, or the last slab was dropped and a
    # thickness equal to the slices' refused.
    if width < 1.0 - _WHOLE:
        raise ConfigError(
            f"through_plane.slice_thickness_mm: {thickness_mm} mm is thinner than "
            f"the {spacing_mm:g} mm slices"
        )
    first = (width - 1.0) / 2.0
    n_thick = int(math.floor((n_slices - width) / step + _WHOLE)) + 1
    if n_thick < 1:
        raise InputError(f"{n_slices} slices of {spacing_mm:g} mm cannot hold one {thickness_mm:g} mm slice")
    index = np.arange(n_slices, dtype=np.float64)
    centres = first + step * np.arange(n_thick)
    offsets = index[None, :] - centres[:, None]
    if profile == "box":
        weights = np.clip(
            np.minimum(offsets + 0.5, width / 2) - np.maximum(offsets - 0.5, -width / 2), 0, None
        )
    else:
        # Band-limited taps (as the in-plane Gaussian PSF's): sampled ones blurred less than asked
        # about one slice of FWHM (1 slice measured 0.79). Beyond the volume's ends the object is
        # taken to continue as its edge slices (replicated, as the in-plane blur pads): cut and
        # renormalised, the end slabs' profiles had their centres 0.3-0.6 mm off their positions.
        from srgan_med.degrade.blur import FWHM_PER_SIGMA, bandlimited_gaussian

        sigma = width / FWHM_PER_SIGMA
        reach = int(math.ceil(4.0 * sigma)) + 2
        virtual = np.arange(-reach, n_slices + reach, dtype=np.float64)  # the volume, padded
        from_centres = virtual[None, :] - centres[:, None]
        taps = np.where(np.abs(from_centres) <= reach, bandlimited_gaussian(sigma, from_centres), 0.0)
        weights = np.zeros((n_thick, n_slices))
        np.add.at(weights.T, np.clip(virtual, 0, n_slices - 1).astype(np.int64), taps.T)  # replicate
    return weights / weights.sum(axis=1, keepdims=True), step, first


def _slice_spacing(image: torch.Tensor, axis: int) -> float:
    """Distance in mm between the planes of consecutive slices along ``axis``: what slice thickness
    and gap are measured in (DICOM's SliceThickness and SpacingBetweenSlices). The voxel column's
    length on a gantry-tilted grid is longer: 1.0 mm steps at 20 degrees are 0.940 mm apart, and
    3 mm slabs came out 2.819 mm thick."""
    from srgan_med.io.geometry import plane_spacing

    affine = getattr(image, "affine", None)
    if affine is None or tuple(affine.shape) != (4, 4):
        return spacing_of(image)[axis]
    return plane_spacing(affine, axis)


class Downsampled(MapTransform):
    """Block-average ``keys`` in-plane by ``scale`` and optionally simulate thick slices.

    Args:
        keys: keys to downsample. Default ``("low_res",)``.
        scale: integer in-plane factor (e.g. 2, 3, 4, 8).
        in_plane_axes: in-plane spatial axes of ``(1, I, J, K)`` volumes (slices use both axes).
        through_plane: thick-slice simulation for volumes (ignored for 2-D slices).

    Shapes: ``(1, I, J, K) -> (1, I // s, J // s, n_thick)`` for in-plane axes ``(0, 1)``; the affine
    puts each low-res voxel centre at the mean of the high-res centres it averaged.

    Example:
        >>> item = Downsampled(scale=2)({"low_res": torch.zeros(1, 8, 8, 4)})
        >>> tuple(item["low_res"].shape)
        (1, 4, 4, 4)
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("low_res",),
        scale: int = 4,
        in_plane_axes: tuple[int, int] = (0, 1),
        through_plane: ThroughPlaneConfig | None = None,
    ) -> None:
        super().__init__(keys)
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ConfigError(f"scale: must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.in_plane_axes = in_plane_axes
        self.through_plane = through_plane if through_plane is not None else ThroughPlaneConfig()

    def __call__(self, data):
        item = dict(data)
        for key in self.key_iterator(item):
            item[key] = self.downsample(item[key])
        return item

    def downsample(self, image: torch.Tensor) -> torch.Tensor:
        """Downsample one ``(C, *spatial)`` image (see class docstring)."""
        axes = in_plane_axes_of(image, self.in_plane_axes)
        spatial = image.ndim - 1
        factors = [1] * spatial
        for axis in axes:
            factors[axis] = self.scale
        raw = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        out = block_average(raw, factors)
        steps = [1.0, 1.0, 1.0]
        firsts = [0.0, 0.0, 0.0]
        for axis in axes:
            steps[axis] = float(self.scale)
            firsts[axis] = (self.scale - 1) / 2.0
        values = {"scale": self.scale}
        thickness = self.through_plane.slice_thickness_mm
        if spatial == 3 and thickness is not None:
            (axis,) = [a for a in range(3) if a not in axes]
            weights, step, first = thick_slice_weights(
                out.shape[1 + axis], _slice_spacing(image, axis), thickness,
                self.through_plane.slice_gap_mm, self.through_plane.profile,
            )  # fmt: skip
            matrix = torch.as_tensor(weights, dtype=out.dtype)
            out = torch.movedim(
                torch.tensordot(torch.movedim(out, 1 + axis, -1), matrix.T, dims=1), -1, 1 + axis
            )
            steps[axis], firsts[axis] = step, first
            values.update(
                slice_thickness_mm=thickness,
                slice_gap_mm=self.through_plane.slice_gap_mm,
                slice_profile=self.through_plane.profile,
            )
        affine = None
        if getattr(image, "affine", None) is not None and tuple(image.affine.shape) == (4, 4):
            affine = strided_affine(image.affine, steps, firsts)
        result = with_array(image, out.contiguous(), affine)
        if hasattr(result, "meta") and spatial == 3:  # DICOM SliceThickness of the third voxel axis
            if "slice_thickness_mm" in values:
                result.meta["slice_thickness_mm"] = float(values["slice_thickness_mm"])
            elif 2 in axes:  # block-averaged along it: the written default (the new spacing) holds
                result.meta.pop("slice_thickness_mm", None)
        record(result, "downsample", values)
        return result
