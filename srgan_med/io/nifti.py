"""NIfTI reading and writing (nibabel) with checks a user can act on."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from srgan_med.errors import InputError, exception_summary
from srgan_med.io import scratch
from srgan_med.io.dtypes import integer_dtype, value_summary
from srgan_med.io.geometry import degenerate_voxels
from srgan_med.io.layout import slabs

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MM_PER_UNIT = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}


# CIFTI-2 files are NIfTI-2 containers of surface/grayordinate data, named by their intent
# (".dconn.nii", ".dtseries.nii", ".pscalar.nii", ...; the CIFTI-2 specification's list, so that
# "head.preop.nii" or "t1.defaced.nii" stay NIfTI) and marked by intent codes 3000-3099.
_CIFTI_KINDS = (
    "dconn dtseries pconn ptseries dscalar dlabel pscalar plabel pdconn dpconn pconnseries pconnscalar "
    "dfan dfibersamp dfansamp"
).split()
_CIFTI_NAME = re.compile(rf"\.({'|'.join(_CIFTI_KINDS)})\.nii$", re.IGNORECASE)
_CIFTI_INTENTS = range(3000, 3100)
_SLICE_TIMING = ("slice_code", "slice_start", "slice_end", "slice_duration")


def is_nifti_path(path: Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a 3-D NIfTI file (a 2-D image becomes one slice; a 4-D file with one volume is squeezed).

    nibabel reads it, as stored (no reorientation), with ``scl_slope``/``scl_inter`` applied and
    nibabel's affine (the sform when its code is set), as viewers place it. Not MONAI's
    ``NibabelReader``: its ``read`` "rectifies" the header (``rectify_header_sform_qform``),
    replacing the sform by the qform whenever the sform's column lengths differ from pixdim, which
    resized, moved or mirrored registered images; the rest of it is ``np.asanyarray(img.dataobj)``.
    Done here besides: refusing ambiguous 4-D data and degenerate affines, converting spatial units
    other than mm, and naming the file and reason when the file is not NIfTI or its data are
    truncated.

    Returns:
        ``(volume (I, J, K), affine (4, 4) RAS+ mm, meta)``; meta holds ``original_dtype`` and the
        ``nifti_header`` fields written back on save.
    """
    # nibabel prints its header checks ("sizeof_hdr should be 348", "data code 0 not supported")
    # through its own handler, as extra unprefixed lines; what stops a read reaches the user as
    # the one-line error below. (Its LoggingOutputSuppressor drops the handler for good.)
    with _isal_gzip_reads(), _quiet_nibabel():
        return _read_nifti(path)


@contextlib.contextmanager
def _quiet_nibabel():
    """While inside: nibabel's global logger prints nothing (its level is raised past CRITICAL),
    counted as :func:`_isal_gzip_reads` counts, so reads in several threads put the level back once,
    after the last (saved and restored per read, overlapping reads could leave it raised)."""
    from nibabel.imageglobals import logger as nibabel_logger

    def quiet() -> int:
        level = nibabel_logger.level
        nibabel_logger.setLevel(logging.CRITICAL + 1)
        return level

    with _counted(_QUIET, quiet, nibabel_logger.setLevel):
        yield


@contextlib.contextmanager
def _counted(state: dict[str, Any], enter, leave):
    """``enter()`` when the first of overlapping readers comes in, ``leave(what enter returned)``
    when the last goes out (``state``: a lock, a reader count and the saved value)."""
    with state["lock"]:
        if state["readers"] == 0:
            state["saved"] = enter()
        state["readers"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["readers"] -= 1
            if state["readers"] == 0:
                leave(state["saved"])


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import nibabel as nib

    cifti = f"{path}: a CIFTI-2 file (grayordinates or a matrix), not a volume of voxels"
    if _CIFTI_NAME.search(path.name):
        raise InputError(cifti)

    try:
        image = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for non-NIfTI input
        if "CIFTI" in str(exc):  # a CIFTI intent code without a valid CIFTI-2 extension
            raise InputError(cifti) from None
        compressed = path.name.lower().endswith(".gz")
        damage = _gzip_damage(path) if compressed else None
        if damage:  # a small file is inflated whole while nibabel sniffs its header
            raise InputError(f"{path}: corrupt compressed data ({damage})") from None
        image = _with_trailing_bytes(path) if compressed else None
        if image is None:
            raise InputError(f"{path}: not a readable NIfTI file ({exception_summary(exc, 160)})") from None
    header = getattr(image, "nifti_header", image.header)  # a Cifti2Image keeps it there
    if isinstance(image, nib.Cifti2Image) or int(header.get("intent_code", 0)) in _CIFTI_INTENTS:
        raise InputError(cifti)
    shape = tuple(int(v) for v in image.shape)
    if 0 in shape:
        raise InputError(f"{path}: the header declares no voxels (shape {shape}: a dim of 0)")
    extra = shape[3:]
    if any(size > 1 for size in extra):
        raise InputError(
            f"{path}: {len(shape)}-D NIfTI of shape {shape} holds {int(np.prod(extra))} volumes; "
            "extract the one to use first (e.g. nibabel: img.slicer[..., 0])"
        )
    stored = image.header.get_data_dtype()
    if stored.fields:  # RGB24 / RGBA32: nibabel stores the channels as a structured dtype
        raise InputError(
            f"{path}: colour NIfTI ({', '.join(stored.names)} per voxel); expected one intensity per voxel"
        )
    if stored.kind == "c":  # reading would keep the real part and drop the imaginary one
        raise InputError(
            f"{path}: complex-valued NIfTI ({stored}); super-resolution works on real intensities: "
            "save its magnitude first (e.g. numpy.abs)"
        )
    offset = getattr(image.dataobj, "offset", None)
    if offset is not None and not path.name.lower().endswith(".gz"):  # checked before allocating
        needed, holds = int(offset) + int(np.prod(shape)) * stored.itemsize, path.stat().st_size
        if holds < needed:
            raise InputError(
                f"{path}: truncated or corrupt image data (the header declares {needed:,} bytes, "
                f"the file holds {holds:,})"
            )
    try:
        if path.name.lower().endswith(".gz") and hasattr(image.dataobj, "offset"):  # nibabel's proxy
            array = _gzip_data(path, image.dataobj)
        else:
            array = np.asanyarray(image.dataobj)
    except InputError:
        raise
    except MemoryError:
        raise InputError(
            f"{path}: its header declares {' x '.join(map(str, shape))} voxels of {stored}, more than "
            "fit in memory (a corrupt header, or a volume to crop first)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated gzip/raw data surface as EOFError, OSError, zlib.error, ValueError
        raise InputError(f"{path}: truncated or corrupt image data ({exception_summary(exc, 160)})") from None
    array = np.asarray(array)
    if not array.dtype.isnative:  # a big-endian file, as stored: torch takes native byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    array = array.reshape(shape[:3] if len(shape) >= 3 else (*shape, 1) if len(shape) == 2 else shape)
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3-D image, got shape {shape}")
    affine = np.array(image.affine, dtype=np.float64)
    header = image.header
    try:
        spatial_unit = header.get_xyzt_units()[0]
    except KeyError:
        raise InputError(
            f"{path}: xyzt_units {int(header['xyzt_units'])} holds no known spatial/time unit code"
        ) from None
    qform, stored_qform_code = header.get_qform(coded=True)
    if _MM_PER_UNIT.get(spatial_unit, 1.0) != 1.0:
        logger.warning("%s: spatial unit is %s; converted to mm", path, spatial_unit)
        affine[:3, :] *= _MM_PER_UNIT[spatial_unit]
        if qform is not None:
            qform[:3, :] *= _MM_PER_UNIT[spatial_unit]
    _check_affine(path, affine)
    stored_name = header.get_data_dtype().newbyteorder("=").name  # ">i2": int16
    # nibabel moves scl_slope/scl_inter from the loaded header (left NaN) to the array proxy.
    slope = float(getattr(image.dataobj, "slope", 1.0))
    intercept = float(getattr(image.dataobj, "inter", 0.0))
    if slope != 1.0 or intercept != 0.0:
        # Stored integers times a slope (ADC maps, PET, Philips MR) are not integers: rounding the
        # output to the stored type would wipe them out. Whole-number values (CT with scl_inter
        # -1024) keep an integer type.
        integral, low, high = value_summary(array)
        original_dtype = integer_dtype(integral, low, high, prefer=stored_name)
    else:
        original_dtype = stored_name
    if original_dtype not in {"uint8", "int8", "int16", "uint16", "int32", "uint32", "float32", "float64"}:
        original_dtype = "float32"
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code <= 0 and qform_code <= 0:  # said, as for a DICOM file without orientation tags
        logger.warning(
            "%s: no qform or sform (both codes 0): orientation unknown; nibabel's default from the voxel "
            "size assumed (%s)",
            path,
            "".join(nib.aff2axcodes(affine)),
        )
    return (
        array,
        affine,
        {
            "original_dtype": original_dtype,
            # JSON text, not a nested dict: a DataLoader batch collates it (None in dim_info, fields
            # only some files have, lists of other lengths stopped MONAI's collate)
            "nifti_header": json.dumps(
                {
                    "descrip": _text(header["descrip"]),
                    "aux_file": _text(header["aux_file"]),
                    # carried over as they are: TR of fMRI-style headers, display range, intent
                    "time_step": float(header["pixdim"][4]),
                    "time_unit": header.get_xyzt_units()[1],
                    "cal_range": [float(header["cal_min"]), float(header["cal_max"])],
                    "intent": [int(header["intent_code"]), _text(header["intent_name"])]
                    + [float(header[f"intent_p{i}"]) for i in (1, 2, 3)],
                    "sform_code": sform_code if sform_code > 0 else 1,
                    "qform_code": qform_code if qform_code > 0 else 1,
                    "version": 2 if isinstance(header, nib.Nifti2Header) else 1,
                    "ndim": len(shape),
                    **_carried_fields(header, shape[:3], affine, qform if stored_qform_code > 0 else None),
                }
            ),
        },
    )


def _check_affine(path: Path, affine: np.ndarray) -> None:
    """Refuse a voxel-to-world transform that places no voxel (NaN, infinite, or zero-volume)."""
    problem = degenerate_voxels(affine)
    if problem == "NaN or infinite":
        raise InputError(f"{path}: the header's voxel-to-world affine holds NaN or infinite values")
    if problem is not None:
        raise InputError(
            f"{path}: the header's voxel-to-world affine is degenerate (a voxel of zero volume); "
            "fix the sform/qform first (e.g. nibabel: img.set_sform(img.get_qform()))"
        )


def _carried_fields(header, shape: tuple[int, ...], affine: np.ndarray, qform: np.ndarray | None) -> dict:
    """Header fields written back as they were, where an upscaled grid keeps their meaning.

    * ``dim_info`` (frequency, phase, slice axes) and ``toffset``: the axes are the same axes.
    * slice timing (``slice_code/start/end/duration``): kept when the slice axis keeps its size.
    * comment extensions (code 6); other extensions (AFNI, DICOM headers...) describe the input grid.
    * the qform, when it differs from the affine used (a registered sform beside a scanner qform):
      mapped to the output grid as the sform is, so either one overlays the input.
    """
    fields: dict[str, Any] = {
        "dim_info": [None if v is None else int(v) for v in header.get_dim_info()],
        "toffset": float(header["toffset"]),
        "comments": [
            extension.get_content().decode("utf-8", "replace")
            for extension in header.extensions
            if extension.get_code() == 6
        ],
    }
    slice_axis = fields["dim_info"][2]
    if slice_axis is not None and slice_axis < len(shape) and int(header["slice_code"]) > 0:
        fields["slice_timing"] = {
            "size": int(shape[slice_axis]),
            **{key: float(header[key]) for key in _SLICE_TIMING},
        }
    if qform is not None and not np.allclose(qform, affine, atol=1e-4) and np.isfinite(qform).all():
        fields["qform"] = np.asarray(qform, dtype=np.float64).tolist()
        fields["affine"] = np.asarray(affine, dtype=np.float64).tolist()
    return fields


# sin(0.01 deg), the gantry tilt below which the DICOM reader calls a grid orthogonal: a qform (the
# nearest rotation) then misplaces a voxel 300 mm from the origin by at most 0.05 mm. At 1e-6 the
# rounding of positions written to 3 decimals (axes 0.001 deg apart) dropped a valid qform.
SHEAR_TOLERANCE = 1.75e-4


def _is_sheared(affine: np.ndarray, tolerance: float = SHEAR_TOLERANCE) -> bool:
    """Whether the voxel axes of ``affine`` are not orthogonal (a qform cannot represent them)."""
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = axes / np.linalg.norm(axes, axis=0)
    return bool(np.abs(unit.T @ unit - np.eye(3)).max() > tolerance)


def _text(field) -> str:
    """A NIfTI header's fixed-size byte field as text (no encoding is defined: Latin-1 keeps every byte)."""
    return field.item().decode("latin-1", "replace").strip("\x00 ")


def header_fields(header: dict[str, Any] | str | None) -> dict[str, Any]:
    """The reader's ``meta["nifti_header"]`` as a mapping: it is kept as JSON text (so DataLoader
    batches collate it); a mapping (an older caller's) is taken as it is."""
    if isinstance(header, str):
        return json.loads(header)
    return dict(header or {})


def write_nifti(
    volume: np.ndarray,
    affine: np.ndarray,
    path: Path,
    *,
    dtype: str,
    header: dict[str, Any] | str,
    description: str,
) -> None:
    """Write ``volume`` (I, J, K) with ``affine`` as NIfTI-1, or NIfTI-2 when ``header`` says the
    input was (``"version": 2``), in ``dtype`` (values rounded for ints). ``header``: the reader's
    ``meta["nifti_header"]``, as JSON text or parsed."""
    import nibabel as nib

    header = header_fields(header)
    data = np.asarray(volume)
    if np.dtype(dtype).kind in "iu":
        # Rounded slab by slab into the output array: a whole-volume np.rint would hold a second
        # float copy of an output that can be gigabytes (e.g. a 512x512x1200 CT after x2). The
        # result keeps the input's memory layout, so a Fortran-ordered volume is written as is.
        rounded = scratch.array_like(data, dtype)  # on disk when the output is (srgan_med.io.scratch)
        for slab in slabs(data.shape, data.strides):
            np.rint(data[slab], out=rounded[slab], casting="unsafe")
        data = rounded
    else:
        data = data.astype(dtype, copy=False)
    if int(header.get("ndim", 3)) == 2 and data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]  # a 2-D input comes back 2-D
    image_class = nib.Nifti2Image if int(header.get("version", 1)) == 2 else nib.Nifti1Image
    image = image_class(data, affine)
    image.set_sform(affine, code=int(header.get("sform_code", 1)))
    qform = np.asarray(affine, dtype=np.float64)
    if header.get("qform") is not None and header.get("affine") is not None:
        # The input's own qform, taken through the same voxel map as the sform: output index ->
        # input index -> the qform's world.
        qform = np.asarray(header["qform"]) @ np.linalg.solve(np.asarray(header["affine"]), qform)
    if _is_sheared(qform):
        # A qform is a rotation and zooms: it cannot hold a sheared grid (gantry-tilted CT), and
        # nibabel would store the nearest rotation, so a viewer reading the qform would misplace the
        # image. Code 0 says: use the sform, which holds the grid exactly. ITK (SimpleITK, 3D
        # Slicer, ANTs) reads only orthonormal grids and refuses such a file: said, not hidden.
        image.set_qform(None, code=0)
        logger.warning(
            "NIfTI output: its sheared grid (gantry tilt) is kept exactly in the sform, with no qform: "
            "nibabel and FSL read it, ITK-based tools (SimpleITK, 3D Slicer, ANTs) refuse it; write a "
            "DICOM series instead, or resample the input to an orthogonal grid first"
        )
    else:
        image.set_qform(qform, code=int(header.get("qform_code", 1)))
    _write_carried_fields(image.header, header, data.shape)
    time_unit = str(header.get("time_unit", "sec"))
    image.header.set_xyzt_units(xyz="mm", t=time_unit if time_unit != "unknown" else 0)
    image.header["pixdim"][4] = float(header.get("time_step", 1.0))
    image.header["descrip"] = description[:79].encode("latin-1", "replace")
    image.header["aux_file"] = str(header.get("aux_file", ""))[:23].encode("latin-1", "replace")
    image.header["cal_min"], image.header["cal_max"] = header.get("cal_range", (0.0, 0.0))
    if header.get("intent"):
        code, name, *parameters = header["intent"]
        image.header["intent_code"], image.header["intent_name"] = (
            int(code),
            str(name)[:15].encode("latin-1", "replace"),
        )
        for index, value in enumerate(parameters, start=1):
            image.header[f"intent_p{index}"] = value
    if not str(path).endswith(".gz"):
        nib.save(image, str(path))
        return
    with _gzip_writer(path) as stream:
        image.to_file_map({"image": nib.FileHolder(fileobj=stream)})


_SWAP = {"lock": threading.Lock(), "readers": 0, "saved": None}
_QUIET = {"lock": threading.Lock(), "readers": 0, "saved": logging.NOTSET}


def _with_trailing_bytes(path: Path, limit: int = 1 << 26):
    """A small ``.nii.gz`` whose whole gzip members are followed by other bytes, which python-isal's
    reader (nibabel's, while it sniffs the header of a file of a few KB) refuses where ``gzip -t``
    ignores them: its image read from the members, or None when that is not what is wrong. Only
    for files inflating to ``limit`` bytes at most (the data are read again by :func:`_gzip_data`)."""
    import zlib

    import nibabel as nib

    data, members, room = path.read_bytes(), [], limit
    if len(data) > limit:
        return None
    while data[:2] == b"\x1f\x8b":
        if room <= 0:  # zlib reads a max_length of 0 as no limit at all
            return None
        member = zlib.decompressobj(31)
        try:
            members.append(member.decompress(data, room))
        except zlib.error:
            return None
        if not member.eof:  # damaged, or the members together larger than the limit
            return None
        room -= len(members[-1])  # the limit is on all members: each one's let a few KB hold GBs
        data = member.unused_data
    if not members or not data:  # not gzip, or nothing after the members: another problem
        return None
    inflated = b"".join(members)
    klass = nib.Nifti2Image if inflated[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Image
    try:
        return klass.from_bytes(inflated)
    except Exception:  # noqa: BLE001 - not a NIfTI after all: the caller says nibabel's reason
        return None


def _gzip_damage(path: Path) -> str | None:
    """Why the gzip stream of ``path`` is damaged (read to its end), or None when it is whole."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except gzip.BadGzipFile as error:
        # not gzip at all (nibabel's reason says more), or bytes after a whole member: not damage
        return None if str(error).startswith("Not a gzipped file") else str(error)
    except (EOFError, zlib.error, OSError) as error:
        return exception_summary(error, 160)
    return None


def _gzip_data(path: Path, proxy) -> np.ndarray:
    """The scaled voxels of a ``.nii.gz``, read as nibabel's array proxy reads them, except for two
    things nibabel does not do for compressed files:

    * the buffer is filled as the stream inflates, so a header declaring more data than the stream
      holds (4096x4096x512 in a 6 KB file) fails when the stream ends, having touched only what it
      held; nibabel first allocated and zeroed all of it (16.7 GB);
    * the stream is inflated to its end, where the CRC-32 and length of each member are checked:
      nibabel stops after the voxels, so a corrupted byte gave wrong voxels without an error.
    """
    from nibabel.volumeutils import apply_read_scaling

    dtype, shape = np.dtype(proxy.dtype), tuple(int(v) for v in proxy.shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(size, np.uint8)  # pages are taken as they are written
    placed = _inflate_into(path, int(proxy.offset), buffer)
    if placed < size:
        raise InputError(
            f"{path}: truncated or corrupt image data (the header declares {size:,} bytes of voxels, "
            f"the compressed stream holds {placed:,})"
        )
    raw = np.ndarray(shape, dtype, buffer=buffer, order=proxy.order)
    # as ArrayProxy.__array__ scales: in the scale factors' type
    return apply_read_scaling(raw, np.asanyarray(proxy.slope), np.asanyarray(proxy.inter))


def _inflate_into(path: Path, offset: int, out: np.ndarray) -> int:
    """Inflate every gzip member of ``path``; uncompressed bytes ``[offset, offset + out.size)`` go
    into ``out``, the rest is checked and dropped. Returns how many bytes were placed.

    Written with zlib's streaming interface (python-isal's, 1.6x faster, where installed) because
    ``gzip.open`` cannot both check the end of the stream and tolerate bytes after the last member:
    its buffered reader raises on them in the same call that would return the last voxels. Each
    member's CRC-32 and length are checked by zlib (``wbits=31``); bytes after a whole member that
    do not start another one are ignored, as ``gzip -t`` ignores trailing garbage.
    """
    try:
        from isal import isal_zlib as inflate
    except ImportError:
        import zlib as inflate
    view = memoryview(out).cast("B")
    end, position, placed = offset + len(view), 0, 0
    with open(path, "rb") as stream:
        pending, member, members = b"", None, 0
        while True:
            if member is None:  # between members: another one, or the end
                pending += stream.read(max(0, 2 - len(pending)))
                if pending[:2] != b"\x1f\x8b":
                    if members == 0:
                        raise InputError(f"{path}: not a gzip stream")
                    return placed
                member, members = inflate.decompressobj(31), members + 1
            compressed = pending or stream.read(1 << 22)
            pending = b""
            if not compressed:
                raise InputError(
                    f"{path}: truncated or corrupt image data (the compressed stream ends inside "
                    f"member {members}, after {position:,} bytes)"
                )
            while True:
                try:
                    piece = member.decompress(compressed, 1 << 24)
                except inflate.error as error:  # a damaged block, or a CRC/length mismatch
                    raise InputError(f"{path}: truncated or corrupt image data ({error})") from None
                low, high = max(position, offset), min(position + len(piece), end)
                if high > low:
                    view[low - offset : high - offset] = piece[low - position : high - position]
                    placed += high - low
                position += len(piece)
                compressed = member.unconsumed_tail
                if member.eof or not compressed:
                    break
            if member.eof:
                pending, member = member.unused_data, None


@contextlib.contextmanager
def _isal_gzip_reads():
    """While inside: nibabel inflates ``.gz`` files with ISA-L (python-isal) instead of zlib.

    Why: it took 0.3-0.7 s off loading a 512x512x300 int16 ``.nii.gz`` on a 2-core EPYC
    (``benchmarks/enhance_overhead.py``, docs/benchmarks.md). nibabel has no switch for this; its
    extension point for compressed formats is ``ImageOpener.compress_ext_map`` (images open their
    files, and the array proxies their data, through ``ImageOpener``). The entry is swapped only
    while this module reads (counted, so reads in several threads put it back once, after the last),
    so other nibabel users in the process are not affected. Where python-isal is missing, nothing
    changes.
    """
    try:
        from isal import igzip
        from nibabel.openers import ImageOpener
    except ImportError:
        yield
        return
    openers = ImageOpener.compress_ext_map

    def swap():
        saved = openers[".gz"]
        openers[".gz"] = (igzip.open, ("mode",))
        return saved

    with _counted(_SWAP, swap, lambda saved: openers.__setitem__(".gz", saved)):
        yield


def _write_carried_fields(target, header: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Write back what :func:`_carried_fields` kept."""
    import nibabel as nib

    freq, phase, slice_axis = header.get("dim_info") or (None, None, None)
    target.set_dim_info(freq=freq, phase=phase, slice=slice_axis)
    target["toffset"] = float(header.get("toffset", 0.0))
    timing = header.get("slice_timing")
    if timing and slice_axis is not None and slice_axis < len(shape) and shape[slice_axis] == timing["size"]:
        for key in _SLICE_TIMING:
            target[key] = timing[key]
    for comment in header.get("comments", ()):
        target.extensions.append(nib.nifti1.Nifti1Extension(6, comment.encode("utf-8")))


def _gzip_writer(path: Path):
    """A gzip stream to ``path`` at compression level 1 (nibabel's default) with mtime 0.

    ISA-L's (python-isal) where installed, instead of zlib, the library nibabel uses: writing a
    512x512x300 int16 ``.nii.gz`` took 0.86 s instead of 1.75 s on a 2-core EPYC, and it had been
    most of what ``enhance`` spends besides the network (``benchmarks/enhance_overhead.py --format
    nifti-gz``, docs/benchmarks.md). With more than one core, ISA-L's threaded writer compresses
    blocks on several cores (its stream is one standard gzip member, mtime 0 too): on 2 cores the
    same write went from 0.55-0.62 s to 0.37-0.42 s.
    """
    try:
        from isal import igzip_threaded
    except ImportError:  # e.g. a machine with only the core wheels: the standard library's zlib
        from gzip import GzipFile

        return GzipFile(str(path), "wb", compresslevel=1, mtime=0)
    threads = min(_available_cores(), 8)
    if threads < 2:
        from isal.igzip import IGzipFile

        return IGzipFile(str(path), "wb", compresslevel=1, mtime=0)
    return _ForwardWriter(igzip_threaded.open(str(path), "wb", compresslevel=1, threads=threads))


def _stop_workers(writer, seconds: float = 10.0) -> None:
    """End python-isal's compression and writer threads without finishing the stream.

    Its own ``stop()`` joins them, and a worker blocked putting a block into a full queue that no
    one reads any more never ends: that join hung. Here the queues are emptied until every thread
    has seen ``running`` false on an empty queue (they poll every 50 ms) and returned.
    """
    import queue
    import time

    writer.running = False
    threads = [*writer.compression_workers, writer.output_worker]
    deadline = time.monotonic() + seconds
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        for waiting in (*writer.input_queues, *writer.output_queues):
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting.get_nowait()
        for thread in threads:
            thread.join(timeout=0.01)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _ForwardWriter(io.BufferedIOBase):
    """A write-only stream over one that cannot seek (ISA-L's threaded gzip writer), allowing the
    seeks nibabel makes while writing: to where the stream is, or past it (the gap is zeros).
    Written by hand: neither nibabel nor python-isal has it."""

    def __init__(self, stream) -> None:
        super().__init__()
        self._stream = stream
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self._stream.write(data)
        self._position += size
        return size

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset if whence == io.SEEK_CUR else -1
        if target < self._position:
            raise io.UnsupportedOperation("a gzip stream being written can only seek forward")
        if target > self._position:
            self.write(bytes(target - self._position))
        return self._position

    def flush(self) -> None:
        if not self._stream.closed:  # IOBase.close flushes after the stream is closed
            self._stream.flush()

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
            return
        # Left by an error or Ctrl-C: drop the stream instead of finishing it. Closing would flush,
        # which waits for every block handed to the worker threads; an interrupt inside write()
        # can leave a block counted but never queued, and that wait never ended (the process hung
        # and the partial file stayed). The workers are ended without their work; the file is then
        # closed as it is, and removed by the caller (atomic_output).
        writer = self._stream.raw  # python-isal's _ThreadedGzipWriter, under a BufferedWriter
        try:
            _stop_workers(writer)
        finally:
            # python-isal's own flag: with it set, its close() (and __del__) does not flush, and the
            # BufferedWriter above, seeing its raw stream closed, closes without flushing either.
            writer._closed = True
            writer.raw.close()
            super().close()
