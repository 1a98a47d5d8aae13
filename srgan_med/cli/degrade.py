"""``srgan-med degrade``: simulate the low-resolution scan a worse acquisition would have produced."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from srgan_med.cli._common import ModalityOption, OverwriteOption, handle_errors
from srgan_med.errors import InputError

if TYPE_CHECKING:  # the config module is light, but keep the CLI import free of the degrade package
    from srgan_med.degrade.config import DegradationConfig

log = logging.getLogger("srgan_med.degrade")


def _with_overrides(
    config: DegradationConfig,
    modality: str,
    fwhm_mm: float | None,
    noise: float | None,
    slice_thickness_mm: float | None,
    slice_gap_mm: float | None,
    psf: str | None = None,
) -> DegradationConfig:
    """The preset with the command-line values fixed (a single value, not a range).

    ``--fwhm-mm`` fixes the PSF family too (Gaussian, or ``--psf box``): the presets draw a family
    per seed, and bicubic's width follows the scale, so the given FWHM would apply only to some seeds.
    """
    import dataclasses

    from srgan_med.errors import ConfigError

    if psf is not None and psf not in PSF_FAMILIES:
        raise ConfigError(f"--psf: must be one of {', '.join(PSF_FAMILIES)}, got {psf!r}")
    for option, value in (("--fwhm-mm", fwhm_mm), ("--noise", noise)):
        if value is not None and not math.isfinite(value):  # else named by the config key it sets
            raise ConfigError(f"{option}: must be a finite number, got {value}")
    if fwhm_mm is not None:
        if fwhm_mm < 0:
            raise ConfigError(f"--fwhm-mm: must not be negative, got {fwhm_mm}")
        if psf in ("bicubic", "none"):
            raise ConfigError(f"--fwhm-mm sets the width of a gaussian or box PSF, not of --psf {psf}")
        profile = psf or "gaussian"
        blur = dataclasses.replace(
            config.blur, profile=profile if fwhm_mm > 0 else "none", fwhm_mm=(fwhm_mm, fwhm_mm)
        )
        config = dataclasses.replace(config, blur=blur)
    elif psf is not None:
        config = dataclasses.replace(config, blur=dataclasses.replace(config.blur, profile=psf))
    if noise is not None:
        if noise < 0:
            raise ConfigError(f"--noise: must not be negative, got {noise}")
        in_hu = config.noise.std_hu is not None or (config.noise.kind == "none" and modality != "MR")
        if not in_hu and noise > 1:
            raise ConfigError(
                f"--noise: this preset's noise is a fraction of the intensity range (its 0.5-99.5 "
                f"percentiles), at most 1; got {noise} (5% is 0.05)"
            )
        kind = (
            config.noise.kind
            if config.noise.kind != "none"
            else ("rician" if modality == "MR" else "gaussian")
        )
        fields = (
            {"std_hu": (noise, noise), "std_relative": None}
            if in_hu
            else {"std_relative": (noise, noise), "std_hu": None}
        )
        config = dataclasses.replace(
            config, noise=dataclasses.replace(config.noise, kind=kind if noise > 0 else "none", **fields)
        )
    if slice_thickness_mm is not None or slice_gap_mm is not None:
        through_plane = dataclasses.replace(
            config.through_plane,
            slice_thickness_mm=slice_thickness_mm
            if slice_thickness_mm is not None
            else config.through_plane.slice_thickness_mm,
            slice_gap_mm=slice_gap_mm if slice_gap_mm is not None else config.through_plane.slice_gap_mm,
        )
        config = dataclasses.replace(config, through_plane=through_plane)
    return dataclasses.replace(config)  # re-validates the combination


def _check_in_plane_axes(input_path: str, scan, in_plane_axes) -> None:
    """Say so when the preset's in-plane axes (voxel axes 0 and 1 by default) are not the scan's: the
    third axis finer than one of them is a sagittal or coronal acquisition stored that way, which
    would get the in-plane blur and downsampling across its slices."""
    from srgan_med.io.geometry import coarser_axis, spacing_from_affine

    (through,) = [axis for axis in range(3) if axis not in in_plane_axes]
    coarsest = coarser_axis(scan.affine, through)  # then an in-plane axis
    if coarsest is not None:
        spacing = spacing_from_affine(scan.affine)
        log.warning(
            "%s: the in-plane axes are voxel axes %d and %d (%s mm), but axis %d (%g mm) is finer than "
            "axis %d: are its slices across axis %d? Set in_plane_axes in a --preset YAML",
            input_path,
            *in_plane_axes,
            " x ".join(f"{spacing[axis]:g}" for axis in in_plane_axes),
            through,
            spacing[through],
            coarsest,
            coarsest,
        )


def write_preview(high_res, low_res, path: Path, in_plane_axes=(0, 1), units: str = "") -> None:
    """A PNG of the middle slice: HR | LR (nearest, on the HR grid) | HR - LR, in physical units,
    drawn as radiologists read it (:func:`~srgan_med.evaluate.display.slice_view`), with the grey
    window and the difference's scale stated. It was a bare 3-panel grey strip in voxel order, one
    pixel per voxel, without labels, its difference clipped to +-1500 HU on CT.

    Args:
        high_res: normalised ``(1, I, J, K)`` HR volume (its ``meta["normalisation"]``).
        low_res: normalised ``(1, i, j, k)`` LR volume, with ``meta["degradation"]``.
        path: the PNG to write.
        units: of the physical values (``HU``), for the labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from srgan_med.degrade.normalise import denormalise
    from srgan_med.evaluate.display import label_edges, slice_view

    through = [a for a in range(3) if a not in in_plane_axes][0]
    record = low_res.meta.get("degradation", {}).get("downsample", {})
    scale = int(record.get("scale", 1))
    lr_index = low_res.shape[1 + through] // 2
    # The HR slice under the LR slice's centre (thick slices are centred inside their slab).
    lr_centre = low_res.affine.numpy() @ np.append(np.eye(3)[through] * lr_index, 1.0)
    hr_index_float = np.linalg.solve(high_res.affine.numpy(), lr_centre)[through]
    hr_index = int(np.clip(round(hr_index_float), 0, high_res.shape[1 + through] - 1))
    physical = {
        name: denormalise(image.as_tensor(), image.meta["normalisation"])[0].double().numpy()
        for name, image in (("hr", high_res), ("lr", low_res))
    }
    hr_plane = np.take(physical["hr"], hr_index, axis=through)
    lr_plane = np.take(physical["lr"], lr_index, axis=through)
    up = np.repeat(np.repeat(lr_plane, scale, axis=0), scale, axis=1)
    pad = [(0, max(0, h - u)) for h, u in zip(hr_plane.shape, up.shape, strict=True)]
    up = np.pad(up, pad, mode="edge")[: hr_plane.shape[0], : hr_plane.shape[1]]
    view = slice_view(high_res.affine.numpy(), through)
    hr_shown, up_shown = view.orient(hr_plane), view.orient(up)
    difference = hr_shown - up_shown
    low, high = np.percentile(hr_shown, (1, 99))
    limit = float(np.percentile(np.abs(difference), 99)) or 1.0
    unit = f" {units}" if units else ""
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 4.0), dpi=100)
    grey = {"cmap": "gray", "vmin": low, "vmax": high, "aspect": view.aspect, "interpolation": "nearest"}
    axes[0].imshow(hr_shown, **grey)
    axes[0].set_title(f"HR, {view.plane} slice {hr_index}", fontsize=9)
    axes[1].imshow(up_shown, **grey)
    axes[1].set_title(f"LR x{scale} (nearest, on the HR grid)", fontsize=9)
    shown = axes[2].imshow(
        difference, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect=view.aspect, interpolation="nearest"
    )
    axes[2].set_title("HR - LR", fontsize=9)
    figure.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.02).set_label(f"HR - LR{unit}", fontsize=8)
    for axis, color in zip(axes, ("yellow", "yellow", "black"), strict=True):  # black on the white map
        label_edges(axis, view, color=color)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(
        f"grey: {low:.4g}..{high:.4g}{unit} (1st-99th percentile of HR); difference: +-{limit:.3g}{unit} "
        "(99th percentile of |HR - LR|)",
        fontsize=9,
    )
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


PSF_FAMILIES = ("gaussian", "box", "bicubic", "none")


@handle_errors
def degrade(
    input_path: Annotated[
        str, typer.Argument(metavar="INPUT", help="High-res scan: NIfTI, DICOM, example:NAME.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Low-res output (.nii/.nii.gz or DICOM folder).")
    ],
    scale: Annotated[
        int, typer.Option("--scale", min=1, help="In-plane downsampling factor (2, 3, 4, 8).")
    ] = 4,
    preset: Annotated[
        str | None, typer.Option("--preset", help="ct, mr or a YAML file; default from the scan's modality.")
    ] = None,
    fwhm_mm: Annotated[
        float | None,
        typer.Option(
            "--fwhm-mm", help="In-plane PSF FWHM in mm (0: no blur); fixes a gaussian PSF (or --psf box)."
        ),
    ] = None,
    psf: Annotated[
        str | None,
        typer.Option(
            "--psf",
            help="In-plane PSF family: gaussian, box, bicubic (anti-aliased resampling) or none; "
            "default: the preset's draw per seed. The MR preset's k-space truncation is applied as well "
            "(set kspace.enabled: false in a --preset YAML to leave it out).",
        ),
    ] = None,
    noise: Annotated[
        float | None,
        typer.Option(
            "--noise",
            help="Noise std in the preset's unit: HU for ct, for mr a fraction (at most 1) of the "
            "intensity range (the 0.5-99.5 percentiles).",
        ),
    ] = None,
    slice_thickness_mm: Annotated[
        float | None, typer.Option("--slice-thickness-mm", help="Simulated slice thickness in mm.")
    ] = None,
    slice_gap_mm: Annotated[
        float | None, typer.Option("--slice-gap-mm", help="Gap between simulated slices (mm).")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            min=0,
            max=2**29 - 1,  # the draws' streams repeat modulo 2**29 (degrade.pipeline._step_state)
            help="Seed of the random draws (same seed, same output), below 2**29.",
        ),
    ] = 0,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Also save a PNG: HR | LR | difference (middle slice).")
    ] = None,
    series: Annotated[
        str | None,
        typer.Option("--series", help="SeriesInstanceUID (or a start of it), when a folder holds several."),
    ] = None,
    modality: ModalityOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Write the low-resolution scan a worse acquisition would have produced (blur, downsampling, thick
    slices, noise), on a voxel-centre-correct grid so it overlays the input in any viewer."""
    from srgan_med.degrade import load_degradation_preset, simulate_low_res
    from srgan_med.degrade.blur import shown_draws
    from srgan_med.examples import resolve_input
    from srgan_med.io import load_scan, save_scan
    from srgan_med.io.atomic import atomic_output, check_output
    from srgan_med.io.dicom_write import check_dicom_grid
    from srgan_med.io.scan import output_format

    if preview is not None:  # before any work, as the scan's output is checked
        if preview.suffix.lower() != ".png":
            raise InputError(f"--preview: {preview}: give the picture a .png name")
        check_output(preview, overwrite=overwrite, inputs=[Path(input_path)])
    check_output(output, overwrite=overwrite, inputs=[Path(input_path)])
    fmt = output_format(output)  # a name of no format: refused before the work
    scan = load_scan(resolve_input(input_path), series=series, modality=modality)
    if fmt == "dicom":
        check_dicom_grid(scan.affine, input_path)
    modality = str(scan.meta.get("modality", "CT")).upper()
    config = load_degradation_preset(preset or ("mr" if modality == "MR" else "ct"))
    config = _with_overrides(config, modality, fwhm_mm, noise, slice_thickness_mm, slice_gap_mm, psf)
    _check_in_plane_axes(input_path, scan, config.in_plane_axes)
    try:
        result, item = simulate_low_res(scan, config, scale, seed=seed)
    except InputError as error:  # the scan does not fit the degradation: name it
        raise InputError(f"{input_path}: {error}") from None
    low_res = item["low_res"]
    for axis in config.in_plane_axes:  # block averaging keeps whole blocks only (the affine agrees)
        dropped = int(scan.shape[1 + axis]) % scale
        if dropped:
            log.info(
                "%s: the last %d voxel(s) along axis %d fill no whole block of %d: left out",
                input_path,
                dropped,
                axis,
                scale,
            )
    inputs = [input_path] if not str(input_path).startswith("example:") else []

    def save() -> Path:
        return save_scan(
            result,
            output,
            overwrite=overwrite,
            reference=scan,
            inputs=inputs,
            description=f"srgan-med degrade x{scale}",
            derivation=f"simulated low resolution x{scale} (srgan-med degrade, seed {seed})",
        )

    if preview is None:
        written = save()
    else:  # both or neither: the preview is renamed into place only once the scan is written
        with atomic_output(preview, overwrite=overwrite, inputs=inputs) as temporary:
            write_preview(
                item["high_res"], low_res, temporary, config.in_plane_axes, scan.meta.get("units", "")
            )
            written = save()
    log.info(
        "wrote %s: %s -> %s, degradation %s, in units normalised by %s",  # relative noise: of that range
        written,
        "x".join(map(str, scan.shape[1:])),
        "x".join(map(str, result.shape[1:])),
        shown_draws(low_res.meta.get("degradation", {})),
        low_res.meta.get("normalisation", {}),
    )
    if preview is not None:
        log.info("wrote preview %s", preview)
