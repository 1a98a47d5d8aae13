"""2-D slices from 3-D volumes, and LR/HR patch pairs that cover the same physical region.

MONAI's ``RandSpatialCropd`` crops every key to the *same* size at the *same* index, which is wrong
for a pair whose grids differ by ``scale``; here the HR patch is ``scale x`` the LR patch and starts at
``scale x`` its index, so (with the block-averaging geometry) both cover exactly the same millimetres.
Near-empty (background) patches are skipped with a configurable threshold.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from monai.transforms import MapTransform, RandomizableTransform

from srgan_med.degrade._common import with_array
from srgan_med.errors import ConfigError, InputError


def slice_affine(affine, axis: int, index: int) -> torch.Tensor:
    """``(4, 4)`` affine of slice ``index`` along ``axis``: columns (in-plane p, in-plane q, axis).

    The slice is a ``(1, H, W)`` image whose voxel ``(u, v)`` is volume voxel ``(.., u, .., v, ..)``
    with the remaining index fixed, so its world position is unchanged.
    """
    matrix = torch.as_tensor(affine, dtype=torch.float64)
    in_plane = [a for a in range(3) if a != axis]
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = matrix[:3, [*in_plane, axis]]
    out[:3, 3] = matrix[:3, 3] + matrix[:3, axis] * index
    return out


def extract_slice(image: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """Slice ``index`` along spatial ``axis`` of a ``(C, I, J, K)`` volume, as ``(C, H, W)``."""
    if image.ndim != 4:
        raise InputError(f"expected a (C, I, J, K) volume, got shape {tuple(image.shape)}")
    if not 0 <= index < image.shape[1 + axis]:
        raise InputError(f"slice {index} is outside axis {axis} of size {image.shape[1 + axis]}")
    raw = image.as_tensor() if hasattr(image, "as_tensor") else image
    plane = raw.select(1 + axis, index).contiguous()
    affine = slice_affine(image.affine, axis, index) if hasattr(image, "affine") else None
    out = with_array(image, plane, affine)
    if hasattr(out, "meta"):
        out.meta["slice_axis"], out.meta["slice_index"] = axis, index
    return out


class RandSliced(RandomizableTransform, MapTransform):
    """Take one 2-D slice from the volumes in ``keys``, at one drawn axis and index for all keys.

    Args:
        keys: volumes to slice; they must have the same size along the drawn axis (for instance
            ``high_res`` and an in-plane-only ``low_res`` along the through-plane axis).
        axes: axes to choose from, e.g. ``(2,)`` for axial slices or ``(0, 1, 2)`` for all three.

    Shapes: ``(1, I, J, K) -> (1, H, W)``; the slice keeps its world position in its affine.

    Example:
        >>> item = RandSliced(keys=("high_res",), axes=(2,))({"high_res": torch.rand(1, 8, 8, 4)})
    """

    def __init__(self, keys: Sequence[Hashable] = ("high_res",), axes: Sequence[int] = (2,)) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if not axes or any(a not in (0, 1, 2) for a in axes):
            raise ConfigError(f"slice axes: must be among 0, 1, 2, got {list(axes)}")
        self.axes = tuple(axes)
        self.axis, self.position = self.axes[0], 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.axis = int(self.axes[self.R.randint(len(self.axes))])
        self.position = float(self.R.uniform(0.0, 1.0))

    def __call__(self, data, randomize: bool = True):
        item = dict(data)
        if randomize:
            self.randomize()
        sizes = {int(item[key].shape[1 + self.axis]) for key in self.key_iterator(item)}
        if len(sizes) > 1:
            raise InputError(f"keys differ in size along slice axis {self.axis}: {sorted(sizes)}")
        for key in self.key_iterator(item):
            size = item[key].shape[1 + self.axis]
            item[key] = extract_slice(item[key], self.axis, min(int(self.position * size), size - 1))
        return item


class RandAlignedPatchd(RandomizableTransform, MapTransform):
    """Crop aligned patches: LR ``patch_size`` at ``p``, HR ``scale * patch_size`` at ``scale * p``.

    Args:
        high_res_key: key of the HR image ``(C, *spatial)``.
        low_res_key: key of the LR image, or ``None`` to crop HR patches only (for on-device
            degradation with :class:`~srgan_med.degrade.batch.BatchDegradation`).
        scale: integer factor between the grids (all spatial axes).
        low_res_patch_size: LR patch size per spatial axis.
        foreground_threshold: a HR voxel is foreground when its (normalised) value exceeds this.
        min_foreground_fraction: patches with less foreground are skipped.
        max_tries: positions tried before taking the one with the most foreground.

    Example:
        >>> crop = RandAlignedPatchd(scale=2, low_res_patch_size=(4, 4)).set_random_state(0)
        >>> item = crop({"high_res": torch.rand(1, 16, 16), "low_res": torch.rand(1, 8, 8)})
        >>> tuple(item["high_res"].shape), tuple(item["low_res"].shape)
        ((1, 8, 8), (1, 4, 4))
    """

    def __init__(
        self,
        high_res_key: Hashable = "high_res",
        low_res_key: Hashable | None = "low_res",
        scale: int = 4,
        low_res_patch_size: Sequence[int] = (24, 24),
        foreground_threshold: float = 0.05,
        min_foreground_fraction: float = 0.1,
        max_tries: int = 10,
    ) -> None:
        keys = [high_res_key] + ([low_res_key] if low_res_key is not None else [])
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if int(scale) != scale or scale < 1:
            raise ConfigError(f"scale: must be a positive integer, got {scale!r}")
        if not 0.0 <= min_foreground_fraction <= 1.0:
            raise ConfigError(f"min_foreground_fraction: must lie in [0, 1], got {min_foreground_fraction}")
        self.high_res_key, self.low_res_key = high_res_key, low_res_key
        self.scale = int(scale)
        self.patch = tuple(int(p) for p in low_res_patch_size)
        self.foreground_threshold = foreground_threshold
        self.min_foreground_fraction = min_foreground_fraction
        self.max_tries = max(1, int(max_tries))

    def _crop(self, image: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        raw = image.as_tensor() if hasattr(image, "as_tensor") else image
        region = raw[(slice(None), *[slice(s, s + n) for s, n in zip(start, size, strict=True)])].contiguous()
        affine = None
        if hasattr(image, "affine"):
            shift = torch.eye(4, dtype=torch.float64)
            shift[: len(start), 3] = torch.tensor(start, dtype=torch.float64)
            affine = image.affine.to(torch.float64) @ shift
        return with_array(image, region, affine)

    def __call__(self, data):
        item = dict(data)
        high_res = item[self.high_res_key]
        spatial = high_res.shape[1:]
        if len(self.patch) != len(spatial):
            raise ConfigError(f"low_res_patch_size: need {len(spatial)} sizes, got {list(self.patch)}")
        grid = [n // self.scale for n in spatial]
        if self.low_res_key is not None:
            grid = [min(g, n) for g, n in zip(grid, item[self.low_res_key].shape[1:], strict=True)]
        if any(p > g for p, g in zip(self.patch, grid, strict=True)):
            raise InputError(f"patch {list(self.patch)} does not fit the low-res grid {grid}")
        best, best_fraction = None, -1.0
        for _ in range(self.max_tries):
            start = [int(self.R.randint(0, g - p + 1)) for g, p in zip(grid, self.patch, strict=True)]
            hr_start = [s * self.scale for s in start]
            hr_size = [p * self.scale for p in self.patch]
            region = high_res[
                (slice(None), *[slice(s, s + n) for s, n in zip(hr_start, hr_size, strict=True)])
            ]
            fraction = float((region > self.foreground_threshold).float().mean())
            if fraction > best_fraction:
                best, best_fraction = start, fraction
            if fraction >= self.min_foreground_fraction:
                break
        self.start = best
        item[self.high_res_key] = self._crop(
            high_res, [s * self.scale for s in best], [p * self.scale for p in self.patch]
        )
        if self.low_res_key is not None:
            item[self.low_res_key] = self._crop(item[self.low_res_key], best, self.patch)
        return item
