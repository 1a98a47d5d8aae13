"""Reconstruct each low-resolution case with each method and score it against the high-resolution scan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from srgan_med import metrics
from srgan_med.errors import InputError

METRIC_NAMES = ("psnr", "ssim", "nrmse", "hfen", "gmsd", "mae")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "nrmse": False, "hfen": False, "gmsd": False, "mae": False}
DEFAULT_CT_WINDOW_HU = (-1000.0, 2000.0)
MR_ROBUST_PERCENTILES = (0.5, 99.5)

# A method maps (low-res MetaTensor (1, I, J, K), in-plane factors, slice axis)
# to the high-res array (I', J', K').
Method = Callable[[Any, tuple[int, int], int], np.ndarray]


@dataclass
class Case:
    """One high-resolution scan and its low-resolution counterpart on an aligned grid."""

    name: str
    high_res: Any  # MetaTensor (1, I, J, K)
    low_res: Any  # MetaTensor (1, I / f, J / f, K) for slice axis 2
    slice_axis: int
    factors: tuple[int, int]


@dataclass
class CaseResult:
    name: str
    modality: str
    data_range: float
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per method x region
    slice_rows: list[dict[str, Any]] = field(default_factory=list)  # one per method x slice
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)
    clipped: dict[str, float] | None = None  # method -> fraction of voxels clamped; None: not clamped
    mask: np.ndarray | None = None
    mask_found: bool = True  # False: the automatic mask found no foreground and is every voxel
    flat_slices: int = 0  # reference slices of one value, left out of the per-slice scores
    degradation: dict[str, Any] | None = None  # the simulated low-res input's draws (PSF, noise)


def pair_geometry(high_res, low_res, name: str) -> tuple[int, tuple[int, int]]:
    """Slice axis and in-plane factors of an LR/HR pair; checks that the grids overlay exactly.

    A high-res size may exceed ``factor x low-res size`` by less than one block (``degrade`` drops
    an incomplete last block, as block averaging does); :func:`crop_to_pair` crops it to the pair.
    """
    from srgan_med.io.geometry import rescaled_affine

    high_shape, low_shape = high_res.shape[1:], low_res.shape[1:]
    steps = [h // s if s else 0 for h, s in zip(high_shape, low_shape, strict=True)]
    whole = all(f >= 1 and 0 <= h - f * s < f for h, s, f in zip(high_shape, low_shape, steps, strict=True))
    if not whole or steps.count(1) < 1:
        raise InputError(
            f"{name}: high-res shape {tuple(high_shape)} is not an integer in-plane multiple of "
            f"low-res shape {tuple(low_shape)}"
        )
    slice_axis = 2 if steps[2] == 1 else steps.index(1)
    factors = [int(f) for axis, f in enumerate(steps) if axis != slice_axis]
    if factors == [1, 1]:
        raise InputError(
            f"{name}: low-res and high-res have one shape, {tuple(high_shape)}; there is nothing to upscale"
        )
    expected = rescaled_affine(low_res.affine, [int(f) for f in steps])
    error_mm = float(np.abs(expected - high_res.affine.numpy()).max())
    if error_mm > 1e-2:
        raise InputError(
            f"{name}: low-res and high-res grids do not overlay (affines differ by {error_mm:.3g} mm); "
            "register or resample them first"
        )
    return slice_axis, (factors[0], factors[1])


def crop_to_pair(high_res, low_res):
    """``high_res`` cropped, from voxel 0 (so its affine holds), to whole multiples of the low-res
    size: block averaging drops an incomplete last block, and so does the reference here."""
    from monai.data import MetaTensor

    size = [int(s) * (int(h) // int(s)) for h, s in zip(high_res.shape[1:], low_res.shape[1:], strict=True)]
    if list(high_res.shape[1:]) == size:
        return high_res
    cropped = high_res.as_tensor()[:, : size[0], : size[1], : size[2]].clone()
    meta = {k: v for k, v in high_res.meta.items() if k != "affine"}
    return MetaTensor(cropped, affine=high_res.affine.clone(), meta=meta)


def data_range_for(high_res: np.ndarray, modality: str, ct_window_hu=DEFAULT_CT_WINDOW_HU) -> float:
    """The explicit data range of PSNR/SSIM: the CT window width in HU, or MR's robust range."""
    if modality == "CT":
        return float(ct_window_hu[1] - ct_window_hu[0])
    low, high = np.percentile(high_res, MR_ROBUST_PERCENTILES)
    if not high > low:
        raise InputError(
            f"the reference has no intensity range (0.5-99.5 percentiles both {low:g}): PSNR and SSIM "
            "are undefined on it"
        )
    return float(high - low)


def _ssim_or_nan(reference: np.ndarray, test: np.ndarray, data_range: float, mask) -> float:
    """SSIM, or NaN for slices smaller than its window (:data:`srgan_med.metrics.SSIM_MIN_SIDE`)
    and for a mask that lies only in the border the window cannot score."""
    if min(reference.shape[:2]) < metrics.SSIM_MIN_SIDE:
        return float("nan")
    try:
        return metrics.ssim(reference, test, data_range, mask)
    except ValueError:  # the shapes were checked before: only the mask's border case is left
        return float("nan")


def _scores(reference: np.ndarray, test: np.ndarray, data_range: float, mask) -> dict[str, float]:
    values = {
        "psnr": metrics.psnr(reference, test, data_range, mask),
        "nrmse": metrics.nrmse(reference, test, mask),
        "mae": metrics.mae(reference, test, mask),
        "gmsd": metrics.gmsd(reference, test, data_range, mask),
    }
    values["ssim"] = _ssim_or_nan(reference, test, data_range, mask)
    try:
        values["hfen"] = metrics.hfen(reference, test, mask)
    except ValueError:  # flat reference region: HFEN is undefined
        values["hfen"] = float("nan")
    return values


def evaluate_case(
    case: Case, methods: dict[str, Method], mask_mode: str | np.ndarray = "auto", *, clip: bool = True
) -> CaseResult:
    """Reconstruct ``case`` with every method and compute all metrics, whole volume and in the mask.

    Args:
        case: the LR/HR pair.
        methods: name -> reconstruction function.
        mask_mode: ``"auto"`` (body/head mask), ``"none"``, or a boolean array of the HR shape.
        clip: clamp every method's reconstruction as ``enhance`` clamps its output, from the
            low-res input's minimum up to its stored type's maximum
            (:func:`srgan_med.enhance.run.clamp_range`); the fraction of voxels
            clamped is kept per method (``CaseResult.clipped``).
    """
    from srgan_med.enhance.run import clamp_range
    from srgan_med.evaluate.mask import foreground_mask

    high = np.moveaxis(case.high_res[0].detach().cpu().numpy().astype(np.float64), case.slice_axis, -1)
    modality = str(case.high_res.meta.get("modality", "MR"))
    try:
        data_range = data_range_for(high, modality)
    except InputError as error:
        raise InputError(f"{case.name}: {error}") from None
    mask_found = True
    if isinstance(mask_mode, np.ndarray):
        mask = np.moveaxis(mask_mode.astype(bool), case.slice_axis, -1)
    elif mask_mode == "auto":
        mask = foreground_mask(high, modality)
        mask_found = bool(mask.any())
        if not mask_found:  # nothing above the threshold: the whole volume is all there is to score
            mask = np.ones(high.shape, bool)  # (so every volume has a mask row; the report says so)
    elif mask_mode == "none":
        mask = None
    else:
        raise InputError(f"unknown mask mode {mask_mode!r}; use auto, none or a mask file")
    result = CaseResult(
        case.name, modality, data_range, mask=mask, clipped={} if clip else None, mask_found=mask_found
    )
    # A reference slice of one value (padding, all air) scores only the round-off of a flat
    # reconstruction (PSNR of 170 dB where the float32 round trip leaves 1e-5 HU): NaN, left out
    # of the per-slice gains and counted, as HFEN leaves out a flat reference.
    flat = []
    for k in range(high.shape[-1]):
        values = high[..., k] if mask is None else high[..., k][mask[..., k]]
        flat.append(values.size > 0 and values.min() == values.max())
    result.flat_slices = int(sum(flat))
    floor, ceiling = clamp_range(case.low_res) if clip else (None, None)
    for method_name, method in methods.items():
        reconstructed = np.asarray(method(case.low_res, case.factors, case.slice_axis), dtype=np.float64)
        reconstructed = np.moveaxis(reconstructed, case.slice_axis, -1)
        if reconstructed.shape != high.shape:
            raise InputError(
                f"method {method_name} returned shape {reconstructed.shape}, expected {high.shape}"
            )
        if result.clipped is not None:
            outside = np.count_nonzero(reconstructed < floor) + np.count_nonzero(reconstructed > ceiling)
            result.clipped[method_name] = outside / reconstructed.size
            np.clip(reconstructed, floor, ceiling, out=reconstructed)
        result.reconstructions[method_name] = reconstructed
        regions = {"whole": None} if mask is None else {"whole": None, "mask": mask}
        for region, region_mask in regions.items():
            row = {"volume": case.name, "method": method_name, "region": region, "data_range": data_range}
            row.update(_scores(high, reconstructed, data_range, region_mask))
            result.rows.append(row)
        for k in range(high.shape[-1]):
            slice_mask = None if mask is None else mask[..., k]
            if slice_mask is not None and not slice_mask.any():
                continue
            row = {"volume": case.name, "method": method_name, "slice": k}
            if flat[k]:
                row["psnr"] = row["ssim"] = float("nan")
            else:
                row["psnr"] = metrics.psnr(high[..., k], reconstructed[..., k], data_range, slice_mask)
                row["ssim"] = _ssim_or_nan(high[..., k], reconstructed[..., k], data_range, slice_mask)
            result.slice_rows.append(row)
    return result


def interpolation_method(name: str) -> Method:
    """A baseline method from :mod:`srgan_med.interpolate`."""
    from srgan_med.interpolate import upscale_volume

    def reconstruct(low_res, factors: tuple[int, int], slice_axis: int) -> np.ndarray:
        return upscale_volume(low_res, factors, name, slice_axis=slice_axis)[0].numpy()

    reconstruct.__name__ = name
    return reconstruct
