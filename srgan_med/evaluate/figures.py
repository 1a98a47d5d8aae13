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
    return int(PANEL_INCHES * (method_count + 1) * DPI), int(PANEL_INCHES * 2 * DPI)


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


def plot_montage(result: CaseResult, high_res: np.ndarray, path: Path) -> Path:
    """HR | each method (top row) and absolute error maps (bottom row) of the middle slice, with insets.

    Args:
        result: the evaluated case (reconstructions in slice-last layout).
        high_res: ``(H, W, N)`` reference in slice-last layout.
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    methods = list(result.reconstructions)
    if result.mask is not None and result.mask.any():
        slices = np.flatnonzero(result.mask.any(axis=(0, 1)))
        k = int(slices[len(slices) // 2])
    else:
        k = high_res.shape[-1] // 2
    reference = high_res[..., k]
    mask_slice = None if result.mask is None else result.mask[..., k]
    low, high = np.percentile(reference, (1, 99))
    units = "HU" if result.modality == "CT" else "(scanner units)"
    error_max = 0.05 * result.data_range
    row, column, size = _zoom_box(mask_slice, reference.shape)
    width, height = montage_size(len(methods))
    figure, axes = plt.subplots(
        2, len(methods) + 1, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False
    )
    panels = [("HR (reference)", reference)] + [(m, result.reconstructions[m][..., k]) for m in methods]
    for index, (title, image) in enumerate(panels):
        axis = axes[0, index]
        axis.imshow(image.T, cmap="gray", vmin=low, vmax=high, origin="lower")
        axis.add_patch(Rectangle((row, column), size, size, fill=False, edgecolor="yellow", linewidth=1))
        inset = axis.inset_axes([0.6, 0.6, 0.4, 0.4])
        inset.imshow(
            image[row : row + size, column : column + size].T,
            cmap="gray",
            vmin=low,
            vmax=high,
            origin="lower",
        )
        inset.set_xticks([])
        inset.set_yticks([])
        axis.set_title(title, fontsize=9)
        error_axis = axes[1, index]
        if index == 0:
            error_axis.axis("off")
            error_axis.text(
                0.5,
                0.5,
                f"{result.name}\nslice {k}\n"
                f"grey: {low:.4g}..{high:.4g} {units}\n(1st-99th percentile of HR)\n"
                f"|error|: 0..{error_max:.3g} {units}\n(5% of the data range)",
                ha="center",
                va="center",
                fontsize=9,
                transform=error_axis.transAxes,
            )
        else:
            error_axis.imshow(
                np.abs(image - reference).T, cmap="magma", vmin=0, vmax=error_max, origin="lower"
            )
            error_axis.set_title(f"|{title} - HR|", fontsize=9)
        for axis_ in (axis, error_axis):
            axis_.set_xticks([])
            axis_.set_yticks([])
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
    axis.set_ylabel(f"PSNR gain over {baseline} (dB, per slice)")
    axis.set_title("Gain over bicubic")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
