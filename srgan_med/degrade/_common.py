"""Small helpers shared by the degradation transforms (meta records, axes, spacing)."""

from __future__ import annotations

from typing import Any

import torch

from srgan_med.degrade.geometry import spacing_mm
from srgan_med.errors import InputError


def in_plane_axes_of(image: torch.Tensor, in_plane_axes: tuple[int, int]) -> tuple[int, int]:
    """The in-plane spatial axes of a ``(C, H, W)`` slice (both) or a ``(C, I, J, K)`` volume."""
    spatial = image.ndim - 1
    if spatial == 2:
        return (0, 1)
    if spatial == 3:
        return in_plane_axes
    raise InputError(f"expected a (C, H, W) slice or a (C, I, J, K) volume, got shape {tuple(image.shape)}")


def spacing_of(image: torch.Tensor) -> tuple[float, float, float]:
    """Voxel spacing in mm from a MetaTensor's affine (1 mm when the tensor carries none)."""
    affine = getattr(image, "affine", None)
    if affine is None or tuple(affine.shape) != (4, 4):
        return (1.0, 1.0, 1.0)
    return spacing_mm(affine)


def record(image: torch.Tensor, step: str, values: dict[str, Any]) -> None:
    """Write one step's parameters into ``image.meta["degradation"][step]`` (MetaTensor only)."""
    meta = getattr(image, "meta", None)
    if meta is None:
        return
    history = dict(meta.get("degradation", {}))
    history[step] = values
    meta["degradation"] = history


def with_array(template: torch.Tensor, array: torch.Tensor, affine=None) -> torch.Tensor:
    """``array`` as a MetaTensor with ``template``'s meta (and a new affine), or plain if no meta."""
    from monai.data import MetaTensor

    if not isinstance(template, MetaTensor):
        return array
    out = MetaTensor(array, meta=dict(template.meta))
    out.affine = template.affine.clone() if affine is None else torch.as_tensor(affine, dtype=torch.float64)
    return out


def uniform(rng, bounds: tuple[float, float]) -> float:
    """One uniform draw in ``[low, high]`` (exactly ``low`` when the range is a single value)."""
    low, high = bounds
    return float(low) if low == high else float(rng.uniform(low, high))
