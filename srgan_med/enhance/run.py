"""``enhance`` end to end: resolve inputs and outputs, load the model once, upscale, write, report."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srgan_med.errors import CompileError, InputError, SrganMedError

logger = logging.getLogger(__name__)

# On CPU, memory is plentiful but compute is scarce: tiling only re-computes halos (a 512x512 slice in
# 256-pixel tiles with a 42-pixel halo costs ~1.35x), so slices up to 1024x1024 run whole, and the
# batch is capped instead (2 slices of 512x512 per pass: a few hundred MB of activations at x2).
CPU_TILE = 1024
CPU_PIXELS_PER_PASS = 2 * 512 * 512
GPU_TILE = 256
CPU_BATCH = 8
CUDA_BATCH = 32  # x4 at 128x128 in: 32 slices of 512x512 out per pass (OOM halves it)
# cuDNN times its algorithms for each new convolution shape and keeps the fastest: every batch but
# the last has the same shape. Whether that first-call cost pays off within one command is what
# enhance_speed.py's two fresh-command rows measure (with and without); not yet timed on a GPU.
CUDNN_BENCHMARK = True


def report_path(output: Path) -> Path:
    """Where ``enhance`` writes the JSON report of ``output``: beside it, ``<output>.json``."""
    return output.with_name(output.name + ".json")


def expand_inputs(inputs: Sequence[str] | str | Path, series: str | None = None) -> list[Path]:
    """Each input as given, except that a folder stands for the scans it holds: its NIfTI files, or
    its subfolders when each holds its own DICOM series (a study exported series by series). A folder
    holding one series, or any with ``series`` given, stays one input."""
    from srgan_med.examples import resolve_input
    from srgan_med.io.nifti import is_nifti_path

    if isinstance(inputs, (str, Path)):  # one path: its characters were taken as inputs ("/" first)
        inputs = [inputs]
    paths: list[Path] = []
    for text in inputs:
        path = resolve_input(text)
        if path.is_dir():
            niftis = sorted(p for p in path.iterdir() if p.is_file() and is_nifti_path(p))
            paths.extend(niftis or (series_folders(path) if series is None else []) or [path])
        else:
            paths.append(path)
    if not paths:
        raise InputError("no inputs given")
    return paths


def series_folders(folder: Path) -> list[Path]:
    """The subfolders of ``folder`` that hold its DICOM series, when it has several series, none of
    its images lies in ``folder`` itself, and no series spans two subfolders; else ``[]``."""
    from srgan_med.io.dicom_read import find_series

    found = find_series(folder)
    if len(found) < 2:
        return []
    holders = set()
    for info in found:
        tops = {folder / file.relative_to(folder).parts[0] for file in info.files}
        if len(tops) != 1 or next(iter(tops)).is_file():
            return []  # a series spread over subfolders, or one whose images lie in the folder itself
        holders |= tops
    return sorted(holders)


def default_output(source: Path, source_format: str, fmt: str | None) -> Path:
    """``scan.nii.gz`` -> ``scan_sr.nii.gz``, ``scan.nii`` -> ``scan_sr.nii`` (compression kept:
    SPM, for one, reads only uncompressed files); a DICOM file or series folder -> folder
    ``<name>_sr`` (or ``<name>_sr.nii.gz`` with ``--format nifti``)."""
    fmt = fmt or source_format
    if not source.name:  # "." or "..": the folder's own name (the current folder's series)
        source = source.resolve()
        if not source.name:
            raise InputError(f"{source}: the root folder has no name to derive an output from; give -o")
    name = source.name
    extension = ".nii.gz"
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".ima", ".dic"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            extension = ".nii" if suffix == ".nii" and source_format == "nifti" else extension
            break
    return source.with_name(f"{name}_sr{extension}" if fmt == "nifti" else f"{name}_sr")


def planned_outputs(
    sources: Sequence[Path], output: Path | None, fmt: str | None, into: bool = False
) -> list[tuple[Path, str]]:
    """Each input's output and its format, known before any input is read; two inputs writing one
    output is an error.

    A name the user gave says its format (``.nii``/``.nii.gz``, or a folder name without a suffix)
    unless ``fmt`` does; a derived name has the input's format (as :func:`srgan_med.io.load_scan`
    decides it from the path), so ``MR_small.IMA`` or a series folder named by its UID
    (``1.2.840.113619.2.55``) get the DICOM folder ``<name>_sr``. ``into`` (``-o out/``, the name
    ending in a slash): ``output`` is the folder the outputs go into, even for one input."""
    from srgan_med.io.nifti import is_nifti_path
    from srgan_med.io.scan import output_format

    if output is not None and len(sources) > 1 and output.exists() and not output.is_dir():
        raise InputError(f"{output}: several inputs need an output folder, not a file")
    targets: list[tuple[Path, str]] = []
    planned: dict[Path, Path] = {}  # resolved output -> the input writing it
    for source in sources:
        source_format = "nifti" if source.is_file() and is_nifti_path(source) else "dicom"
        target = default_output(source, source_format, fmt)
        # A NIfTI output is never a folder: an existing folder given for it is where it goes, as
        # several inputs' outputs do. (A DICOM output is a folder: the name is the series' own.)
        into_folder = output is not None and (into or (output.is_dir() and (fmt or source_format) == "nifti"))
        named = output is not None and not (len(sources) > 1 or into_folder)
        if output is not None:
            target = output if named else output / target.name
        # a name that does not fit the format: refused before the work
        target_format = output_format(target, fmt if named else fmt or source_format)
        other = planned.setdefault(target.resolve(), source)
        if other is not source:
            raise InputError(f"{other} and {source} would both be written to {target}; give them apart")
        targets.append((target, target_format))
    return targets


def _bound(value: float) -> float | None:
    """A clamp bound for JSON: ``None`` where there is none (infinite)."""
    return value if abs(value) != float("inf") else None


def _json_number(value: float) -> float | str:
    """Plain JSON has no infinity: a perfect consistency is written as the string "inf"."""
    return value if value == value and abs(value) != float("inf") else str(value)


def percent(fraction: float) -> str:
    """A fraction as a short percentage, never in exponent notation (``:.2g`` printed 100% as
    ``1e+02%``).

    Example:
        >>> [percent(f) for f in (1.0, 0.456, 0.0123, 0.00012, 1e-7)]
        ['100%', '46%', '1.2%', '0.012%', '<0.001%']
    """
    value = 100 * fraction
    if value >= 10:
        return f"{value:.0f}%"
    if value >= 0.001:
        return f"{value:.2g}%"
    return "<0.001%"


def _ran_as(precision: str, device) -> str:
    """The precision as it ran: TF32 exists on CUDA only, so ``tf32`` elsewhere is IEEE fp32."""
    return "fp32" if precision == "tf32" and device.type != "cuda" else precision


def derived_description(meta: dict[str, Any], suffix: str, fmt: str) -> str:
    """The input's description (DICOM SeriesDescription or NIfTI descrip) with ``suffix``, cut to fit
    the output's field (DICOM LO: 64 characters; NIfTI descrip: 79 bytes) so the suffix always shows."""
    from srgan_med.io.nifti import header_fields

    descrip = header_fields(meta.get("nifti_header")).get("descrip")
    source = str(meta.get("series_description") or descrip or "").strip()
    room = (64 if fmt == "dicom" else 79) - len(suffix) - 1
    return f"{source[:room].rstrip()} {suffix}".strip()


# ``--slice-spacing`` interpolates between the model's slices; past this many per model slice it is
# a typo (1e-9 for 1e-3?) that would build an output of billions of slices after the whole inference.
MAX_SLICES_PER_MODEL_SLICE = 8


def _check_slice_spacing(source: Path, scan, slice_axis: int, scale: int, spacing_mm: float) -> None:
    """``--slice-spacing`` must be finer than the input's slices, and not more than
    :data:`MAX_SLICES_PER_MODEL_SLICE` times finer than the model's; finer than the model's is said.
    Spacings are between slice planes (:func:`~srgan_med.io.geometry.plane_spacing`), as DICOM's
    SpacingBetweenSlices is, also on a gantry-tilted grid."""
    from srgan_med.io.geometry import plane_spacing

    current = plane_spacing(scan.affine, slice_axis)
    if spacing_mm >= current * (1 - 1e-6):
        raise InputError(
            f"{source}: --slice-spacing {spacing_mm:g} mm is not finer than its {current:g} mm slices"
        )
    finest = current / scale / MAX_SLICES_PER_MODEL_SLICE
    if spacing_mm < finest * (1 - 1e-6):
        raise InputError(
            f"{source}: --slice-spacing {spacing_mm:g} mm would interpolate more than "
            f"{MAX_SLICES_PER_MODEL_SLICE} slices per slice of the model's x{scale} "
            f"({current / scale:g} mm); give {finest:g} mm or more"
        )
    if spacing_mm < current / scale * (1 - 1e-6):
        logger.warning(
            "%s: --slice-spacing %g mm is finer than x%d makes of %g mm slices (%g mm): the slices in "
            "between are interpolated from the model's, not super-resolved",
            source,
            spacing_mm,
            scale,
            current,
            current / scale,
        )


def _check_refined_axis(source: Path, scan, slice_axis: int, plane: str) -> None:
    """``--through-plane`` with a named ``--plane`` refines that plane's normal, which may be an axis
    finer than another: said, as the thick axis is what through-plane work is for."""
    from srgan_med.io.geometry import coarser_axis, spacing_from_affine

    coarsest = coarser_axis(scan.affine, slice_axis)
    if coarsest is not None:
        spacing = spacing_from_affine(scan.affine)
        logger.warning(
            "%s: --through-plane --plane %s refines voxel axis %d (%g mm), finer than axis %d (%g mm)",
            source,
            plane,
            slice_axis,
            spacing[slice_axis],
            coarsest,
            spacing[coarsest],
        )


def pick_device(device: str):
    """``--device``: ``auto``, ``cpu`` or ``cuda``, made a ``torch.device`` by
    :func:`~srgan_med.models.bundle.as_device`, in the option's own words."""
    from srgan_med.models.bundle import as_device

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return as_device(device, said=f"--device {device}")


def engine_settings(device) -> dict[str, Any]:
    """Tiling and batch cap that :func:`enhance_files` gives the engine on ``device`` (a
    ``torch.device``); the benchmarks use the same."""
    if device.type == "cpu":
        return {"tile": CPU_TILE, "max_pixels_per_pass": CPU_PIXELS_PER_PASS}
    return {"tile": GPU_TILE, "max_pixels_per_pass": None}


@dataclass
class PreparedModel:
    """A model made ready as ``enhance`` runs it, on ``device``: its bundle, the generator to run
    (:func:`~srgan_med.enhance.inference.prepare_for_inference`, compiled on request) and the halo
    that tiling needs. ``evaluate`` runs its models through the same piece."""

    bundle: Any
    generator: Any
    halo: int
    device: Any

    @classmethod
    def load(
        cls, name: str, device, *, precision: str | None = None, compile_model: bool = False
    ) -> PreparedModel:
        """Load ``name`` (shipped model or ``.safetensors`` path); ``precision`` ``None``: the device's."""
        from srgan_med.enhance.inference import CompiledGenerator, prepare_for_inference
        from srgan_med.enhance.tiling import receptive_field_radius
        from srgan_med.models.bundle import as_device, load_bundle

        device = as_device(device)  # "cpu" as text too (it failed later, in engine_settings)
        bundle = load_bundle(name, device=device)
        # Same function, faster (folded batch norm, layout); precision as asked or the device's.
        generator = prepare_for_inference(bundle.generator, device, precision=precision)
        if compile_model:
            generator = CompiledGenerator(generator)
        return cls(bundle, generator, receptive_field_radius(bundle.generator), device)

    def upscale(self, scan, slice_axis: int, *, through_plane: bool = False, clip: bool = True, **options):
        """``scan`` ``(1, I, J, K)`` upscaled in the model's intensity preset, with the device's tiling
        and batch cap (:func:`engine_settings`); ``clip``: output values clamped to
        :func:`clamp_range`; ``options``: ``batch_size``, ``progress``."""
        from srgan_med.enhance.engine import enhance_through_plane, enhance_volume

        normalise, denormalise = self.bundle.intensity_maps(scan[0])
        run = enhance_through_plane if through_plane else enhance_volume
        return run(
            scan,
            self.generator,
            self.bundle.scale,
            normalise=normalise,
            denormalise=denormalise,
            slice_axis=slice_axis,
            device=self.device,
            halo=self.halo,
            value_range=clamp_range(scan) if clip else None,
            **engine_settings(self.device),
            **options,
        )


def clamp_range(scan) -> tuple[float, float]:
    """The range ``enhance`` clamps its output to: from the input's minimum up to the largest value
    the input's stored type holds (255 for a uint8 scan; no upper bound for a float one).

    Below the input's minimum is overshoot of the network (or of an interpolator's kernel) into the
    background, not recovered detail: MR magnitudes below zero, CT below the scanner's air floor.
    The shipped MR models put 3-10% of voxels there on the public MR scans. Above the input's
    maximum is different: blur lowers small bright peaks (bone, contrast), so a faithful upscaling
    can exceed the low-res maximum; clamping there cost up to 0.23 dB of PSNR on two-slice CT crops
    (benchmarks/clip_effect.py), so the ceiling is only the stored type's, which no value of the
    original acquisition could pass either. Measured on the public scans in
    docs/results/cpu-2026-12-06-clip/clip_effect.md.
    """
    import numpy as np

    values = scan.as_tensor() if hasattr(scan, "as_tensor") else scan
    stored = str(getattr(scan, "meta", {}).get("original_dtype", "float32"))
    ceiling = float(np.iinfo(stored).max) if np.dtype(stored).kind in "iu" else float("inf")
    return float(values.min()), ceiling


def enhance_files(
    inputs: Sequence[str],
    *,
    output: Path | str | None = None,
    model: str,
    scale: int | None = None,
    plane: str = "auto",
    through_plane: bool = False,
    slice_spacing: float | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    compile_model: bool = False,
    fmt: str | None = None,
    series: str | None = None,
    modality: str | None = None,
    clip: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Upscale every input with one model load; returns the written outputs.

    ``model="auto"`` picks the shipped model for each input's modality and ``scale`` (x2 by
    default): ``ct-x2``, ``ct-x4``, ``mr-x2``, ``mr-x4``. Each output gets a JSON report beside it
    (``<output>.json``): model, scale, device, seconds (in all, and to load, upscale and write),
    and the consistency PSNR of the block-averaged output against the input. ``compile_model`` runs
    the generator through ``torch.compile`` (:class:`~srgan_med.enhance.inference.CompiledGenerator`).
    ``series`` picks a SeriesInstanceUID in the one input folder that holds several.
    ``modality`` (``"CT"``/``"MR"``) overrides the one guessed for NIfTI input.
    ``slice_spacing`` (with ``through_plane``): the output's slice spacing in mm, finer than the
    input's; the model's output (the input's spacing divided by the scale) is resampled linearly
    along the slice axis to it (:func:`~srgan_med.enhance.engine.resample_slice_axis`).
    ``clip``: the output is clamped from the input's minimum up to its stored type's maximum
    (:func:`clamp_range`); the report gives the bounds (``null``: none), the fraction of values
    clamped (by any amount) and the farthest one lay outside.
    """
    import monai.data  # noqa: F401 - imported before any timing: ~2 s once, not the first load's cost
    import torch
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from srgan_med import __version__
    from srgan_med.enhance.engine import plane_of_axis, resample_slice_axis, slice_axis_for
    from srgan_med.enhance.inference import PRECISIONS, compile_problem
    from srgan_med.io import load_scan, save_scan, scratch, spacing_from_affine
    from srgan_med.io.atomic import atomic_output, check_output, remove_output
    from srgan_med.io.dicom_write import check_dicom_grid
    from srgan_med.io.geometry import plane_spacing
    from srgan_med.models.bundle import default_model
    from srgan_med.progress import progress_bar

    if precision != "auto" and precision not in PRECISIONS:
        raise InputError(f"--precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
    if slice_spacing is not None and not through_plane:
        raise InputError("--slice-spacing sets the slice spacing of --through-plane; add --through-plane")
    if slice_spacing is not None and not (np.isfinite(slice_spacing) and slice_spacing > 0):
        raise InputError(f"--slice-spacing must be a positive number of mm, got {slice_spacing}")
    sources = expand_inputs(inputs, series)
    if series is not None and len(sources) > 1:
        raise InputError(f"--series picks a series of one folder; got {len(sources)} inputs")
    # "-o out/": the folder the outputs go into, as for several inputs (a Path drops the slash)
    into = isinstance(output, str) and output.endswith(("/", os.sep))
    output = Path(output) if output is not None else None
    targets = planned_outputs(sources, output, fmt, into=into)
    for target, _ in targets:  # before any work: a clash found at the third input would leave two written
        check_output(target, overwrite=overwrite, inputs=sources)
        check_output(report_path(target), overwrite=overwrite, inputs=sources)  # the report beside it
    torch_device = pick_device(device)
    if compile_model:  # before any input is read: a machine that cannot compile says so at once
        problem = compile_problem(torch_device)
        if problem:
            raise CompileError(f"--compile: torch.compile cannot build kernels here ({problem})")
    if batch_size is None:
        batch_size = CUDA_BATCH if torch_device.type == "cuda" else CPU_BATCH
    engines: dict[str, PreparedModel] = {}

    def engine(name: str) -> PreparedModel:
        """Model ``name`` loaded and prepared once."""
        if name not in engines:
            prepared = PreparedModel.load(
                name,
                torch_device,
                precision=None if precision == "auto" else precision,
                compile_model=compile_model,
            )
            bundle = prepared.bundle
            if scale is not None and scale != bundle.scale:
                raise InputError(
                    f"model {bundle.name} upscales x{bundle.scale}; --scale {scale} needs a x{scale} model"
                )
            engines[name] = prepared
        return engines[name]

    def model_for(scan) -> str:
        """``--model auto``: the shipped model of each scan's own modality (CT and MR inputs mixed)."""
        return default_model(scan.meta["modality"], scale) if model == "auto" else model

    loaded, load_seconds = {}, {}
    if model == "auto":  # the first scan is read now: a modality with no model stops before any work
        started = time.perf_counter()
        loaded[sources[0]] = load_scan(sources[0], series=series, modality=modality)
        load_seconds[sources[0]] = time.perf_counter() - started
        engine(model_for(loaded[sources[0]]))
    else:
        engine(model)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    written = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} slices"),
        TimeRemainingColumn(),
    )

    def enhance_one(source: Path, target: Path, target_format: str) -> Path:
        started = time.perf_counter()
        scan = loaded.pop(source) if source in loaded else load_scan(source, series=series, modality=modality)
        read = time.perf_counter()
        timings = {"load": load_seconds.pop(source, read - started)}
        prepared = engine(model_for(scan))
        bundle = prepared.bundle
        if scan.meta["modality"] != bundle.modality:
            logger.warning(
                "%s is %s but model %s was trained on %s",
                source,
                scan.meta["modality"],
                bundle.name,
                bundle.modality,
            )
        check_output(target, overwrite=overwrite, inputs=sources)
        if target_format == "dicom":
            check_dicom_grid(scan.affine, source)
        slice_axis = slice_axis_for(scan.affine.numpy(), plane, tuple(scan.shape[1:]))
        if through_plane and int(scan.shape[1 + slice_axis]) == 1:
            raise InputError(
                f"{source}: --through-plane refines the slice axis, but this volume is one slice "
                f"(shape {tuple(int(v) for v in scan.shape[1:])})"
            )
        if slice_spacing is not None:
            _check_slice_spacing(source, scan, slice_axis, bundle.scale, slice_spacing)
        if through_plane and plane != "auto":
            _check_refined_axis(source, scan, slice_axis, plane)
        # outputs larger than the memory budget are built in a file beside the output (io.scratch)
        with scratch.disk_backed(next(p for p in (target.parent, *target.parent.parents) if p.is_dir())):
            with progress_bar(*columns, quiet=quiet) as progress:
                passes = [a for a in range(3) if a != slice_axis] if through_plane else [slice_axis]
                task = progress.add_task(source.name, total=sum(int(scan.shape[1 + a]) for a in passes))
                try:
                    result = prepared.upscale(
                        scan,
                        slice_axis,
                        through_plane=through_plane,
                        clip=clip,
                        batch_size=batch_size,
                        progress=lambda n, t=task: progress.advance(t, n),
                    )
                except SrganMedError as error:  # the engine does not know the file: name it
                    raise type(error)(f"{source}: {error}") from None
            if slice_spacing is not None:
                image = resample_slice_axis(result.image, slice_axis, slice_spacing)
                result = dataclasses.replace(result, image=image)
            upscaled = time.perf_counter()
            timings["upscale"] = upscaled - read
            how = f"x{bundle.scale}" + (" through-plane" if through_plane else "")
            if slice_spacing is not None:
                how += f", resampled to {slice_spacing:g} mm slices"
            derivation = f"srgan-med {__version__} super-resolution {how}, model {bundle.name}"
            placed = False  # the output is in place: taken back if its report cannot follow
            try:
                save_scan(
                    result.image,
                    target,
                    overwrite=overwrite,
                    reference=scan,
                    inputs=[source],
                    fmt=target_format,
                    description=derived_description(scan.meta, f"SR x{bundle.scale}", target_format),
                    derivation=derivation,
                )
                placed = True
                timings["write"] = time.perf_counter() - upscaled
                report: dict[str, Any] = {
                    "input": str(source),
                    "output": str(target),
                    "model": bundle.name,
                    "scale": bundle.scale,
                    "modality": scan.meta["modality"],
                    # NIfTI has no modality tag: guessed from the values unless --modality said it
                    "modality_guessed": bool(scan.meta.get("modality_guessed", False)),
                    "device": str(torch_device),
                    "precision": _ran_as(prepared.generator.precision, torch_device),
                    "compiled": compile_model,
                    "plane": plane,  # as asked; plane_used: what auto chose (or the same)
                    "plane_used": plane_of_axis(scan.affine, slice_axis),
                    "through_plane": through_plane,
                    # in-plane: the axis slices are taken across (kept); through-plane: the one refined
                    "slice_axis": slice_axis,
                    "upscaled_axes": [a for a in range(3) if (a == slice_axis) == through_plane],
                    "batch_size": result.batch_size,
                    "seconds": round(sum(timings.values()), 3),
                    "seconds_by_stage": {stage: round(value, 3) for stage, value in timings.items()},
                    "consistency_psnr_db": _json_number(result.consistency_psnr_db),
                    "clipped_to": [_bound(v) for v in result.value_range] if result.value_range else None,
                    "clipped_fraction": result.clipped_fraction if clip else None,
                    "clipped_most": result.clipped_most if clip else None,
                    "srgan_med_version": __version__,
                    "input_shape": list(scan.shape[1:]),
                    "output_shape": list(result.image.shape[1:]),
                    "input_voxel_mm": [round(v, 6) for v in spacing_from_affine(scan.affine)],
                    "output_voxel_mm": [round(v, 6) for v in spacing_from_affine(result.image.affine)],
                    # between slice planes (DICOM's SpacingBetweenSlices): on a tilted grid shorter
                    # than output_voxel_mm's column length along slice_axis
                    "output_slice_spacing_mm": round(plane_spacing(result.image.affine, slice_axis), 6),
                }
                if slice_spacing is not None:  # the consistency figure is the model's, before resampling
                    report["slice_spacing_mm"] = slice_spacing
                    report["consistency_of"] = "the model's output, before resampling to slice_spacing_mm"
                if scan.meta.get("series_uid"):  # which series of a DICOM input was enhanced
                    report["input_series_uid"] = scan.meta["series_uid"]
                with atomic_output(report_path(target), overwrite=True, inputs=[source]) as temporary:
                    temporary.write_text(json.dumps(report, indent=2, default=str))
            except BaseException:  # Ctrl-C or an error between the two: no output without its report
                if placed:
                    remove_output(target)
                raise
        if not quiet:
            clamped = (
                f", {percent(result.clipped_fraction)} clamped" if clip and result.clipped_fraction else ""
            )
            print(
                f"{source} -> {target} (x{bundle.scale}, {report['seconds']:.1f} s, consistency "
                f"{result.consistency_psnr_db:.1f} dB{clamped})"
            )
        return target

    for source, (target, target_format) in zip(sources, targets, strict=True):
        try:
            written.append(enhance_one(source, target, target_format))
        except (SrganMedError, KeyboardInterrupt) as error:
            if not written:
                raise
            done = ", ".join(str(path) for path in written[:3]) + (", ..." if len(written) > 3 else "")
            done = f"{len(written)} of {len(sources)} written before it: {done}"
            if isinstance(error, KeyboardInterrupt):  # the CLI says it after "interrupted; ..."
                raise KeyboardInterrupt(done) from None
            raise type(error)(f"{error} (stopped there; {done})") from None
    return written
