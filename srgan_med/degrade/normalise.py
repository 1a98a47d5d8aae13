"""Intensity normalisation that inverts exactly: CT windows in HU, MR robust percentiles.

The forward map is MONAI's ``ScaleIntensityRange`` without clipping (clipping would lose the HU outside
the window). What MONAI lacks is the record: the two values mapped to 0 and 1 are stored in
``meta["normalisation"]`` so :func:`denormalise` (used by ``enhance`` and ``degrade``) maps back to HU.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, ScaleIntensityRange

from srgan_med.degrade.config import NormaliseConfig
from srgan_med.errors import InputError


def normalisation_range(image: torch.Tensor, config: NormaliseConfig) -> tuple[float, float]:
    """The intensities mapped to 0 and 1: the HU window, or the robust percentiles of ``image``."""
    if config.kind == "window":
        return float(config.window_hu[0]), float(config.window_hu[1])
    values = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float64).ravel()
    low, high = np.percentile(values, config.percentiles)
    if not high > low:
        high = low + 1.0  # a constant scan: keep the map invertible rather than divide by zero
    return float(low), float(high)


def signal_zero(modality: str | None) -> float:
    """The stored value of no signal: -1000 HU for CT (air: zero attenuation), 0 for the rest (an MR
    magnitude, a PET activity)."""
    return -1000.0 if str(modality or "").upper() == "CT" else 0.0


def magnitude_zero(low: float, high: float, modality: str | None) -> float:
    """Where no signal (:func:`signal_zero`) lies in normalised units: ``(zero - low) / (high - low)``.

    Rician noise and the k-space magnitude are taken about this point. For MR it is where stored 0
    maps, whatever the normalisation: the 0.5th percentile mapped to 0 may lie far above it (a cropped
    scan), and so may a window's low end. Taken about the 0.5th percentile, a crop of MR whose darkest
    tissue lies at 148 came out with its dark voxels 53 brighter on average, never below 149
    (``tests/test_degrade_noise.py``). For CT it is -1000 HU, the low end of the presets' window."""
    if not high > low:
        return 0.0
    return (signal_zero(modality) - float(low)) / (float(high) - float(low))


def image_magnitude_zero(image) -> float:
    """:func:`magnitude_zero` of a normalised image, from its ``meta["normalisation"]`` record and
    its ``meta["modality"]`` (0 without a record: a plain tensor is taken to be a magnitude already)."""
    meta = getattr(image, "meta", None) or {}
    record = meta.get("normalisation")
    if not isinstance(record, Mapping):
        return 0.0
    try:
        return magnitude_zero(float(record["low"]), float(record["high"]), meta.get("modality"))
    except (KeyError, TypeError, ValueError):
        return 0.0


def normalise(image: torch.Tensor, config: NormaliseConfig) -> tuple[torch.Tensor, dict]:
    """Map ``image`` to about ``[0, 1]``; returns the result and the record :func:`denormalise` needs."""
    low, high = normalisation_range(image, config)
    scaled = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=False)(image)
    return scaled, {"kind": config.kind, "low": low, "high": high}


def denormalise(image: torch.Tensor, record: Mapping) -> torch.Tensor:
    """Invert :func:`normalise` with its record (``meta["normalisation"]``): back to HU / scanner units.

    Computed in float64 so a float32 round trip returns the original HU to float tolerance.
    """
    try:
        low, high = float(record["low"]), float(record["high"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"normalisation record must hold 'low' and 'high', got {record!r}") from None
    values = torch.as_tensor(image).to(torch.float64) * (high - low) + low
    return values.to(torch.as_tensor(image).dtype)


class NormaliseIntensityd(MapTransform):
    """Normalise ``keys`` invertibly and record the map in ``meta["normalisation"]``.

    Args:
        keys: keys to normalise. Default ``("high_res",)``.
        config: window (HU) or percentiles.

    Example:
        >>> from monai.data import MetaTensor
        >>> item = NormaliseIntensityd()({"high_res": MetaTensor(torch.full((1, 4, 4, 4), 500.0))})
        >>> item["high_res"].meta["normalisation"]["low"], float(item["high_res"].max())
        (-1000.0, 0.5)
    """

    def __init__(self, keys: Sequence[Hashable] = ("high_res",), config: NormaliseConfig | None = None):
        super().__init__(keys)
        self.config = config if config is not None else NormaliseConfig()

    def __call__(self, data):
        item = dict(data)
        for key in self.key_iterator(item):
            scaled, record = normalise(item[key], self.config)
            if hasattr(scaled, "meta"):
                scaled.meta["normalisation"] = record
            item[key] = scaled
        return item
