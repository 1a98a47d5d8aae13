"""``load_scan`` / ``save_scan``: the one entry point every command uses for scans.

A loaded scan is a MONAI ``MetaTensor`` of shape ``(1, I, J, K)`` (channel first), float32, in
physical units (CT in HU), whose ``affine`` maps voxel centres to RAS+ mm (nibabel's convention).
Its ``meta`` keeps what is needed to write a result back in the input's format:

* ``modality`` (``"CT"``, ``"MR"``, ...), ``modality_guessed`` (True for NIfTI, which has no tag),
* ``units`` (``"HU"`` for CT, ``""`` otherwise), ``original_dtype``,
* ``source_format`` (``"nifti"`` or ``"dicom"``), ``filename_or_obj`` (MONAI's key for the source,
  as given), ``source_path`` (the source resolved to an absolute path),
* ``dicom_reference`` (the source's DICOM JSON header) or ``nifti_header``, both as JSON text (a
  DataLoader batch collates text whatever fields each file has),
* ``real_world_mappings`` (DICOM only, where the source has a linear RealWorldValueMappingSequence
  all frames share): ``[{"slope", "intercept", "item"}]`` mapping the loaded values to real-world
  values, written back rescaled to a DICOM output's stored values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from srgan_med.errors import InputError
from srgan_med.io.atomic import atomic_output
from srgan_med.io.layout import slabs
from srgan_med.io.nifti import NIFTI_SUFFIXES, is_nifti_path, read_nifti, write_nifti

logger = logging.getLogger(__name__)

# Files of other formats, by suffix, named in the error when DICOM reading finds no DICOM in them
# (any other file is tried as DICOM: DICOM files carry any suffix or none).
_OTHER_FORMATS = {
    ".hdr": "an Analyze / NIfTI-pair header (.hdr/.img)",
    ".img": "an Analyze / NIfTI-pair image (.hdr/.img)",
    ".mgz": "a FreeSurfer MGH volume",
    ".mgh": "a FreeSurfer MGH volume",
    ".nrrd": "an NRRD volume",
    ".nhdr": "an NRRD header",
    ".mha": "a MetaImage volume",
    ".mhd": "a MetaImage header",
    ".png": "a PNG picture",
    ".jpg": "a JPEG picture",
    ".jpeg": "a JPEG picture",
    ".tif": "a TIFF picture",
    ".tiff": "a TIFF picture",
    ".npy": "a NumPy array",
    ".par": "a Philips PAR/REC header",
    ".rec": "a Philips PAR/REC image",
    ".mnc": "a MINC volume",
    ".head": "an AFNI header (HEAD/BRIK)",
    ".brik": "an AFNI image (HEAD/BRIK)",
    ".v": "an ECAT volume",
}
# Files that hold no image at all, by suffix: no conversion to offer.
_NOT_IMAGES = {".trk": "TrackVis streamlines", ".tck": "MRtrix streamlines"}
# Below this value a NIfTI volume is taken to be CT in HU (air is -1000 HU; MR magnitudes are >= 0).
_CT_AIR_THRESHOLD_HU = -500.0


MODALITIES = ("CT", "MR")  # the modalities an override may name (the presets' and models')


# Share of voxels at or below -500 HU that makes a NIfTI volume CT: air (outside the body, lung,
# bowel gas). 1% guessed an abdominal CT crop with 0.57% air MR, and enhanced it with an MR model.
# MR magnitudes are not below 0; a signed MR export may hold a few voxels there (nibabel's test
# anatomical.nii: 0.009% at or below -500, an eleventh of this share), a CT of air far more.
_CT_AIR_SHARE = 0.001


def _guess_modality(volume: np.ndarray) -> str:
    """``"CT"`` when the volume's 0.1th percentile (the lower order statistic, numpy's
    ``method="lower"``) is at or below -500 HU, else ``"MR"``. Counted, not sorted: with the float32
    copy below, this took a 512x512x300 ``.nii.gz`` load from 2.9-3.0 s to 1.3-1.4 s on a 2-core CPU
    (``benchmarks/enhance_overhead.py``, docs/benchmarks.md)."""
    at_or_below = int(np.count_nonzero(volume <= _CT_AIR_THRESHOLD_HU))
    # The lower q-quantile is the value of rank floor(q * (n - 1)) (from 0) in sorted order.
    return "CT" if at_or_below > _CT_AIR_SHARE * (volume.size - 1) else "MR"


def load_scan(path: str | Path, series: str | None = None, modality: str | None = None):
    """Load a NIfTI file, a DICOM file (single or multi-frame) or a DICOM series folder.

    Args:
        path: ``.nii``/``.nii.gz`` file, DICOM file, or folder holding a DICOM series.
        series: SeriesInstanceUID when a folder holds several series.
        modality: override the modality (NIfTI has no modality tag: it is guessed from the values).

    Returns:
        ``MetaTensor`` of shape ``(1, I, J, K)``, float32, affine ``(4, 4)`` float64 to RAS+ mm.

    Raises:
        InputError: the input is missing, unreadable, not a grey-scale 3-D scan, or holds NaN/Inf.

    Example:
        >>> scan = load_scan("ct.nii.gz")  # doctest: +SKIP
        >>> scan.shape, scan.meta["modality"], scan.pixdim  # doctest: +SKIP
    """
    import torch
    from monai.data import MetaTensor

    if not isinstance(path, (str, os.PathLike)):  # None, a number, a tensor: Path() raised TypeError
        raise InputError(f"load_scan takes a path (str or Path), got a {type(path).__name__}")
    path = Path(path)
    if modality is not None:
        if str(modality).upper() not in MODALITIES:
            raise InputError(f"--modality must be {' or '.join(MODALITIES)}, got {modality!r}")
        modality = str(modality).upper()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not path.is_file() and not path.is_dir():  # reading a FIFO waited for a writer forever
        raise InputError(f"{path}: not a regular file or folder (a pipe, socket or device)")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    if series is not None and not path.is_dir():  # silently ignored, it would seem to have been used
        raise InputError(f"{path}: --series picks a series in a DICOM folder; this is a file")
    if path.is_file() and is_nifti_path(path):
        volume, affine, meta = read_nifti(path)
        meta.update(
            source_format="nifti",
            modality=modality or _guess_modality(volume),
            modality_guessed=modality is None,
        )
        if modality == "CT" and volume.size and float(volume.min()) >= 0:
            # CT in HU has fat and air below 0; an MR (or CT stored without its rescale intercept)
            # would be normalised in the CT window and enhanced by a CT model without a word
            logger.warning(
                "%s: no value below 0 (no fat, no air): not CT in Hounsfield units? loaded as CT as asked",
                path,
            )
    else:
        from srgan_med.io.dicom_read import read_dicom

        try:
            volume, affine, meta = read_dicom(path, series=series)
        except InputError as error:
            suffix = path.suffix.lower() if path.is_file() else ""
            kind = _OTHER_FORMATS.get(suffix)
            if "not a DICOM file" not in str(error) or (kind is None and suffix not in _NOT_IMAGES):
                raise
            if kind is None:
                raise InputError(f"{path}: {_NOT_IMAGES[suffix]}, not an image") from None
            raise InputError(
                f"{path}: {kind}, not a format srgan-med reads (NIfTI .nii/.nii.gz, DICOM files and "
                "series folders); convert it to .nii.gz first (e.g. nibabel, SimpleITK, 3D Slicer)"
            ) from None
        meta.update(source_format="dicom", modality_guessed=False)
        if modality:
            meta["modality_tag"] = meta.get("modality")  # the file's own, kept beside the override
            meta["modality"] = modality
    if volume.dtype.kind == "f":  # integers are always finite
        finite = np.isfinite(volume)
        if not finite.all():
            raise InputError(
                f"{path}: {int(volume.size - finite.sum())} voxels are NaN or infinite; "
                "replace them (e.g. with the background value) first"
            )
        # Scans are float32 from here, and normalising squares them: beyond about 1.8e19 a square
        # overflows float32 (1e302 became infinite at once; 1e30 from a broken scl_inter made the
        # model's output infinite, and the error blamed the output).
        largest = max(float(volume.max()), -float(volume.min())) if volume.size else 0.0  # no |copy|
        if largest > _LARGEST_VALUE:
            raise InputError(
                f"{path}: values up to {largest:.3g}, beyond what float32 arithmetic handles "
                f"({_LARGEST_VALUE:.0e}); a corrupt image or scale factor (scl_slope/scl_inter)?"
            )
    if volume.size == 0:
        raise InputError(f"{path}: the image has no voxels (shape {volume.shape})")
    # HU for CT unless the file's RescaleType says another unit (a perfusion map's US): said as given
    rescale_type = str(meta.get("rescale_type", "") or "")
    meta["units"] = "HU" if meta["modality"] == "CT" and rescale_type.upper() in ("", "HU") else rescale_type
    meta["filename_or_obj"] = str(path)
    # resolved now: save_scan's "never overwrite the input" held only while the working directory
    # stayed the one the relative path was given in
    meta["source_path"] = str(path.resolve())
    affine = torch.as_tensor(affine, dtype=torch.float64)
    return MetaTensor(_float32_c_order(volume)[None], affine=affine, meta=meta)


_LARGEST_VALUE = 1e18  # float32's largest square root is 1.8e19; no scanner's unit comes near


def _float32_c_order(volume: np.ndarray):
    """``volume`` as a C-ordered float32 tensor. NIfTI data arrive in Fortran order, so this is a
    transposing copy; torch's is tiled and uses every core, numpy's ``ascontiguousarray`` is neither
    (with the modality count above: docs/benchmarks.md). The values are the same."""
    import torch

    if volume.dtype.kind not in "fiub" or volume.dtype.itemsize > 8 or not volume.flags.writeable:
        return torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    return torch.from_numpy(volume).to(torch.float32).contiguous()


def output_dtype(volume: np.ndarray, original: str) -> str:
    """``original`` if it holds ``volume`` after rounding (integer types), else ``float32``."""
    kind = np.dtype(original).kind
    if kind in "iu":
        info = np.iinfo(original)
        low, high = float(np.min(volume)), float(np.max(volume))
        if info.min - 0.5 <= low and high < info.max + 0.5:
            return original
        logger.warning("values %.1f..%.1f do not fit %s; writing float32", low, high, original)
        return "float32"
    return original if original in ("float32", "float64") else "float32"


def output_format(path: Path, fmt: str | None = None) -> str:
    """``"nifti"`` for ``.nii``/``.nii.gz`` paths, ``"dicom"`` for a suffix-less folder path."""
    if fmt:
        if fmt not in ("nifti", "dicom"):
            raise InputError(f"unknown output format {fmt!r}; use nifti or dicom")
        if fmt == "nifti" and not is_nifti_path(path):
            raise InputError(f"{path}: a NIfTI output needs a {' or '.join(NIFTI_SUFFIXES)} name")
        if fmt == "dicom" and is_nifti_path(path):
            suffix = ".nii.gz" if str(path).lower().endswith(".nii.gz") else ".nii"
            raise InputError(f"{path}: a DICOM series is a folder; give it a name without {suffix}")
        return fmt
    if is_nifti_path(path):
        return "nifti"
    if not Path(path).suffix:
        return "dicom"
    raise InputError(
        f"{path}: cannot tell the output format; use a {' or '.join(NIFTI_SUFFIXES)} name "
        "or a folder name (DICOM series)"
    )


def save_scan(
    image,
    path: str | Path,
    *,
    overwrite: bool = False,
    reference=None,
    inputs: Iterable[str | Path] = (),
    fmt: str | None = None,
    description: str = "srgan-med",
    derivation: str | None = None,
) -> Path:
    """Write ``image`` atomically as NIfTI (``.nii``/``.nii.gz``) or as a DICOM series folder.

    Args:
        image: ``MetaTensor`` ``(1, I, J, K)`` (or ``(I, J, K)``) with its own, final affine.
        path: output file (NIfTI) or folder (DICOM series).
        overwrite: replace an existing output.
        reference: the loaded source scan; its header (DICOM tags, NIfTI codes) and original dtype
            are carried over. Defaults to ``image`` itself.
        inputs: paths that must never be overwritten (the sources of this output).
        fmt: ``"nifti"`` or ``"dicom"``; default from the path.
        description: NIfTI ``descrip`` / DICOM SeriesDescription.
        derivation: DICOM DerivationDescription; marks the series DERIVED\\SECONDARY.

    Returns:
        The written path.
    """
    from srgan_med.io.dicom_write import write_dicom_series
    from srgan_med.io.geometry import as_numpy_affine, degenerate_voxels

    path = Path(path)
    reference = image if reference is None else reference
    ref_meta: dict[str, Any] = dict(getattr(reference, "meta", {}) or {})
    if getattr(image, "affine", None) is None:  # a plain tensor or array: no grid to write it on
        raise InputError(
            f"{path}: a {type(image).__name__} has no affine; give a MetaTensor with its voxel-to-world "
            "affine (monai.data.MetaTensor(array, affine=...)), e.g. one from load_scan"
        )
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim == 4 and array.shape[0] != 1:  # channel 1 onwards had been dropped silently
        raise InputError(
            f"{path}: an image of {array.shape[0]} channels (shape {tuple(array.shape)}); a scan is "
            "written one channel at a time: (1, I, J, K)"
        )
    volume = array[0] if array.ndim == 4 else array
    if volume.ndim != 3:
        raise InputError(f"cannot write an image of shape {tuple(array.shape)}; expected (1, I, J, K)")
    if volume.size == 0:
        raise InputError(f"{path}: the image has no voxels (shape {tuple(array.shape)})")
    try:
        affine = as_numpy_affine(image.affine)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None
    if degenerate_voxels(affine) is not None:
        raise InputError(
            f"{path}: the affine places no voxel (NaN, infinite or of zero volume): {affine.tolist()}"
        )
    # Checked slab by slab: a whole-volume boolean mask costs a byte per voxel of a large output.
    if not all(np.isfinite(volume[slab]).all() for slab in slabs(volume.shape, volume.strides)):
        raise InputError(f"{path}: refusing to write NaN/Inf values")
    fmt = output_format(path, fmt)
    sources = [Path(p) for p in inputs]
    source = ref_meta.get("source_path") or ref_meta.get("filename_or_obj")
    if source:
        sources.append(Path(str(source)))
    with atomic_output(path, overwrite=overwrite, inputs=sources) as temporary:
        if fmt == "nifti":
            dtype = output_dtype(volume, str(ref_meta.get("original_dtype", "float32")))
            write_nifti(
                volume,
                affine,
                temporary,
                dtype=dtype,
                header=ref_meta.get("nifti_header", {}),
                description=description,
            )
        else:
            write_dicom_series(
                volume,
                affine,
                temporary,
                reference=ref_meta.get("dicom_reference") or None,
                modality=str(ref_meta.get("modality", "OT")),
                description=description,
                derivation=derivation,
                slice_thickness_mm=(getattr(image, "meta", None) or {}).get("slice_thickness_mm"),
                integers=np.dtype(str(ref_meta.get("original_dtype", "float32"))).kind in "iu",
                real_world_mappings=ref_meta.get("real_world_mappings") or None,
            )
    return path
