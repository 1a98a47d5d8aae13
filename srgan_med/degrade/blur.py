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

import functools
import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from srgan_med.degrade._common import in_plane_axes_of, record, spacing_of, uniform, with_array
from srgan_med.degrade.bicubic import bicubic_psf_kernel
from srgan_med.degrade.config import BlurConfig
from srgan_med.errors import ConfigError, InputError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def gaussian_kernel(fwhm_mm: float, spacing_mm: float) -> torch.Tensor:
    """Unit-sum discrete Gaussian taps that add a blur of the given FWHM, shape ``(2 r + 1,)`` float64.

    See :func:`_gaussian_taps` (one item of it).
    """
    one = {"dtype": torch.float64}
    taps = _gaussian_taps(torch.tensor([float(fwhm_mm)], **one), torch.tensor([float(spacing_mm)], **one))[0]
    keep = torch.nonzero(taps).flatten()
    return taps[int(keep.min()) : int(keep.max()) + 1] if keep.numel() else torch.ones(1, dtype=torch.float64)


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


def psf_kernels(profiles: Sequence[str], fwhm_mm, spacing_mm, scale: int | None = None) -> torch.Tensor:
    """The taps of :func:`psf_kernel` for ``B`` items at once, centred in one common length, float64.

    Row ``b`` is ``psf_kernel(profiles[b], fwhm_mm[b], spacing_mm[b], scale)`` with zeros on either
    side, so the result is the weight of a grouped convolution with one kernel per item. The values are
    the per-item ones exactly (float64), computed with tensor ops per family rather than per item.

    Args:
        profiles: ``B`` family names (``"gaussian"``, ``"box"``, ``"bicubic"``; anything else is the
            identity, as in :func:`psf_kernel`).
        fwhm_mm: ``(B,)`` widths (mm).
        spacing_mm: ``(B,)`` pixel spacings along the axis (mm).
        scale: the downsampling factor, needed by ``"bicubic"``.

    Returns:
        ``(B, 2 R + 1)`` float64, ``R`` the largest radius of the batch's kernels.
    """
    fwhm = torch.as_tensor(fwhm_mm, dtype=torch.float64).reshape(-1)
    spacing = torch.as_tensor(spacing_mm, dtype=torch.float64).reshape(-1)
    if not len(profiles) == fwhm.numel() == spacing.numel():
        raise ValueError(
            f"psf_kernels: {len(profiles)} profiles, {fwhm.numel()} widths and {spacing.numel()} spacings"
        )
    members: dict[str, list[int]] = {}
    for index, profile in enumerate(profiles):
        members.setdefault(profile if profile in ("gaussian", "box", "bicubic") else "none", []).append(index)
    blocks = []  # (item indices, (n, 2 r + 1) taps)
    for profile, indices in members.items():
        rows = torch.tensor(indices, dtype=torch.long)
        if profile == "gaussian":
            taps = _gaussian_taps(fwhm[rows], spacing[rows])
        elif profile == "box":
            taps = _box_taps(fwhm[rows], spacing[rows])
        elif profile == "bicubic":
            if scale is None:
                raise ConfigError("blur.profile: 'bicubic' needs the downsampling scale (pass scale=...)")
            taps = _bicubic_taps(scale).expand(len(indices), -1)
        else:
            taps = torch.ones(len(indices), 1, dtype=torch.float64)
        blocks.append((rows, taps))
    radius = max((taps.shape[1] // 2 for _, taps in blocks), default=0)
    weight = torch.zeros(fwhm.numel(), 2 * radius + 1, dtype=torch.float64)
    for rows, taps in blocks:
        offset = radius - taps.shape[1] // 2
        weight[rows, offset : offset + taps.shape[1]] = taps
    return weight


@functools.lru_cache(maxsize=8)
def _bicubic_taps(scale: int) -> torch.Tensor:
    # Depends on the scale only, and is built by a Python loop: made once per scale, never written to.
    return bicubic_psf_kernel(scale)


def bandlimited_gaussian(sigma, offsets) -> np.ndarray:
    """The band-limited Gaussian of ``sigma`` samples at real ``offsets`` (in samples; broadcast):
    ``(1 / pi)`` times the integral over ``[0, pi]`` of ``exp(-sigma^2 w^2 / 2) cos(t w) dw``, whose
    samples at whole ``t`` are the taps of :func:`gaussian_kernel`, and at ``t`` off the grid those of
    a Gaussian centred between samples (thick slices' profiles)."""
    from scipy.special import wofz  # the Faddeeva function w(z) = exp(-z^2) erfc(-i z)

    # In closed form: exp(-y^2) - Re[exp(-x^2 - 2ixy) w(-y + ix)], over sqrt(2 pi) sigma, with
    # x = pi sigma / sqrt 2 and y = t / (sqrt 2 sigma); every factor stays bounded (a quadrature of
    # the integral took 16 ms for 512 items, on the training step's host path, and was less exact).
    s, t = np.asarray(sigma, dtype=np.float64), np.asarray(offsets, dtype=np.float64)
    x, y = np.pi * s / np.sqrt(2.0), t / (np.sqrt(2.0) * s)
    values = np.exp(-(y**2)) - np.real(np.exp(-(x**2) - 2j * x * y) * wofz(-y + 1j * x))
    return values / (np.sqrt(2.0 * np.pi) * s)


def _gaussian_taps(fwhm_mm: torch.Tensor, spacing_mm: torch.Tensor) -> torch.Tensor:
    """:func:`gaussian_kernel` of ``n`` items, centred in one length: ``(n, 2 r + 1)`` float64.

    The taps whose transfer function is the Gaussian's, ``exp(-sigma^2 w^2 / 2)`` over the sampled
    band ``|w| <= pi`` (its Fourier series, cut at ``ceil(4 sigma) + 2`` taps and scaled to unit sum),
    so a sampled image is blurred as its continuous object would be. Wider than about two voxels of
    FWHM these are the sampled Gaussian ``exp(-x^2 / 2 sigma^2)``; narrower, sampled taps alias and
    blur far less than asked. MONAI's ``gaussian_1d(..., "sampled")``, used here before 2026-12-06,
    added 0.38 mm of blur for 0.8 mm on a 1 mm grid (its ``"scalespace"`` kernel is closer there
    but passes up to twice the Gaussian's response at mid frequencies for wider kernels). Written
    by hand: no library gives band-limited Gaussian taps. The narrowest keep a small negative lobe
    (down to -1.95% of the sum, at about one voxel of FWHM), the ringing of the band limit itself.
    """
    fwhm = torch.as_tensor(fwhm_mm, dtype=torch.float64).cpu()
    spacing = torch.as_tensor(spacing_mm, dtype=torch.float64).cpu()
    positive = fwhm > 0
    sigma = torch.where(positive, fwhm / FWHM_PER_SIGMA / spacing, 1.0)  # 1: a placeholder, replaced
    tail = torch.where(positive, torch.ceil(4.0 * sigma) + 2.0, 0.0).long()
    radius = int(tail.max()) if tail.numel() else 0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.from_numpy(bandlimited_gaussian(sigma.numpy()[:, None], offsets.numpy()[None, :]))
    taps = torch.where(offsets.abs() <= tail[:, None], taps, 0.0)
    taps = taps / taps.sum(dim=1, keepdim=True)
    identity = (offsets == 0).to(torch.float64).expand_as(taps)
    return torch.where(positive[:, None], taps, identity)


def _box_taps(width_mm: torch.Tensor, spacing_mm: torch.Tensor) -> torch.Tensor:
    """:func:`box_kernel` of ``n`` items, centred in one length: ``(n, 2 r + 1)`` float64.

    The overlap formula is zero beyond each item's own radius, so it is evaluated on the common offsets.
    """
    width = width_mm / spacing_mm
    wide = width > 1.0
    radius = int(torch.ceil(width[wide] / 2.0 - 0.5).max()) if bool(wide.any()) else 0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    half = (width / 2)[:, None]
    overlap = torch.minimum(offsets + 0.5, half) - torch.maximum(offsets - 0.5, -half)
    taps = overlap.clamp(min=0.0) / width[:, None]
    identity = (offsets == 0).to(torch.float64).expand_as(taps)
    return torch.where(wide[:, None], taps, identity)


def blur_record(profile: str, fwhm_mm, scale: int | None) -> dict:
    """What ``meta["degradation"]["blur"]`` holds for one draw: the same keys for every family, so a
    DataLoader batch mixing families collates (a bicubic draw without ``fwhm_mm`` beside a Gaussian
    one stopped MONAI's collate with ``KeyError``). ``fwhm_mm`` is ``[0.0, 0.0]`` for the families
    with no width of their own (``none``; ``bicubic``, whose kernel follows ``scale``)."""
    widths = [float(v) for v in fwhm_mm] if profile in ("gaussian", "box") else [0.0, 0.0]
    return {"profile": profile, "fwhm_mm": widths, "scale": int(scale or 0)}


# the keys of a blur record (blur_record) each family uses; the others hold placeholders
_USED_BY_FAMILY = {"gaussian": ("fwhm_mm",), "box": ("fwhm_mm",), "bicubic": ("scale",), "none": ()}


def shown_draws(draws: dict) -> dict:
    """``meta["degradation"]`` as said to a reader: the blur step without the placeholder keys its
    family does not use (a bicubic draw's ``fwhm_mm`` of zeros)."""
    shown = dict(draws)
    blur = shown.get("blur")
    if isinstance(blur, dict) and blur.get("profile") in _USED_BY_FAMILY:
        used = _USED_BY_FAMILY[blur["profile"]]
        shown["blur"] = {k: v for k, v in blur.items() if k == "profile" or k in used}
    return shown


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
            field = max(image.shape[1 + axis] * spacing[axis] for axis in axes)
            if self.profile != "bicubic" and max(self.fwhm_mm) > field:
                # the kernel (and MONAI's padding of every axis by its radius) grows with the width:
                # 1e4 mm on a 64-voxel scan asked for 77 GB before failing
                raise InputError(
                    f"a PSF of {max(self.fwhm_mm):g} mm FWHM is wider than the scan's in-plane field of "
                    f"view ({field:g} mm): nothing of the image would be left"
                )
            for axis, fwhm in zip(axes, self.fwhm_mm, strict=True):
                kernels[axis] = psf_kernel(self.profile, fwhm, spacing[axis], self.scale)
            blurred = with_array(
                image, blur(image.as_tensor() if hasattr(image, "as_tensor") else image, kernels)
            )
            record(blurred, "blur", values)
            item[key] = blurred
        return item
