"""Image-quality metrics in physical units, with an explicit data range and an optional mask.

PSNR, SSIM and NRMSE are scikit-image's (so numbers match what reviewers recompute); SSIM is the 2-D
index averaged over the slices of a volume, as SR papers report it. Written here, because no
installed library provides them for volumes with masks:

* HFEN, the high-frequency error norm of Ravishankar & Bresler (IEEE TMI 2011,
  https://doi.org/10.1109/TMI.2010.2090538): relative L2 error of Laplacian-of-Gaussian (sigma 1.5
  voxels) filtered images;
* GMSD, gradient magnitude similarity deviation (Xue et al., IEEE TIP 2014,
  https://doi.org/10.1109/TIP.2013.2293423): a perceptual measure that needs no downloaded weights.

All functions take ``reference`` and ``test`` arrays of the same shape (``(H, W)`` or ``(I, J, K)``;
for volumes the last axis indexes slices; a scan's ``(1, I, J, K)`` counts as ``(I, J, K)``), in the
same physical units. Bad arguments raise :class:`~srgan_med.errors.InputError` (a ``ValueError``).
"""

from __future__ import annotations

import numpy as np

from srgan_med.errors import InputError


def _image(array, name: str, dtype=np.float64) -> np.ndarray:
    """``array`` as ``(H, W)`` or ``(I, J, K)``: a scan's channel axis of one dropped (a ``(1, I, J,
    K)`` volume was taken slice by slice as 3-D slices: GMSD came out 6x too large, silently)."""
    array = np.asarray(array, dtype=dtype)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim not in (2, 3):
        raise InputError(f"{name}: expected an image (H, W) or a volume (I, J, K), got shape {array.shape}")
    return array


def _pair(reference, test, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    reference, test = _image(reference, "reference"), _image(test, "test")
    if reference.shape != test.shape:
        raise InputError(f"shapes differ: reference {reference.shape}, test {test.shape}")
    if mask is not None:
        mask = _image(mask, "mask", bool)
        if mask.shape != reference.shape:
            raise InputError(f"mask shape {mask.shape} differs from image shape {reference.shape}")
        if not mask.any():
            raise InputError("mask is empty")
    return reference, test, mask


def _check_range(data_range: float) -> float:
    if not data_range > 0:
        raise InputError(f"data_range must be positive, got {data_range}")
    return float(data_range)


def psnr(reference, test, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images)."""
    reference, test, mask = _pair(reference, test, mask)
    data_range = _check_range(data_range)
    if mask is None:
        from skimage.metrics import peak_signal_noise_ratio

        if np.array_equal(reference, test):
            return float("inf")
        return float(peak_signal_noise_ratio(reference, test, data_range=data_range))
    mse = float(np.mean((reference[mask] - test[mask]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def _slices(array: np.ndarray) -> list[np.ndarray]:
    return [array] if array.ndim == 2 else [array[..., k] for k in range(array.shape[-1])]


# The side of SSIM's Gaussian window: scikit-image makes it 2 * int(3.5 * sigma + 0.5) + 1 = 11 for
# sigma 1.5, and refuses images smaller than the window.
SSIM_MIN_SIDE = 11


def ssim(reference, test, data_range: float, mask=None) -> float:
    """Mean structural similarity (2-D, Gaussian window sigma 1.5 as in Wang et al. 2004)."""
    from skimage.metrics import structural_similarity

    reference, test, mask = _pair(reference, test, mask)
    data_range = _check_range(data_range)
    values, weights = [], []
    masks = _slices(mask) if mask is not None else [None] * len(_slices(reference))
    for ref, tst, msk in zip(_slices(reference), _slices(test), masks, strict=True):
        if min(ref.shape) < SSIM_MIN_SIDE:
            side = SSIM_MIN_SIDE
            raise InputError(f"slices of {ref.shape} are too small for SSIM ({side}x{side} at least)")
        mean_ssim, ssim_map = structural_similarity(
            ref,
            tst,
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            full=True,
        )
        if msk is None:  # scikit-image's own mean (it leaves out the window's border)
            values.append(float(mean_ssim))
            weights.append(1.0)
            continue
        # the mask's mean leaves out the same border, where the window reaches past the slice
        # (so a mask of every voxel scores as no mask does)
        border = (SSIM_MIN_SIDE - 1) // 2
        inner = np.zeros_like(msk)
        inner[border:-border, border:-border] = msk[border:-border, border:-border]
        if inner.any():
            values.append(float(ssim_map[inner].mean()))
            weights.append(float(inner.sum()))
    if not values:
        raise InputError(f"the mask lies only within {(SSIM_MIN_SIDE - 1) // 2} voxels of the slices' edges")
    return float(np.average(values, weights=weights))


def nrmse(reference, test, mask=None) -> float:
    """Root-mean-square error divided by the root-mean-square of the reference (Euclidean NRMSE)."""
    from skimage.metrics import normalized_root_mse

    reference, test, mask = _pair(reference, test, mask)
    if mask is not None:
        reference, test = reference[mask], test[mask]
    return float(normalized_root_mse(reference, test, normalization="euclidean"))


def mae(reference, test, mask=None) -> float:
    """Mean absolute error, in the images' units (HU for CT)."""
    reference, test, mask = _pair(reference, test, mask)
    difference = np.abs(reference - test)
    return float(difference[mask].mean() if mask is not None else difference.mean())


def hfen(reference, test, mask=None, sigma: float = 1.5) -> float:
    """High-frequency error norm: ``||LoG(ref) - LoG(test)|| / ||LoG(ref)||`` (0 when identical)."""
    from scipy.ndimage import gaussian_laplace

    reference, test, mask = _pair(reference, test, mask)
    log_ref = gaussian_laplace(reference, sigma)
    log_test = gaussian_laplace(test, sigma)
    if mask is not None:
        log_ref, log_test = log_ref[mask], log_test[mask]
    norm = float(np.linalg.norm(log_ref))
    # the truncated LoG kernel leaves ~1e-4 of the value on flat images: treat that as flat
    if np.abs(log_ref).max(initial=0.0) <= 1e-3 * max(float(np.abs(reference).max()), 1e-12):
        raise InputError("the reference has no high-frequency content (flat image): HFEN is undefined")
    return float(np.linalg.norm(log_ref - log_test) / norm)


def gmsd(reference, test, data_range: float, mask=None) -> float:
    """Gradient magnitude similarity deviation (0 when identical; larger is worse).

    The stability constant ``c = 170 / 255**2 * data_range**2`` is the paper's, scaled from 8-bit
    images to ``data_range``.
    """
    from scipy.ndimage import prewitt

    reference, test, mask = _pair(reference, test, mask)
    data_range = _check_range(data_range)
    c = 170.0 / 255.0**2 * data_range**2
    maps, masks = [], []
    slice_masks = _slices(mask) if mask is not None else [None] * len(_slices(reference))
    for ref, tst, msk in zip(_slices(reference), _slices(test), slice_masks, strict=True):
        # Prewitt in the paper is averaged over 3 pixels: scipy's sums, hence the / 3.
        g_ref = np.hypot(prewitt(ref, axis=0), prewitt(ref, axis=1)) / 3.0
        g_tst = np.hypot(prewitt(tst, axis=0), prewitt(tst, axis=1)) / 3.0
        maps.append((2 * g_ref * g_tst + c) / (g_ref**2 + g_tst**2 + c))
        masks.append(np.ones_like(ref, bool) if msk is None else msk)
    values = np.concatenate([m[k].ravel() for m, k in zip(maps, masks, strict=True)])
    return float(values.std())
