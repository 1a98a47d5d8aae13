"""Decoded, normalised training volumes (MONAI-cached), HR patch sampling and validation slices.

Volumes are loaded once through a MONAI ``CacheDataset`` (memory) or ``PersistentDataset`` (disk)
with :class:`srgan_med.io.transforms.LoadScand` and the degradation preset's invertible
normalisation. Patches are then cut from 2-D slices of the cached tensors by a seeded
:class:`PatchSampler`; the degradation runs afterwards on whole batches on the training device
(:class:`srgan_med.degrade.BatchDegradation`). The sampler's generator state *is* the data position,
so a checkpoint that stores it resumes the exact patch stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from srgan_med.errors import ConfigError, InputError, wrapped_user_error

logger = logging.getLogger(__name__)

# A patch whose normalised values span less than this is background (air, empty field of view):
# it teaches nothing, so the sampler draws again (a fixed number of times, to stay deterministic).
MIN_PATCH_SPAN = 0.02
PATCH_DRAWS = 8


@dataclass
class Volume:
    """One cached training scan.

    Attributes:
        name: file name.
        data: ``(I, J, K)`` float32 in model units (normalised with the preset).
        spacing_mm: voxel size along i, j, k.
        low / high: the physical values mapped to 0 and 1 (for going back to HU / scanner units).
        modality: the scan's modality.
    """

    name: str
    data: torch.Tensor
    spacing_mm: tuple[float, float, float]
    low: float
    high: float
    modality: str


def load_volumes(
    paths: list[Path],
    degradation,
    cache: str = "memory",
    cache_dir: Path | None = None,
    modality: str | None = None,
) -> list[Volume]:
    """Load and normalise ``paths`` through a MONAI cache.

    Args:
        paths: scan paths (see :func:`srgan_med.data.lists.expand_data_list`).
        degradation: the :class:`~srgan_med.degrade.config.DegradationConfig` (its ``normalise``).
        cache: ``"memory"``, ``"disk"`` or ``"none"``.
        cache_dir: folder for the disk cache.
        modality: modality override (NIfTI has none).

    Raises:
        InputError: a scan cannot be loaded (the message names it).
    """
    from monai.data import CacheDataset, Dataset, PersistentDataset

    from srgan_med.degrade.normalise import NormaliseIntensityd
    from srgan_med.degrade.pipeline import DegradationPipeline
    from srgan_med.io.geometry import spacing_from_affine
    from srgan_med.io.transforms import LoadScand

    transform = DegradationPipeline(
        [LoadScand(keys="high_res", modality=modality), NormaliseIntensityd(config=degradation.normalise)]
    )
    items = [{"high_res": str(p)} for p in paths]
    if cache == "memory":
        dataset = CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
    elif cache == "disk":
        if cache_dir is None:
            raise ConfigError("data.cache_dir: needed for the disk cache")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        dataset = PersistentDataset(items, transform=transform, cache_dir=cache_dir)
    else:
        dataset = Dataset(items, transform=transform)
    volumes = []
    for index, path in enumerate(paths):
        try:
            image = dataset[index]["high_res"]
        except RuntimeError as error:  # MONAI wraps transform errors; surface ours as one line
            cause = wrapped_user_error(error, InputError)
            if cause is None:
                raise
            raise cause from None
        record = image.meta["normalisation"]
        volumes.append(
            Volume(
                name=Path(path).name,
                data=image.as_tensor()[0].float().contiguous(),
                spacing_mm=spacing_from_affine(image.affine),
                low=float(record["low"]),
                high=float(record["high"]),
                modality=str(image.meta.get("modality", modality or "")),
            )
        )
    return volumes


def _in_plane(axis: int) -> tuple[int, int]:
    return tuple(a for a in (0, 1, 2) if a != axis)  # type: ignore[return-value]


class PatchSampler:
    """Seeded sampler of square HR patches from 2-D slices of cached volumes.

    A draw picks a (volume, slice axis) pair with probability proportional to its number of slices,
    a slice, and a crop; background crops are redrawn (see :data:`MIN_PATCH_SPAN`).

    Args:
        volumes: cached volumes.
        patch_size: side in pixels.
        slice_axes: voxel axes slices are taken across.
        seed: seed of the sampler's own generator.

    Call: ``sample(batch)`` -> ``(high_res (B, 1, P, P) float32, spacing_mm (B, 2) float64)``.
    """

    def __init__(self, volumes: list[Volume], patch_size: int, slice_axes=(2,), seed: int = 0) -> None:
        self.volumes = volumes
        self.patch_size = int(patch_size)
        self.candidates = []
        for index, volume in enumerate(volumes):
            for axis in slice_axes:
                height, width = (volume.data.shape[a] for a in _in_plane(axis))
                if min(height, width) >= self.patch_size:
                    self.candidates.append((index, axis))
                else:
                    logger.warning(
                        "%s: slices across axis %d are %dx%d, smaller than the %d-pixel patch; not used",
                        volume.name,
                        axis,
                        height,
                        width,
                        self.patch_size,
                    )
        if not self.candidates:
            raise ConfigError(
                f"data.patch_size: no training slice is at least {self.patch_size}x{self.patch_size} pixels"
            )
        counts = torch.tensor([float(volumes[i].data.shape[a]) for i, a in self.candidates])
        self.weights = counts / counts.sum()
        self.generator = torch.Generator().manual_seed(int(seed))

    def _draw(self) -> tuple[torch.Tensor, tuple[float, float]]:
        choice = int(torch.multinomial(self.weights, 1, generator=self.generator))
        index, axis = self.candidates[choice]
        volume = self.volumes[index]
        depth = volume.data.shape[axis]
        section = volume.data.select(axis, int(torch.randint(depth, (1,), generator=self.generator)))
        height, width = section.shape
        top = int(torch.randint(height - self.patch_size + 1, (1,), generator=self.generator))
        left = int(torch.randint(width - self.patch_size + 1, (1,), generator=self.generator))
        patch = section[top : top + self.patch_size, left : left + self.patch_size]
        rows, cols = _in_plane(axis)
        return patch, (volume.spacing_mm[rows], volume.spacing_mm[cols])

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        patches, spacings = [], []
        for _ in range(batch):
            for _attempt in range(PATCH_DRAWS):
                patch, spacing = self._draw()
                if float(patch.max() - patch.min()) >= MIN_PATCH_SPAN:
                    break
            patches.append(patch)
            spacings.append(spacing)
        return torch.stack(patches)[:, None].contiguous(), torch.tensor(spacings, dtype=torch.float64)

    def get_state(self) -> torch.Tensor:
        """The data position: the generator's state (a ``uint8`` tensor)."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


@dataclass
class ValidationSet:
    """Fixed LR/HR slices of one held-out volume, in model units.

    Attributes:
        name: file name.
        high_res: ``(N, 1, H, W)``; ``low_res``: ``(N, 1, H / s, W / s)``.
        low / high: physical values of model units 0 and 1; ``data_range``: the metrics' data range.
        bicubic_scores: the bicubic baseline's metrics; fixed inputs, so computed once, at the first
            validation.
    """

    name: str
    high_res: torch.Tensor
    low_res: torch.Tensor
    low: float
    high: float
    data_range: float
    bicubic_scores: dict[str, float] = field(default_factory=dict)

    def to_physical(self, values: torch.Tensor) -> np.ndarray:
        """Model units -> HU / scanner units, ``(N, 1, H, W)`` -> ``(H, W, N)`` float64 for the metrics."""
        array = values.detach().float().cpu().numpy()[:, 0].astype(np.float64)
        return np.moveaxis(array * (self.high - self.low) + self.low, 0, -1)


def validation_set(
    volume: Volume, degradation, scale: int, slices: int, slice_axis: int = 2, seed: int = 0
) -> ValidationSet:
    """Evenly spaced slices of ``volume`` with one fixed degradation draw each (same every time)."""
    from srgan_med.degrade.batch import BatchDegradation
    from srgan_med.evaluate.core import data_range_for

    depth = volume.data.shape[slice_axis]
    indices = sorted({int(round(v)) for v in np.linspace(0, depth - 1, min(slices, depth))})
    rows, cols = _in_plane(slice_axis)
    height = volume.data.shape[rows] // scale * scale
    width = volume.data.shape[cols] // scale * scale
    if min(height, width) < 8 * scale:
        raise InputError(f"{volume.name}: too small to validate at x{scale} ({height}x{width} slices)")
    high_res = torch.stack([volume.data.select(slice_axis, k)[:height, :width] for k in indices])[:, None]
    degrader = BatchDegradation(degradation, scale, (volume.spacing_mm[rows], volume.spacing_mm[cols]))
    low_res = degrader(high_res, torch.Generator().manual_seed(seed))
    physical = high_res.double().numpy() * (volume.high - volume.low) + volume.low
    data_range = data_range_for(
        physical, volume.modality or degradation.modality, degradation.normalise.window_hu
    )
    return ValidationSet(volume.name, high_res, low_res, volume.low, volume.high, data_range)
