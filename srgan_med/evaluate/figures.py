"""Figures of an evaluation: a montage per volume and a box plot of PSNR gains (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srgan_med.evaluate.core import CaseResult

PANEL_INCHES = 3.0
DPI = 100
BOX_PLOT_INCHES = (8.0, 5.0)


def montage_size(method_count: int) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of a montage with ``method_count`` methods."""
    return int(PANEL_INCHES * (method_count + 1) * DPI), int(PANEL_INCHES * 3 * DPI)


def _zoom_box(mask_slice: np.ndarray | None, shape: tuple[int, int]) -> tuple[int, int, int]:
    """A fixed square region (row, column, size): a quarter of the slice around the mask's centre."""
    size = max(8, min(shape) // 4)
    if mask_slice is not None and mask_slice.any():
        centre = np.argwhere(mask_slice).mean(axis=0)
    else:
        centre = np.array(shape) / 2
    row = int(np.clip(centre[0] - size / 2, 0, shape[0] - size))
    column = int(np.clip(centre[1] - size / 2, 0, shape[1] - size))
    return row, column, size


def error_scale(errors: list[np.ndarray], mask: np.ndarray | None, fallback: float) -> float:
    """The top of the shared |error| colour scale: the 99th percentile of the largest of the methods'
    errors (in the mask where there is one). A fixed 5% of the data range left more than half of an
    MR head's pixels at the top of the scale even for bicubic, so the methods looked alike."""
    if not errors:
        return fallback
    largest = np.max(np.stack(errors), axis=0)
    values = largest[mask] if mask is not None and mask.any() else largest.ravel()
    top = float(np.percentile(values, 99)) if values.size else 0.0
    return top if top > 0 else fallback


def plot_montage(result: CaseResult, high_res: np.ndarray, path: Path, view=None) -> Path:
    """The middle slice of the mask: HR and each method (top row), the zoomed region marked on them
    (middle row) and the absolute error maps on one colour scale (bottom row).

    Args:
        result: the evaluated case (reconstructions in slice-last layout).
        high_res: ``(H, W, N)`` reference in slice-last layout.
        path: PNG to write.
        view: :class:`~srgan_med.evaluate.display.SliceView` of the slices (radiological
            orientation, pixel aspect in mm, the patient's sides); ``None``: voxel order, square pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from srgan_med.evaluate.display import label_edges

    orient = view.orient if view is not None else (lambda image: image)
    aspect = view.aspect if view is not None else 1.0
    methods = list(result.reconstructions)
    if result.mask is not None and result.mask.any():
        slices = np.flatnonzero(result.mask.any(axis=(0, 1)))
        k = int(slices[len(slices) // 2])
    else:
        k = high_res.shape[-1] // 2
    reference = orient(high_res[..., k])
    mask_slice = None if result.mask is None else orient(result.mask[..., k])
    images = {m: orient(result.reconstructions[m][..., k]) for m in methods}
    errors = {m: np.abs(images[m] - reference) for m in methods}
    low, high = np.percentile(reference, (1, 99))
    units = "HU" if result.modality == "CT" else "scanner units"
    error_max = error_scale(list(errors.values()), mask_slice, 0.05 * result.data_range)
    row, column, size = _zoom_box(mask_slice, reference.shape)
    width, height = montage_size(len(methods))
    figure, axes = plt.subplots(
        3, len(methods) + 1, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False
    )
    grey = {"cmap": "gray", "vmin": low, "vmax": high, "aspect": aspect, "interpolation": "nearest"}
    shown = None
    for index, (title, image) in enumerate([("HR (reference)", reference), *images.items()]):
        axis, zoom, error_axis = axes[0, index], axes[1, index], axes[2, index]
        axis.imshow(image, **grey)
        # a box of ``size`` pixels each way: drawn in data units, so (column, row) first
        axis.add_patch(Rectangle((column - 0.5, row - 0.5), size, size, fill=False, edgecolor="yellow"))
        axis.set_title(title, fontsize=9)
        zoom.imshow(image[row : row + size, column : column + size], **grey)
        zoom.set_title(f"{title}, zoomed", fontsize=8)
        if view is not None:
            label_edges(axis, view)
        if index == 0:
            error_axis.axis("off")
            plane = f"{view.plane} " if view is not None else ""
            error_axis.text(
                0.5,
                0.5,
                f"{result.name}\n{plane}slice {k}\n"
                f"grey: {low:.4g}..{high:.4g} {units}\n(1st-99th percentile of HR)\n"
                f"|error|: 0..{error_max:.3g} {units}\n(99th percentile of the largest\nerror"
                f"{' in the mask' if mask_slice is not None and mask_slice.any() else ''})",
                ha="center",
                va="center",
                fontsize=8,
                transform=error_axis.transAxes,
            )
        else:
            shown = error_axis.imshow(
                errors[title], cmap="magma", vmin=0, vmax=error_max, aspect=aspect, interpolation="nearest"
            )
            error_axis.set_title(f"|{title} - HR|", fontsize=9)
        for axis_ in (axis, zoom, error_axis):
            axis_.set_xticks([])
            axis_.set_yticks([])
    if shown is not None:
        bar = figure.colorbar(shown, ax=list(axes[2, 1:]), fraction=0.03, pad=0.01)
        bar.set_label(f"|error| ({units})", fontsize=8)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def plot_gain_boxplot(
    results: list[CaseResult], methods: list[str], path: Path, baseline: str = "bicubic"
) -> Path:
    """Box plot of per-slice PSNR gain over ``baseline`` for every other method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains: dict[str, list[float]] = {m: [] for m in methods if m != baseline}
    for result in results:
        by_key = {(r["method"], r["slice"]): r["psnr"] for r in result.slice_rows}
        for method in gains:
            for (name, k), value in by_key.items():
                base = by_key.get((baseline, k))
                if name == method and base is not None and np.isfinite(value) and np.isfinite(base):
                    gains[method].append(value - base)
    figure, axis = plt.subplots(figsize=BOX_PLOT_INCHES, dpi=DPI)
    names = [m for m in gains if gains[m]]
    if names:
        axis.boxplot([gains[m] for m in names], tick_labels=names)
    axis.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    scored = {r["volume"] for result in results for r in result.slice_rows}
    slices = max((len(gains[m]) for m in names), default=0)
    modalities = "/".join(sorted({result.modality for result in results}))
    region = "in the mask" if any(result.mask is not None for result in results) else "whole slice"
    axis.set_ylabel(f"PSNR gain over {baseline} (dB, per slice, {region})")
    axis.set_title(
        f"{modalities}: per-slice PSNR gain over {baseline}\n"
        f"{slices} slices of {len(scored)} volume(s), pooled (slices of one volume are not independent)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
