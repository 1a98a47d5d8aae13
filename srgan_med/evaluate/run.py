"""``evaluate`` end to end: load pairs, reconstruct, score, and write tables and figures atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from srgan_med.errors import InputError, WeightsNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("nearest", "linear", "bicubic", "bspline", "lanczos")


def model_method(name_or_path: str) -> tuple[str, Callable]:
    """A super-resolution model as an evaluation method (CPU, or the GPU when present).

    The model runs as ``enhance`` runs it (the exact rewrites of
    :func:`srgan_med.enhance.inference.prepare_for_inference`, the same tiling), but always in strict
    IEEE float32: no bf16, no TF32, so the scores do not depend on the device's default precision.
    """
    from srgan_med.enhance.run import PreparedModel, pick_device

    prepared = PreparedModel.load(name_or_path, pick_device("auto"), precision="fp32")
    bundle = prepared.bundle

    def reconstruct(low_res, factors: tuple[int, int], slice_axis: int) -> np.ndarray:
        if tuple(factors) != (bundle.scale, bundle.scale):
            raise InputError(f"model {bundle.name} upscales x{bundle.scale}, the pair needs x{factors[0]}")
        # unclamped: evaluate_case clamps every method alike, or none with --no-clip
        return prepared.upscale(low_res, slice_axis, clip=False).image[0].numpy()

    return bundle.name, reconstruct


AUTO_MODEL = "auto"


def resolve_methods(
    names: Sequence[str], models: Sequence[str] = ()
) -> tuple[dict[str, Callable], ShippedModels | None]:
    """Name -> reconstruction function, and the per-volume ``auto`` model if asked for.

    Bicubic is always included (it is the baseline). ``names`` may hold models too (a shipped name,
    a ``.safetensors`` path or ``auto``), as ``models`` does. A model is named by its file's stem
    (``ct-x2``). Two different files with one stem (checkpoints of two runs, say) keep the paths as
    given, so neither row hides the other; one file given twice is scored once. ``auto`` is resolved
    per volume by :func:`run_evaluation`.
    """
    from srgan_med.evaluate.core import interpolation_method
    from srgan_med.interpolate import METHODS
    from srgan_med.models.bundle import resolve_model, shipped_models

    names = [n.strip() for n in names if n.strip()]
    if "bicubic" not in names:
        names.insert(0, "bicubic")
    named_models = [n for n in names if n not in METHODS]
    unknown = [
        n
        for n in named_models
        if n != AUTO_MODEL
        and n not in shipped_models()
        and not n.endswith(".safetensors")
        and not Path(n).is_file()
    ]
    if unknown:
        raise InputError(
            f"unknown method(s) {', '.join(unknown)}; available: {', '.join(METHODS)}, a shipped model "
            f"({', '.join(shipped_models()) or 'none'}), auto, or a .safetensors file"
        )
    models = [*named_models, *models]
    methods = {name: interpolation_method(name) for name in dict.fromkeys(n for n in names if n in METHODS)}
    files: dict[Path, str] = {}  # resolved file -> the model as given (one file given twice: once)
    for model in dict.fromkeys(m for m in models if m != AUTO_MODEL):
        files.setdefault(resolve_model(model).resolve(), model)
    stems = [path.name.removesuffix(".safetensors") for path in files]
    for model, stem in zip(files.values(), stems, strict=True):
        name, method = model_method(model)
        shared = stems.count(stem) > 1 or name in (*methods, AUTO_MODEL)
        methods[model if shared else name] = method
    return methods, ShippedModels() if AUTO_MODEL in models else None


class ShippedModels:
    """``--model auto``: the shipped model of each volume's modality and scale, each loaded once."""

    def __init__(self) -> None:
        self._methods: dict[str, Callable] = {}

    def pick(self, case) -> tuple[str, Callable]:
        from srgan_med.models.bundle import default_model

        try:
            name = default_model(str(case.low_res.meta.get("modality", "MR")), case.factors[0])
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(f"{case.name}: {exc}") from None
        if name not in self._methods:
            self._methods[name] = model_method(name)[1]
        return name, self._methods[name]


def _refuse_duplicates(high_res_paths, low_res_paths) -> None:
    """One scan (or one pair) listed twice counts as two independent volumes: a zero-width 95%
    interval and a p-value 60 times smaller, from one volume. Refused, as said before any work."""
    pairs = [
        (Path(high).resolve(), Path(low).resolve() if low_res_paths is not None else None)
        for high, low in zip(high_res_paths, low_res_paths or [None] * len(high_res_paths), strict=True)
    ]
    for index, pair in enumerate(pairs):
        if pair in pairs[:index]:
            what = "scan" if pair[1] is None else f"pair (with --low-res {low_res_paths[index]})"
            raise InputError(
                f"{high_res_paths[index]}: the same {what} is given twice; one scan scored twice would "
                "count as two volumes in the statistics"
            )


def _one_modality(high_res, low_res, high_path: str, low_path: str) -> None:
    """A registered pair is one modality. NIfTI has no tag: each file's modality is guessed from its
    own values, and averaging can remove the air voxels the CT guess looks for, so a CT reference's
    low-res scan was guessed MR (and ``--model auto`` took the MR model). A guess takes the other
    file's modality; two DICOM tags that differ are refused."""
    high, low = high_res.meta.get("modality"), low_res.meta.get("modality")
    if high == low:
        return
    if low_res.meta.get("modality_guessed"):
        low_res.meta["modality"], low_res.meta["units"] = high, high_res.meta.get("units", "")
    elif high_res.meta.get("modality_guessed"):
        high_res.meta["modality"], high_res.meta["units"] = low, low_res.meta.get("units", "")
    else:
        raise InputError(f"{low_path}: modality {low}, and its reference {high_path} is {high}: not one pair")


def _mask_for(mask: str, case_name: str, high_res, full_shape) -> str | np.ndarray:
    """``auto``/``none``, or the mask file's voxels on the reference's grid.

    The mask must lie on the reference scan's own grid (same shape and affine: another scan's mask,
    or the same mask saved in another orientation, would select other voxels). Where the reference
    was cropped to whole low-res voxels (:func:`synthesise_pair`), the mask is cropped the same way.
    """
    if mask in ("auto", "none"):
        return mask
    from srgan_med.io import load_scan

    scan = load_scan(mask)
    array = scan[0].numpy() > 0
    shape = tuple(high_res.shape[1:])
    if array.shape not in (shape, tuple(full_shape)):
        raise InputError(
            f"{mask}: mask shape {array.shape} differs from {case_name}'s shape {tuple(full_shape)}"
        )
    error_mm = float(np.abs(scan.affine.numpy() - high_res.affine.numpy()).max())
    if error_mm > 1e-2:
        raise InputError(
            f"{mask}: the mask is not on {case_name}'s grid (affines differ by {error_mm:.3g} mm); "
            "resample it onto the scan first"
        )
    array = array[: shape[0], : shape[1], : shape[2]]  # the reference's crop starts at voxel 0
    if not array.any():
        raise InputError(f"{mask}: the mask is empty inside {case_name} (no nonzero voxel)")
    return array


def volume_seed(seed: int, high_res) -> int:
    """The seed of one volume's simulated degradation: ``seed`` mixed with a digest of the volume's
    voxels and grid, so a scan gets the same draws whatever its place in the list of inputs or its
    file name (``seed + position`` gave one scan another PSF and noise level when listed second)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    digest.update(np.ascontiguousarray(high_res.as_tensor().numpy(), dtype=np.float32))  # no bytes copy
    digest.update(np.asarray(high_res.affine, dtype=np.float64).tobytes())
    digest.update(repr(tuple(high_res.shape)).encode())
    mixed = np.random.SeedSequence([int(seed), int.from_bytes(digest.digest(), "little")])
    return int(mixed.generate_state(1)[0])


def synthesise_pair(high_res, degradation: str | None, scale: int, seed: int, name: str):
    """LR scan simulated with a degradation preset; HR cropped to a whole number of LR voxels."""
    from srgan_med.degrade import load_degradation_preset, simulate_low_res
    from srgan_med.evaluate.core import crop_to_pair

    modality = str(high_res.meta.get("modality", "MR"))
    config = load_degradation_preset(degradation or ("ct" if modality == "CT" else "mr"))
    if config.through_plane.slice_thickness_mm:
        raise InputError(
            f"{name}: evaluate compares in-plane super-resolution; the degradation "
            "simulates thick slices: use a preset without through_plane.slice_thickness_mm"
        )
    small = [
        int(high_res.shape[1 + axis])
        for axis in config.in_plane_axes
        if high_res.shape[1 + axis] // scale < 2
    ]
    if small:
        raise InputError(
            f"{name}: --scale {scale} leaves fewer than 2 low-res voxels of its {small[0]} in-plane"
        )
    low_res, _ = simulate_low_res(high_res, config, scale, seed=seed)
    return crop_to_pair(high_res, low_res), low_res


def run_evaluation(
    high_res_paths: Sequence[Path],
    low_res_paths: Sequence[Path] | None,
    out: Path,
    *,
    scale: int = 4,
    degradation: str | None = None,
    seed: int = 0,
    methods: Sequence[str] = DEFAULT_METHODS,
    models: Sequence[str] = (),
    mask: str = "auto",
    modality: str | None = None,
    overwrite: bool = False,
    clip: bool = True,
    command: str = "",
    show_progress: bool = True,
) -> list[Path]:
    """Evaluate registered LR/HR pairs; returns the files written into ``out``.

    Args:
        high_res_paths: reference scans.
        low_res_paths: low-resolution scans, one per reference, on grids that overlay them exactly;
            ``None`` simulates them with the degradation model (``degradation``, ``scale``, ``seed``).
        out: output folder (created atomically; exists -> needs ``overwrite``).
        methods: interpolation methods.
        models: super-resolution models (shipped names or ``.safetensors`` paths); ``"auto"`` adds
            the method ``auto``: for each volume, the shipped model of its modality and scale.
        mask: ``"auto"``, ``"none"`` or a mask scan path (nonzero = foreground).
        modality: ``"CT"``/``"MR"``, overriding the modality guessed for NIfTI scans.
        overwrite: replace an existing ``out``.
        clip: clamp every reconstruction as ``enhance`` clamps its output
            (:func:`~srgan_med.evaluate.core.evaluate_case`).
        command: the command line, recorded in report.md.
        show_progress: draw a progress bar over volumes.
    """
    from srgan_med.evaluate.core import Case, crop_to_pair, evaluate_case, pair_geometry
    from srgan_med.evaluate.display import slice_view
    from srgan_med.evaluate.figures import plot_gain_boxplot, plot_montage
    from srgan_med.evaluate.report import summarise, write_tables
    from srgan_med.io import load_scan
    from srgan_med.io.atomic import atomic_output
    from srgan_med.progress import progress_bar

    if low_res_paths is not None and len(high_res_paths) != len(low_res_paths):
        raise InputError(f"{len(high_res_paths)} high-res inputs but {len(low_res_paths)} low-res inputs")
    if not high_res_paths:
        raise InputError("no input scans")
    chosen, shipped = resolve_methods(methods, models)
    method_names = [*chosen, *([AUTO_MODEL] if shipped else [])]
    results, auto_models = [], {}
    _refuse_duplicates(high_res_paths, low_res_paths)
    # every file read is an input -o must not overwrite: scans, a mask, models given by path
    named = [*high_res_paths, *(low_res_paths or []), *([] if mask in ("auto", "none") else [mask])]
    named += [m for m in (*methods, *models) if m != AUTO_MODEL and Path(m).exists()]
    inputs = [Path(p) for p in named]
    seen_voxels: dict[int, str] = {}
    with atomic_output(Path(out), overwrite=overwrite, inputs=inputs) as temporary:
        temporary.mkdir()
        written = []
        with progress_bar(quiet=not show_progress) as progress:
            task = progress.add_task("evaluating", total=len(high_res_paths))
            for index, high_path in enumerate(high_res_paths):
                name = f"{index:02d}_{Path(high_path).name.split('.')[0]}"
                high_res = load_scan(high_path, modality=modality)
                full_shape = tuple(high_res.shape[1:])
                if low_res_paths is None:
                    drawn = volume_seed(seed, high_res)
                    if drawn in seen_voxels:
                        raise InputError(
                            f"{high_path}: the same voxels and grid as {seen_voxels[drawn]}; one scan "
                            "scored twice would count as two volumes in the statistics"
                        )
                    seen_voxels[drawn] = str(high_path)
                    high_res, low_res = synthesise_pair(high_res, degradation, scale, drawn, name)
                else:
                    low_res = load_scan(low_res_paths[index], modality=modality)
                    _one_modality(high_res, low_res, str(high_path), str(low_res_paths[index]))
                slice_axis, factors = pair_geometry(high_res, low_res, str(high_path))
                high_res = crop_to_pair(high_res, low_res)
                case = Case(name, high_res, low_res, slice_axis, factors)
                case_methods = dict(chosen)
                if shipped is not None:
                    auto_models[name], case_methods[AUTO_MODEL] = shipped.pick(case)
                mask_mode = _mask_for(mask, name, high_res, full_shape)
                result = evaluate_case(case, case_methods, mask_mode, clip=clip)
                if low_res_paths is None:  # the draws of the simulated degradation, for the report
                    result.degradation = low_res.meta.get("degradation")
                results.append(result)
                high = np.moveaxis(high_res[0].numpy().astype(np.float64), slice_axis, -1)
                view = slice_view(high_res.affine.numpy(), slice_axis)  # as radiologists read it
                written.append(plot_montage(result, high, temporary / f"montage_{name}.png", view))
                result.reconstructions.clear()  # keep memory bounded over many volumes
                progress.advance(task)
        summary = summarise(results, method_names)
        if shipped is not None:
            summary["auto_models"] = auto_models
        written += write_tables(results, summary, temporary, command)
        written.append(plot_gain_boxplot(results, method_names, temporary / "psnr_gain_boxplot.png"))
    return [Path(out) / p.name for p in written]
