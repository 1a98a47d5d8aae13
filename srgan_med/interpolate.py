"""Classical interpolators on the same grid convention as the models: the baselines of ``evaluate``.

Every method resamples onto the grid of :func:`srgan_med.io.rescaled_affine` (voxel edges aligned,
the "half-pixel" convention of ``align_corners=False`` / ``grid_mode=True``), so a method that shifts
the image by half a voxel cannot win or lose on geometry alone. Libraries used:

* ``nearest``, ``linear``, ``bicubic``: ``torch.nn.functional.interpolate`` (Keys cubic, a = -0.75);
* ``bspline``: ``scipy.ndimage.zoom`` (cubic B-spline prefilter, ``grid_mode=True``);
* ``lanczos``: Pillow's Lanczos-3 resampling of float (mode ``"F"``) images, slice by slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("nearest", "linear", "bicubic", "bspline", "lanczos")


def _check(method: str, factors: Sequence[int]) -> tuple[int, int]:
    if method not in METHODS:
        raise ValueError(f"unknown interpolation method {method!r}; choose one of {', '.join(METHODS)}")
    if len(factors) != 2 or any(int(f) != f or f < 1 for f in factors):
        raise ValueError(f"factors must be two positive integers, got {list(factors)}")
    return int(factors[0]), int(factors[1])


def upscale_slices(slices: np.ndarray, factors: Sequence[int], method: str = "bicubic") -> np.ndarray:
    """Upscale a stack of 2-D slices by integer factors.

    Args:
        slices: ``(N, H, W)`` float array.
        factors: ``(fh, fw)`` integer factors.
        method: one of :data:`METHODS`.

    Returns:
        ``(N, H * fh, W * fw)`` float32 array.

    Example:
        >>> upscale_slices(np.ones((1, 4, 4)), (2, 2), "lanczos").shape
        (1, 8, 8)
    """
    fh, fw = _check(method, factors)
    slices = np.asarray(slices, dtype=np.float32)
    if slices.ndim != 3:
        raise ValueError(f"slices must be (N, H, W), got shape {slices.shape}")
    n, h, w = slices.shape
    if method in ("nearest", "linear", "bicubic"):
        import torch
        import torch.nn.functional as F

        mode = {"nearest": "nearest", "linear": "bilinear", "bicubic": "bicubic"}[method]
        tensor = torch.from_numpy(slices)[:, None]
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(tensor, scale_factor=(fh, fw), mode=mode, **kwargs)[:, 0].numpy()
    if method == "bspline":
        from scipy import ndimage

        return np.stack(
            [ndimage.zoom(s, (fh, fw), order=3, mode="mirror", grid_mode=True) for s in slices]
        ).astype(np.float32)
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.fromarray(s, mode="F").resize((w * fw, h * fh), Image.Resampling.LANCZOS))
            for s in slices
        ]
    ).astype(np.float32)


def upscale_volume(volume, factors: Sequence[int], method: str = "bicubic", slice_axis: int = 2):
    """Upscale a ``(1, I, J, K)`` MetaTensor in the plane orthogonal to ``slice_axis``.

    The result is a MetaTensor with the affine of the finer grid (voxel-centre correct).

    Args:
        volume: ``MetaTensor`` ``(1, I, J, K)``.
        factors: the two in-plane integer factors, in axis order.
        method: one of :data:`METHODS`.
        slice_axis: spatial axis (0, 1 or 2) that is not upscaled.
    """
    import torch
    from monai.data import MetaTensor

    from srgan_med.io.geometry import rescaled_affine

    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    array = np.moveaxis(volume[0].detach().cpu().numpy(), slice_axis, 0)  # (N, H, W)
    upscaled = np.moveaxis(upscale_slices(array, factors, method), 0, slice_axis)
    all_factors = list(factors)
    all_factors.insert(slice_axis, 1)
    affine = rescaled_affine(volume.affine, all_factors)
    meta = dict(volume.meta)
    meta.pop("affine", None)
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(upscaled[None])), affine=torch.as_tensor(affine), meta=meta
    )
