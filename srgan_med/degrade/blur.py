"""In-plane point-spread function: Gaussian (FWHM in mm), box (voxel averaging over a width in mm),
anti-aliased bicubic (:mod:`srgan_med.degrade.bicubic`), or a mixture of these drawn per item.

MONAI's ``RandGaussianSmoothd`` takes sigma in voxels and draws it per key unless told otherwise; here
the width is in mm (converted with each item's own spacing), the box profile it lacks is added, and
the draw is recorded in the item's metadata. The filtering itself is MONAI's: ``gaussian_1d`` for the
Gaussian taps and ``separable_filtering`` for the convolution.

Reference: the PSF model of thick-slice / soft-kernel acquisitions, e.g. Greenspan, "Super-resolution
in medical imaging", The Computer Journal 52(1), 2009, https://doi.org/10.1093/comjnl/bxm075
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from srgan_med.degrade._common import in_plane_axes_of, record, spacing_of, uniform, with_array
from srgan_med.degrade.bicubic import bicubic_psf_kernel
from srgan_med.degrade.config import BlurConfig
from srgan_med.errors import ConfigError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def gaussian_kernel(fwhm_mm: float, spacing_mm: float) -> torch.Tensor:
    """Sampled, unit-sum Gaussian taps with the given FWHM, shape ``(2 r + 1,)`` float64."""
    from monai.networks.layers.convutils import gaussian_1d

    if fwhm_mm <= 0:
        return torch.ones(1, dtype=torch.float64)
    sigma_voxels = fwhm_mm / FWHM_PER_SIGMA / spacing_mm
    # "sampled" (not "erf") so the taps' own FWHM is the configured one: erf taps add a voxel's width.
    taps = gaussian_1d(torch.tensor(sigma_voxels, dtype=torch.float64), 4.0, "sampled", True)
    return taps.to(torch.float64)


def box_kernel(width_mm: float, spacing_mm: float) -> torch.Tensor:
    """Unit-sum taps averaging exactly over ``width_mm`` of a voxel-wise constant signal.

    Tap ``n`` is the overlap of voxel ``[n - 1/2, n + 1/2]`` with ``[-w/2, w/2]`` (in voxels) over
    ``w``, so a width of 2 voxels gives ``[1/4, 1/2, 1/4]``.
    """
    width = width_mm / spacing_mm
    if width <= 1.0:
        return torch.ones(1, dtype=torch.float64)
    radius = math.ceil(width / 2.0 - 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    overlap = np.clip(np.minimum(offsets + 0.5, width / 2) - np.maximum(offsets - 0.5, -width / 2), 0, None)
    return torch.as_tensor(overlap / width, dtype=torch.float64)


def psf_kernel(profile: str, fwhm_mm: float, spacing_mm: float, scale: int | None = None) -> torch.Tensor:
    """Taps of ``profile`` (``"gaussian"``, ``"box"``, ``"bicubic"``, ``"none"``) for one axis, float64.

    ``"bicubic"`` depends on the downsampling ``scale`` only (not on ``fwhm_mm`` or the spacing).
    """
    if profile == "gaussian":
        return gaussian_kernel(fwhm_mm, spacing_mm)
    if profile == "box":
        return box_kernel(fwhm_mm, spacing_mm)
    if profile == "bicubic":
        if scale is None:
            raise ConfigError("blur.profile: 'bicubic' needs the downsampling scale (pass scale=...)")
        return bicubic_psf_kernel(scale)
    return torch.ones(1, dtype=torch.float64)


def blur_record(profile: str, fwhm_mm, scale: int | None) -> dict:
    """What ``meta["degradation"]["blur"]`` holds for one draw (the width only where it is used)."""
    if profile == "bicubic":
        return {"profile": profile, "scale": scale}
    if profile == "none":
        return {"profile": profile}
    return {"profile": profile, "fwhm_mm": [float(v) for v in fwhm_mm]}


def blur(image: torch.Tensor, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Separable filtering of a ``(C, *spatial)`` image with one kernel per spatial axis.

    Edges are replicated, so a flat background stays flat (zero padding would darken it).
    """
    from monai.networks.layers import separable_filtering

    data = torch.as_tensor(image).unsqueeze(0)
    taps = [k.to(device=data.device, dtype=data.dtype) for k in kernels]
    return separable_filtering(data, taps, mode="replicate")[0]


class RandPSFBlurd(RandomizableTransform, MapTransform):
    """Blur ``keys`` in-plane with one PSF family and width drawn per item (mm, each key's own spacing).

    Args:
        keys: keys to blur, all with the same draw. Default ``("low_res",)``.
        config: profile (or a mixture of profiles) and ``[low, high]`` FWHM in mm.
        in_plane_axes: in-plane spatial axes of ``(1, I, J, K)`` volumes (slices use both axes).
        scale: the in-plane factor of the block averaging that follows; needed by ``"bicubic"``.

    The draw is ``self.profile`` and ``self.fwhm_mm`` (two values, one per in-plane axis), recorded in
    ``meta["degradation"]["blur"]``. The family is drawn after the widths and only for a mixture, so
    a single-family config draws exactly what it did before mixtures existed.

    Example:
        >>> blur = RandPSFBlurd(config=BlurConfig("gaussian", (1.0, 2.0))).set_random_state(0)
        >>> item = blur({"low_res": torch.zeros(1, 16, 16)})
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("low_res",),
        config: BlurConfig | None = None,
        in_plane_axes: tuple[int, int] = (0, 1),
        scale: int | None = None,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.config = config if config is not None else BlurConfig()
        self.in_plane_axes = in_plane_axes
        self.scale = scale
        self.fwhm_mm: tuple[float, float] = (self.config.fwhm_mm[0], self.config.fwhm_mm[0])
        self.profile: str = self.config.profiles[0]

    def randomize(self, data=None) -> None:
        super().randomize(None)
        first = uniform(self.R, self.config.fwhm_mm)
        second = uniform(self.R, self.config.fwhm_mm) if self.config.anisotropic else first
        self.fwhm_mm = (first, second)
        profiles = self.config.profiles
        self.profile = profiles[int(self.R.randint(len(profiles)))] if len(profiles) > 1 else profiles[0]

    def __call__(self, data, randomize: bool = True):
        item = dict(data)
        if randomize:
            self.randomize()
        mixture = len(self.config.profiles) > 1
        if self.profile == "none" and not mixture:
            return item
        values = blur_record(self.profile, self.fwhm_mm, self.scale)
        for key in self.key_iterator(item):
            image = item[key]
            if self.profile == "none":  # drawn from a mixture: record the draw, change nothing
                image = with_array(image, image.as_tensor() if hasattr(image, "as_tensor") else image)
                record(image, "blur", values)
                item[key] = image
                continue
            axes = in_plane_axes_of(image, self.in_plane_axes)
            spacing = spacing_of(image)
            kernels = [torch.ones(1, dtype=torch.float64)] * (image.ndim - 1)
            for axis, fwhm in zip(axes, self.fwhm_mm, strict=True):
                kernels[axis] = psf_kernel(self.profile, fwhm, spacing[axis], self.scale)
            blurred = with_array(
                image, blur(image.as_tensor() if hasattr(image, "as_tensor") else image, kernels)
            )
            record(blurred, "blur", values)
            item[key] = blurred
        return item
