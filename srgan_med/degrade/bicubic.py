"""The anti-aliased bicubic family: the PSF that makes "PSF + block averaging" anti-aliased bicubic.

Anti-aliased bicubic downsampling by an integer factor ``s`` (PIL's ``Image.resize(BICUBIC)``,
``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``) gives low-res sample ``i`` as

    sum_j K((j - c_i) / s) / s * x[j],    c_i = i s + (s - 1) / 2,

with ``K`` the Keys cubic kernel (``a = -0.5``) stretched by ``s``. Its centres ``c_i`` are exactly the
block-average centres of :mod:`srgan_med.degrade.geometry` (the mean of the ``s`` high-res centres a
low-res voxel covers), so the low-res affine is the same for every family. For even ``s`` they lie
*between* high-res voxels, so "blur on the high-res grid, then pick voxels" cannot express it.

Design: the sampling step stays block averaging for every family, and this family's PSF is the
kernel ``h`` on the high-res grid with ``h * box_s = s * k`` where ``k`` are the combined taps above
(``box_s`` = ``s`` ones). Such an ``h`` exists exactly because the Keys kernel is a partition of unity
(``sum_n K(x - n) = 1`` for every ``x``): every polyphase component of ``k`` sums to ``1 / s``, so the
polynomial of ``k`` is divisible by ``1 + z + ... + z^(s-1)``. ``h`` is symmetric, has ``3 s + 1``
(even ``s``) or ``3 s`` (odd ``s``) taps and sums to 1. Keeping one sampling step means the per-item
pipeline and :class:`~srgan_med.degrade.batch.BatchDegradation` need nothing family-specific beyond
the PSF taps, and a mixture of families in one batch is just one kernel per item.

Away from the border (two low-res voxels in from each edge) the result equals anti-aliased bicubic
downsampling to float precision; at the border the image is extended by replication, as for the
other PSFs (a flat background stays flat), where PIL renormalises the truncated kernel instead.

Reference: R. Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP 29(6),
1981, https://doi.org/10.1109/TASSP.1981.1163711
"""

from __future__ import annotations

import numpy as np
import torch

KEYS_A = -0.5  # PIL and torch's antialiased bicubic use Keys' a = -0.5 (torch's plain bicubic: -0.75)


def keys_cubic(x: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """The Keys cubic convolution kernel at ``x`` (support ``|x| < 2``), float64."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    inner = (a + 2.0) * x**3 - (a + 3.0) * x**2 + 1.0
    outer = a * x**3 - 5.0 * a * x**2 + 8.0 * a * x - 4.0 * a
    return np.where(x <= 1.0, inner, np.where(x < 2.0, outer, 0.0))


def antialiased_bicubic_taps(scale: int) -> np.ndarray:
    """Weights of the high-res voxels in one low-res sample of anti-aliased bicubic downsampling.

    Returns:
        ``(4 s,)`` (even ``s``) or ``(4 s - 1,)`` (odd ``s``) float64 taps at high-res offsets
        ``-2 s < j - c < 2 s`` from the low-res centre ``c``; they sum to 1.
    """
    scale = _check_scale(scale)
    centre = (scale - 1) / 2.0
    offsets = np.arange(-2 * scale, 3 * scale, dtype=np.float64) - centre
    offsets = offsets[np.abs(offsets) < 2 * scale]
    return keys_cubic(offsets / scale) / scale


def bicubic_psf_kernel(scale: int) -> torch.Tensor:
    """High-res PSF ``h`` whose blur followed by ``s x s`` block averaging is anti-aliased bicubic.

    Solves ``h * box_s = s * antialiased_bicubic_taps(s)`` by the exact recurrence
    ``h[n] = d[n] + h[n - s]`` with ``d`` the first difference of the right-hand side (from
    ``(1 + z + ... + z^(s-1)) (1 - z) = 1 - z^s``).

    Args:
        scale: integer downsampling factor ``s`` (1 gives the identity ``[1]``).

    Returns:
        Symmetric unit-sum taps, float64, odd length.

    Example:
        >>> bicubic_psf_kernel(2).numpy().round(4).tolist()
        [-0.0234, -0.0469, 0.2734, 0.5938, 0.2734, -0.0469, -0.0234]
    """
    scale = _check_scale(scale)
    target = scale * antialiased_bicubic_taps(scale)
    difference = np.diff(np.concatenate([[0.0], target, [0.0]]))
    taps = np.zeros(target.size + 1 - scale, dtype=np.float64)
    for n in range(taps.size):
        taps[n] = difference[n] + (taps[n - scale] if n >= scale else 0.0)
    return torch.as_tensor(taps, dtype=torch.float64)


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)
