"""Decoded, normalised training volumes (MONAI-cached), HR patch sampling and validation slices.

Volumes are loaded once through a MONAI ``CacheDataset`` (memory) or ``PersistentDataset`` (disk)
with :class:`srgan_med.io.transforms.LoadScand` and the degradation preset's invertible
normalisation. Patches are then cut from 2-D slices of the cached tensors by a seeded
:class:`PatchSampler`; the degradation runs afterwards on whole batches on the training device
(:class:`srgan_med.degrade.BatchDegradation`). The sampler's generator state *is* the data position,
so a checkpoint that stores it resumes the exact patch stream.
"""

from __future__ import annotations

import dataclasses
import json
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
# Bump when what a disk-cached volume holds changes, so old cache files are not read.
_DISK_CACHE_VERSION = 1


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
    scale: int | None = None,
) -> list[Volume]:
    """Load and normalise ``paths`` through a MONAI cache.

    Args:
        paths: scan paths (see :func:`srgan_med.data.lists.expand_data_list`).
        degradation: the :class:`~srgan_med.degrade.config.DegradationConfig` (its ``normalise``).
        cache: ``"memory"``, ``"disk"`` or ``"none"``.
        cache_dir: folder for the disk cache.
        modality: modality override (NIfTI has none).
        scale: the factor the model will upscale by. With percentile normalisation (MR) each volume
            is then normalised as ``enhance`` will normalise its low-res input: by the percentiles of
            simulated low-res versions of it (:func:`low_res_percentiles`), not of the high-res scan.

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
    if cache not in ("memory", "disk", "none"):  # "ram" ran silently without a cache
        raise ConfigError(f"data.cache: must be one of memory, disk, none, got {cache!r}")
    items = [{"high_res": str(p)} for p in paths]
    if cache == "memory":
        dataset = CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
    elif cache == "disk":
        if cache_dir is None:
            raise ConfigError("data.cache_dir: needed for the disk cache")
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file in the way, no permission: said as the key's problem
            from srgan_med.errors import os_error_reason

            raise ConfigError(
                f"data.cache_dir: cannot use {cache_dir} as a folder: {os_error_reason(error)}"
            ) from None
        # MONAI hashes the item dict only: the key makes a rewritten scan or another normalisation
        # a cache miss. track_meta keeps the MetaTensor (affine, normalisation record) in the file.
        for item, path in zip(items, paths, strict=True):
            item["cache_key"] = _disk_cache_key(Path(path), degradation.normalise, modality)
        dataset = PersistentDataset(items, transform=transform, cache_dir=cache_dir, track_meta=True)
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
        tagged = image.meta.get("modality_tag")
        if modality and tagged in ("CT", "MR") and tagged != modality:
            raise InputError(
                f"{path}: its DICOM Modality is {tagged}, and the scans are loaded as {modality} "
                "(the config's modality); train on scans of one modality"
            )
        record = image.meta["normalisation"]
        data, low, high = (
            image.as_tensor()[0].float().contiguous(),
            float(record["low"]),
            float(record["high"]),
        )
        if scale and degradation.normalise.kind != "window":
            low_res_low, low_res_high = low_res_percentiles(image, degradation, scale)
            # the same voxels on the low-res map: (physical - low') / (high' - low')
            data = ((data * (high - low) + (low - low_res_low)) / (low_res_high - low_res_low)).contiguous()
            low, high = low_res_low, low_res_high
        volumes.append(
            Volume(
                name=Path(path).name,
                data=data,
                spacing_mm=spacing_from_affine(image.affine),
                low=low,
                high=high,
                modality=str(image.meta.get("modality", modality or "")),
            )
        )
    return volumes


LOW_RES_DRAWS = 3  # simulated low-res versions whose percentiles are averaged


def low_res_percentiles(image, degradation, scale: int) -> tuple[float, float]:
    """The normalisation range ``enhance`` would take from a low-res acquisition of ``image``.

    ``enhance`` can only normalise by its low-res input's own percentiles; blur and noise narrow them
    (0.5-99.5 percentiles 15.9-2272 against 0-2654 on mr_head_t2w at x4), so a model trained on the
    high-res scan's range saw darker inputs in training than at inference. Here the range is the
    mean over :data:`LOW_RES_DRAWS` seeded simulations (:func:`srgan_med.degrade.simulate_low_res`).

    Args:
        image: the normalised high-res ``MetaTensor`` (its ``meta["normalisation"]`` record).
        degradation: the degradation model (its ``normalise`` is percentiles).
        scale: the in-plane factor.
    """
    from monai.data import MetaTensor

    from srgan_med.degrade import simulate_low_res
    from srgan_med.degrade.normalise import denormalise, normalisation_range

    physical = MetaTensor(
        denormalise(image.as_tensor(), image.meta["normalisation"]).float(),
        affine=image.affine,
        meta={"modality": image.meta.get("modality", "MR")},
    )
    ranges = [
        normalisation_range(
            simulate_low_res(physical, degradation, scale, seed=seed)[0], degradation.normalise
        )
        for seed in range(LOW_RES_DRAWS)
    ]
    low, high = (float(np.mean(values)) for values in zip(*ranges, strict=True))
    return low, high if high > low else low + 1.0


def _disk_cache_key(path: Path, normalise, modality: str | None) -> str:
    """What a cached volume depends on: the scan's files (size, mtime and their
    :func:`~srgan_med.data.lists.fingerprint`: a file rewritten with its old size and time, as
    ``cp -p`` and ``rsync -a`` do, was served from the cache), the normalisation, the modality."""
    from srgan_med.data.lists import fingerprint

    path = path.resolve()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    stats = []
    for file in files:
        try:
            status, digest = file.stat(), fingerprint(file)
        except OSError:  # vanished or unreadable: the load reports it; the key only has to differ
            continue
        name = str(file.relative_to(path)) if path.is_dir() else file.name
        stats.append([name, status.st_size, status.st_mtime_ns, digest])
    key = {"version": _DISK_CACHE_VERSION, "path": str(path), "files": stats, "modality": modality}
    key["normalise"] = dataclasses.asdict(normalise)
    return json.dumps(key, sort_keys=True, default=str)


def _in_plane(axis: int) -> tuple[int, int]:
    return tuple(a for a in (0, 1, 2) if a != axis)  # type: ignore[return-value]


@dataclass
class PatchBatch:
    """A sampled batch and where each patch was cut.

    Item ``b`` is ``volumes[volume[b]].data.select(axis[b], slice_index[b])`` cropped to
    ``[top[b] : top[b] + P, left[b] : left[b] + P]``.

    Attributes:
        high_res: ``(B, 1, P, P)`` float32, contiguous.
        spacing_mm: ``(B, 2)`` float64, the pixel spacing along the patch's rows and columns.
        volume / axis / slice_index / top / left: ``(B,)`` int64, the patch's origin.
    """

    high_res: torch.Tensor
    spacing_mm: torch.Tensor
    volume: torch.Tensor
    axis: torch.Tensor
    slice_index: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor


class PatchSampler:
    """Seeded sampler of square HR patches from 2-D slices of cached volumes.

    A draw picks a (volume, slice axis) pair with probability proportional to its number of slices,
    a slice, and a crop; background crops are redrawn (see :data:`MIN_PATCH_SPAN`). A batch is drawn
    at once: one random draw for all items, one gather of all patches from a flat buffer holding every
    volume, then redraws for the background items only, in rounds.

    The volumes' voxels are moved into that one float32 buffer and each ``Volume.data`` becomes an
    ``(I, J, K)`` view of it, so the voxels are held once, not twice (the volumes' old tensors are
    freed unless something else holds them). The view is in general not contiguous: each volume is
    stored with its most-sampled slice axis outermost, so that a slice is one block of memory and a
    patch's rows are runs of adjacent voxels (cutting 128x128 patches across the fastest-varying
    axis instead reads one cache line per voxel and is several times slower).

    Args:
        volumes: cached volumes.
        patch_size: side in pixels.
        slice_axes: voxel axes slices are taken across.
        seed: seed of the sampler's own generator.

    Call: ``sample(batch)`` -> ``(high_res (B, 1, P, P) float32, spacing_mm (B, 2) float64)``.

    Example:
        >>> scan = Volume("ct.nii.gz", torch.rand(128, 128, 40), (0.8, 0.8, 2.5), -1000.0, 2000.0, "CT")
        >>> sampler = PatchSampler([scan], patch_size=96, slice_axes=(2,), seed=0)
        >>> high_res, spacing_mm = sampler.sample(64)
        >>> tuple(high_res.shape), spacing_mm[0].tolist()
        ((64, 1, 96, 96), [0.8, 0.8])
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
        self._flat, offsets = _share_one_buffer(volumes, self.candidates)
        self._tables = _candidate_tables(volumes, self.candidates, offsets, self.patch_size)
        side = self.patch_size - 1
        self._windows = [
            self._flat.as_strided(
                (len(self._flat) - side * (row + column), side + 1, side + 1), (1, row, column)
            )
            for row, column in self._tables.pop("window_strides").tolist()
        ]

    def _draw(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` fresh draws: ``(candidate (n,), position (n, 3) = slice, top, left)`` int64."""
        choice = torch.multinomial(self.weights, count, replacement=True, generator=self.generator)
        ranges = self._tables["ranges"][choice]
        uniform = torch.rand(count, 3, dtype=torch.float64, generator=self.generator)
        # floor(u * n) of a float64 u in [0, 1) is uniform over 0..n-1; the clamp only guards rounding.
        position = torch.minimum((uniform * ranges).long(), ranges.long() - 1)
        return choice, position

    def _cut(self, choice: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The ``(n, P, P)`` patches of the draws, gathered from the flat buffer.

        A window is the flat buffer seen as ``(L, P, P)`` with strides ``(1, row, column)``: window
        ``w`` is the patch whose first voxel is flat element ``w``, so one ``index_select`` of the
        patches' first voxels cuts them all. That copies rows of voxels, where a ``(n, P, P)`` index
        of single voxels (``torch.take``) is several times slower. One window per (row, column)
        stride pair: volumes with the same in-plane size share one, so a batch is usually one gather.
        """
        start = self._tables["offset"][choice] + (position * self._tables["strides"][choice]).sum(dim=1)
        if len(self._windows) == 1:
            return torch.index_select(self._windows[0], 0, start)
        window_of = self._tables["window"][choice]
        patches = torch.empty(len(choice), self.patch_size, self.patch_size)
        for window in window_of.unique().tolist():
            items = (window_of == window).nonzero()[:, 0]
            patches.index_copy_(0, items, torch.index_select(self._windows[window], 0, start[items]))
        return patches

    def sample_with_origins(self, batch: int) -> PatchBatch:
        """Draw ``batch`` patches, redrawing background ones, and say where each was cut.

        All items are drawn at once; the background ones (span below :data:`MIN_PATCH_SPAN`) are
        redrawn together, in rounds, until each item has been drawn :data:`PATCH_DRAWS` times; one
        still flat after that keeps its last draw. Every random number comes from the sampler's
        generator in a fixed order, so a state from :meth:`get_state` replays the same batches.
        """
        choice, position = self._draw(batch)
        high_res = self._cut(choice, position)
        pending = torch.arange(batch)
        patches = high_res
        for _redraw in range(PATCH_DRAWS - 1):
            # amax and amin: aminmax over a dimension is ~20x slower on CPU. The span is compared in
            # float64 like the threshold, and a NaN span counts as flat.
            span = patches.amax(dim=(1, 2)) - patches.amin(dim=(1, 2))
            background = ~(span.double() >= MIN_PATCH_SPAN)
            pending = pending[background]
            if not len(pending):
                break
            redrawn, redrawn_position = self._draw(len(pending))
            patches = self._cut(redrawn, redrawn_position)
            choice[pending] = redrawn
            position[pending] = redrawn_position
            high_res[pending] = patches
        tables = self._tables
        return PatchBatch(
            high_res=high_res[:, None].contiguous(),
            spacing_mm=tables["spacing_mm"][choice],
            volume=tables["volume"][choice],
            axis=tables["axis"][choice],
            slice_index=position[:, 0],
            top=position[:, 1],
            left=position[:, 2],
        )

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` patches: ``(high_res (B, 1, P, P) float32, spacing_mm (B, 2) float64)``."""
        drawn = self.sample_with_origins(batch)
        return drawn.high_res, drawn.spacing_mm

    def get_state(self) -> torch.Tensor:
        """The data position: the generator's state (a ``uint8`` tensor)."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def _share_one_buffer(
    volumes: list[Volume], candidates: list[tuple[int, int]]
) -> tuple[torch.Tensor, list[int]]:
    """Copy every volume into one flat float32 buffer and make each ``Volume.data`` a view of it.

    One buffer lets a single gather cut patches from any volume. Copying volume by volume and
    rebinding at once keeps the peak at the buffer plus one volume (when nothing else holds them).
    Each volume's axes are stored by decreasing number of sampled slices (an axis not sampled counts
    none; ties keep voxel order), so the most-sampled slices are contiguous and the fastest-varying
    axis is one that is rarely or never sliced across.
    """
    sampled = set(candidates)
    sizes = [volume.data.numel() for volume in volumes]
    flat = torch.empty(sum(sizes), dtype=torch.float32)
    offsets, start = [], 0
    for index, (volume, size) in enumerate(zip(volumes, sizes, strict=True)):
        shape = volume.data.shape
        order = sorted((0, 1, 2), key=lambda a: -shape[a] if (index, a) in sampled else 0)
        stored = flat[start : start + size].view([shape[a] for a in order])
        stored.copy_(volume.data.permute(order))
        volume.data = stored.permute([order.index(a) for a in (0, 1, 2)])
        offsets.append(start)
        start += size
    return flat, offsets


def _candidate_tables(
    volumes: list[Volume], candidates: list[tuple[int, int]], offsets: list[int], patch_size: int
) -> dict[str, torch.Tensor]:
    """Per (volume, axis) candidate: ranges of slice/top/left, flat-buffer strides, spacing, and
    which gather window (distinct in-plane stride pair, listed in ``window_strides``) it uses."""
    volume_index, axis_index, ranges, strides, spacing = [], [], [], [], []
    for index, axis in candidates:
        volume = volumes[index]
        shape, stride = volume.data.shape, volume.data.stride()
        rows, cols = _in_plane(axis)
        volume_index.append(index)
        axis_index.append(axis)
        ranges.append([shape[axis], shape[rows] - patch_size + 1, shape[cols] - patch_size + 1])
        strides.append([stride[axis], stride[rows], stride[cols]])
        spacing.append([volume.spacing_mm[rows], volume.spacing_mm[cols]])
    window_strides = sorted({(row, col) for _, row, col in strides})
    return {
        "window": torch.tensor([window_strides.index((row, col)) for _, row, col in strides]),
        "window_strides": torch.tensor(window_strides, dtype=torch.int64),
        "volume": torch.tensor(volume_index, dtype=torch.int64),
        "axis": torch.tensor(axis_index, dtype=torch.int64),
        "offset": torch.tensor([offsets[i] for i in volume_index], dtype=torch.int64),
        "ranges": torch.tensor(ranges, dtype=torch.float64),
        "strides": torch.tensor(strides, dtype=torch.int64),
        "spacing_mm": torch.tensor(spacing, dtype=torch.float64),
    }


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
    from srgan_med.degrade.normalise import magnitude_zero
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
    modality = volume.modality or degradation.modality
    zero = magnitude_zero(volume.low, volume.high, modality)  # as the training batches take it
    low_res = degrader(high_res, torch.Generator().manual_seed(seed), zero=[zero] * len(indices))
    try:
        if modality == "CT":  # the window's width: no data needed
            data_range = data_range_for(None, modality, degradation.normalise.window_hu)
        else:
            # MR's robust range of the whole volume, as evaluate takes it (the validation slices'
            # own range moved PSNR by up to 0.3 dB); percentiles commute with the linear map back
            width = volume.high - volume.low
            data_range = data_range_for(volume.data.numpy(), modality) * width
    except InputError as error:  # a constant validation volume: name it
        raise InputError(f"{volume.name}: {error}") from None
    return ValidationSet(volume.name, high_res, low_res, volume.low, volume.high, data_range)
