"""Read DICOM files, multi-frame DICOM and series folders into a volume with exact geometry.

Why not MONAI's ``PydicomReader`` for series: in MONAI 1.6 it orders slices by InstanceNumber
(which scanners do not guarantee to follow position), derives the slice spacing from the z
coordinate alone (wrong for sagittal, coronal and oblique stacks), averages uneven spacing away,
mixes every series found in a folder, and gives enhanced multi-frame files an identity affine. Here
slices are sorted by ImagePositionPatient projected on the slice normal, uneven spacing and mixed
orientations are errors, and the array layout is the one dcm2niix writes (the reference converter):

* ``i`` = column index, ``j`` = row index counted from the LAST row (rows flipped, as dcm2niix
  stores them), ``k`` = slice index in ascending order along the normal ``row x column`` cosine.

Pixel decoding (including JPEG, JPEG-LS, JPEG 2000 and RLE via pylibjpeg) and the modality LUT
(rescale slope/intercept, so CT comes out in HU) are pydicom's.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srgan_med.errors import InputError, exception_summary
from srgan_med.io.dtypes import integer_dtype
from srgan_med.io.geometry import LPS_TO_RAS

logger = logging.getLogger(__name__)

# Objects that carry no scan to enhance, by Modality.
_NON_IMAGE_MODALITIES = {
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "RTDOSE": "an RT dose grid",
    "RTRECORD": "an RT treatment record",
    "SR": "a structured report",
    "SEG": "a segmentation",
    "REG": "a registration",
    "KO": "a key object selection",
    "PR": "a presentation state",
    "ECG": "a waveform",
}
_GREY = {"MONOCHROME1", "MONOCHROME2"}
_ORIENTATION_TOLERANCE = 1e-4  # difference of direction cosines between slices of one series
_SPACING_TOLERANCE_MM = 0.01


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)

    @property
    def slice_count(self) -> int:
        return len(self.files)


def _read_header(path: Path, *, force_fallback: bool):
    """``dcmread`` without pixels; files lacking the preamble/meta header are retried with force."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        if not force_fallback:
            raise
        # Files written without the 128-byte preamble and meta header are still legal data sets
        # in old archives; accept them only if they really describe an image.
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "SOPClassUID" not in ds and "Modality" not in ds:
            raise InvalidDicomError("not a DICOM file") from None
        return ds  # a data set; one that holds no image (an RT structure set, say) is named as such later


def find_series(folder: Path) -> list[SeriesInfo]:
    """List the DICOM image series under ``folder`` (searched recursively), sorted by UID.

    Files that are not DICOM, DICOMDIR index files and non-image objects are skipped.
    """
    series: dict[str, SeriesInfo] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = _read_header(path, force_fallback=True)  # old archives' files without a meta header too
        except Exception:  # noqa: BLE001 - an unreadable file in a folder is not part of a series
            continue
        if "Rows" not in ds or str(ds.get("Modality", "")) in _NON_IMAGE_MODALITIES:
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "unknown")
        info = series.setdefault(
            uid,
            SeriesInfo(uid, str(ds.get("SeriesDescription", "") or ""), str(ds.get("Modality", "") or "")),
        )
        info.files.append(path)
    return [series[uid] for uid in sorted(series)]


def _check_image(ds, path: Path) -> None:
    modality = str(ds.get("Modality", "") or "")
    if modality in _NON_IMAGE_MODALITIES:
        raise InputError(f"{path}: {_NON_IMAGE_MODALITIES[modality]} ({modality}) holds no scan to load")
    if "DirectoryRecordSequence" in ds:
        raise InputError(f"{path}: a DICOMDIR (an index of files) holds no image; give the series' folder")
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"{path}: no image in this DICOM object (no Rows/Columns)")
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in _GREY or samples != 1:
        raise InputError(
            f"{path}: unsupported photometric interpretation {photometric or 'missing'} "
            f"({samples} sample{'' if samples == 1 else 's'} per pixel); "
            "srgan-med works on grey-scale CT/MR images"
        )


def _infer_transfer_syntax(ds) -> None:
    """Give a data set read without a meta header (old archives) the transfer syntax it was read in,
    which pydicom needs to decode its pixels (uncompressed, as such files always are)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _pixels(ds, path: Path) -> np.ndarray:
    """Decoded stored values, ``(frames, rows, columns)``, before the modality LUT."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path}: no pixel data in this DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for broken pixel data
        raise InputError(f"{path}: cannot decode pixel data ({exception_summary(exc)})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = np.asarray(array)
    if frames == 1 and array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"{path}: unexpected pixel array shape {array.shape}")
    return array


def _rescale(stored: np.ndarray, rescale_source, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    slope = rescale_source.get("RescaleSlope")
    if slope not in (None, "") and _optional_float(slope, "RescaleSlope", path) == 0:
        raise InputError(f"{path}: RescaleSlope is 0 (every pixel would have the same value)")
    try:
        return np.asarray(apply_modality_lut(stored, rescale_source), dtype=np.float64)
    except (TypeError, ValueError) as exc:  # a RescaleIntercept or LUT that is not numbers
        raise InputError(
            f"{path}: malformed modality LUT or rescale tags ({exception_summary(exc)})"
        ) from None


def _optional_float(value, what: str, path: Path) -> float | None:
    """A one-number tag (SliceThickness, RescaleSlope) as a finite float; ``None`` when empty."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):  # text, or several values ("5.0\\5.0")
        raise InputError(f"{path}: malformed {what} {value!r}") from None
    if not np.isfinite(number):
        raise InputError(f"{path}: malformed {what} {value!r}")
    return number


_MAX_PIXEL_MM = 1e4  # ten metres: no scanner's pixel; beyond it the grid's arithmetic overflows


def _float_list(value, count: int, what: str, path: Path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}: malformed {what} {value!r}") from None
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise InputError(f"{path}: malformed {what} {value!r}")
    if what == "PixelSpacing" and not np.all(array > 0):
        raise InputError(f"{path}: PixelSpacing must be positive, got {value!r}")
    if what == "PixelSpacing" and not np.all(array < _MAX_PIXEL_MM):  # 1e300 made an infinite grid
        raise InputError(f"{path}: implausible PixelSpacing {value!r} (pixels over {_MAX_PIXEL_MM:g} mm)")
    return array


def _thickness(value, path: Path) -> float | None:
    """SliceThickness, or ``None``: a malformed one (or one not positive) is said and ignored (it
    places no voxel; a single slice then gets the 1 mm a missing one gets)."""
    try:
        thickness = _optional_float(value, "SliceThickness", path)
    except InputError as error:
        logger.warning("%s; ignored", error)
        return None
    if thickness is not None and not 0 < thickness < _MAX_PIXEL_MM:
        logger.warning("%s: SliceThickness %s is not a thickness; ignored", path, value)
        return None
    return thickness


@dataclass
class _Frame:
    path: Path
    stored: np.ndarray  # (rows, columns)
    position: np.ndarray  # LPS mm of the first transmitted pixel's centre
    orientation: np.ndarray  # (6,) row cosine then column cosine, LPS
    spacing: np.ndarray  # (row spacing, column spacing) mm
    thickness: float | None
    rescale: Any  # a Dataset holding the modality LUT for this frame
    spacing_assumed: bool = False  # no PixelSpacing: 1 mm assumed (said once per series)
    real_world: list = field(default_factory=list)  # this frame's RealWorldValueMappingSequence items


def _frames_of_multiframe(ds, path: Path, stored: np.ndarray) -> list[_Frame]:
    from pydicom.dataset import Dataset

    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != stored.shape[0]:
        raise InputError(
            f"{path}: multi-frame image without per-frame functional groups (no position of each "
            "frame); cannot build a volume from it"
        )

    def items(group, sequence: str) -> list:
        for source in (group, shared):
            if sequence in source and len(source[sequence].value):
                return list(source[sequence].value)
        return []

    def item(group, sequence: str):
        return (items(group, sequence) or [None])[0]

    frames = []
    for index, group in enumerate(per_frame):
        plane = item(group, "PlanePositionSequence")
        orientation = item(group, "PlaneOrientationSequence")
        measures = item(group, "PixelMeasuresSequence")
        if plane is None or orientation is None or measures is None or "PixelSpacing" not in measures:
            raise InputError(f"{path}: frame {index + 1} lacks position, orientation or pixel spacing")
        transform = item(group, "PixelValueTransformationSequence")
        rescale = Dataset()
        source = transform if transform is not None else ds
        for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if keyword in source:
                setattr(rescale, keyword, source[keyword].value)
        thickness = _thickness(measures.get("SliceThickness"), path)
        frames.append(
            _Frame(
                path,
                stored[index],
                _float_list(plane.ImagePositionPatient, 3, "ImagePositionPatient", path),
                _float_list(orientation.ImageOrientationPatient, 6, "ImageOrientationPatient", path),
                _float_list(measures.PixelSpacing, 2, "PixelSpacing", path),
                thickness,
                rescale,
                real_world=items(group, "RealWorldValueMappingSequence"),
            )
        )
    return frames


def _frame_of_single(ds, path: Path, stored: np.ndarray) -> tuple[_Frame, bool]:
    """One frame; the bool says whether geometry had to be assumed (no position/orientation tags)."""
    spacing_value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    spacing = _float_list(spacing_value, 2, "PixelSpacing", path) if spacing_value else np.ones(2)
    thickness = _thickness(ds.get("SliceThickness"), path)
    has_geometry = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
    if has_geometry:
        position = _float_list(ds.ImagePositionPatient, 3, "ImagePositionPatient", path)
        orientation = _float_list(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path)
    else:
        position, orientation = np.zeros(3), np.array([1.0, 0, 0, 0, 1.0, 0])
    frame = _Frame(
        path,
        stored[0],
        position,
        orientation,
        spacing,
        thickness,
        ds,
        spacing_value is None,
        list(ds.get("RealWorldValueMappingSequence") or []),
    )
    return frame, not has_geometry


# RealWorldValueMappingSequence item attributes that depend on the stored values (rewritten for the
# output's) or that a linear mapping has no use for (a lookup table: such items are not carried).
_REAL_WORLD_NUMBERS = (
    "RealWorldValueSlope",
    "RealWorldValueIntercept",
    "RealWorldValueFirstValueMapped",
    "RealWorldValueLastValueMapped",
    "DoubleFloatRealWorldValueFirstValueMapped",
    "DoubleFloatRealWorldValueLastValueMapped",
    "RealWorldValueLUTData",
)
_REAL_WORLD_TOLERANCE = 1e-6  # relative: frames' mappings of the modality values that are "the same"


def _modality_line(rescale) -> tuple[float, float] | None:
    """``(slope, intercept)`` of this frame's modality LUT as pydicom applies it (both tags, else
    none: stored values as they are); ``None`` for a Modality LUT table."""
    if rescale.get("ModalityLUTSequence"):
        return None
    if "RescaleSlope" in rescale and "RescaleIntercept" in rescale:  # checked by _rescale already
        return float(rescale.RescaleSlope), float(rescale.RescaleIntercept)
    return 1.0, 0.0


def _mapped_bound(item, keyword: str, double: str, signed: bool) -> float | None:
    """First/last stored value an item maps (the US/SS tag, else its double-float variant)."""
    if item.get(keyword) not in (None, ""):
        value = int(item[keyword].value)
        # "US or SS": an SS value read as US (implicit VR, resolved without PixelRepresentation)
        return float(value - 65536 if signed and value > 32767 else value)
    if item.get(double) not in (None, ""):
        return float(item[double].value)
    return None  # not said (it is for integer pixels): taken as every stored value


def _real_world_mappings(frames: list[_Frame], label: str) -> list[dict[str, Any]]:
    """The RealWorldValueMappingSequence items the frames share, as mappings of modality values.

    An item maps stored values ``s`` to real-world values ``s_rw * s + i_rw``; the volume holds the
    modality values ``v = slope * s + intercept`` of each frame, so the item says ``A * v + B`` with
    ``A = s_rw / slope`` and ``B = i_rw - s_rw * intercept / slope``, which holds whatever stored
    values the output keeps. Items are matched by their position in the sequence; one is kept where
    every frame has it with the same ``A`` and ``B`` (within ``_REAL_WORLD_TOLERANCE``), the same
    other attributes (label, units...), and a first..last value mapped covering all its stored
    values. Any other item is said (once) and left out: a lookup table or a piecewise mapping cannot
    be carried as one slope and intercept.

    Returns:
        ``[{"slope": A, "intercept": B, "item": DICOM JSON of the item without its numbers}]``,
        plain types (the meta is pickled and loaded with ``torch.load(weights_only=True)``).
    """
    import copy

    count = max((len(frame.real_world) for frame in frames), default=0)
    if count == 0:
        return []
    texts: dict[int, dict[str, Any]] = {}  # the shared group's item is one object for every frame

    def content(item) -> dict[str, Any]:
        if id(item) not in texts:
            rest = copy.deepcopy(item)
            for keyword in _REAL_WORLD_NUMBERS:
                if keyword in rest:
                    delattr(rest, keyword)
            try:
                texts[id(item)] = json.loads(json.dumps(rest.to_json_dict(suppress_invalid_tags=True)))
            except Exception:  # noqa: BLE001 - an unencodable attribute: not carried, not fatal
                texts[id(item)] = None
        return texts[id(item)]

    def mapping(frame: _Frame, position: int) -> tuple[float, float, dict[str, Any]] | str:
        """``(A, B, content)`` of this frame's item, or why it cannot be carried."""
        if position >= len(frame.real_world):
            return "is not given for every frame"
        item = frame.real_world[position]
        if "RealWorldValueLUTData" in item:
            return "is a lookup table (RealWorldValueLUTData), not a slope and intercept"
        line = _modality_line(frame.rescale)
        if line is None:
            return "maps stored values that a Modality LUT table turns into the image's values"
        try:
            slope = float(item.RealWorldValueSlope) if item.get("RealWorldValueSlope") is not None else 0.0
            intercept = float(item.get("RealWorldValueIntercept") or 0.0)
            signed = frame.stored.dtype.kind == "i"
            first = _mapped_bound(
                item, "RealWorldValueFirstValueMapped", "DoubleFloatRealWorldValueFirstValueMapped", signed
            )
            last = _mapped_bound(
                item, "RealWorldValueLastValueMapped", "DoubleFloatRealWorldValueLastValueMapped", signed
            )
        except (TypeError, ValueError):  # several values, text
            return "has malformed numbers"
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            return "has malformed numbers"
        if slope == 0:
            return "has no RealWorldValueSlope (or a slope of 0)"
        if frame.stored.size and (
            (first is not None and float(frame.stored.min()) < first)
            or (last is not None and float(frame.stored.max()) > last)
        ):
            return (
                "maps only part of the stored values (RealWorldValueFirstValueMapped.."
                "LastValueMapped; a piecewise mapping?)"
            )
        rescale_slope, rescale_intercept = line
        a = slope / rescale_slope
        text = content(item)
        if text is None:
            return "has attributes that cannot be written back (DICOM JSON encoding failed)"
        return a, intercept - a * rescale_intercept, text

    # Modality values' size, for B's tolerance: B is compared with the real values A * v it adds to.
    magnitude = 1.0
    for frame in frames:
        line = _modality_line(frame.rescale)
        if line is not None and frame.stored.size:
            ends = np.array([frame.stored.min(), frame.stored.max()], dtype=np.float64) * line[0] + line[1]
            magnitude = max(magnitude, float(np.max(np.abs(ends))))
    carried = []
    for position in range(count):
        results = [mapping(frame, position) for frame in frames]
        reason = next((r for r in results if isinstance(r, str)), None)
        if reason is None:
            a, b, text = results[0]
            for other_a, other_b, other_text in results[1:]:
                if other_text != text:
                    reason = "differs between frames (label, units or explanation)"
                elif abs(other_a - a) > _REAL_WORLD_TOLERANCE * max(abs(a), abs(other_a)) or abs(
                    other_b - b
                ) > _REAL_WORLD_TOLERANCE * max(abs(b), abs(other_b), abs(a) * magnitude):
                    reason = "maps the frames' values differently (slope or intercept)"
                if reason:
                    break
        if reason is not None:
            named = next((f for f in frames if position < len(f.real_world)), frames[0]).real_world[position]
            name = str(named.get("LUTLabel", "") or "").strip()
            logger.warning(
                "%s: real-world value mapping %d%s %s; not carried to the output",
                label,
                position + 1,
                f" ({name})" if name else "",
                reason,
            )
            continue
        carried.append({"slope": float(a), "intercept": float(b), "item": text})
    return carried


def _assemble(frames: list[_Frame], label: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Stack frames of one volume; returns ``(volume (I, J, K) float32, affine RAS, notes)``.

    Each frame's modality LUT is applied in float64 and the result stored as float32, the dtype
    ``load_scan`` returns, frame by frame: a float64 volume and its rounded copy took five times the
    float32 volume. ``notes["original_dtype"]`` (:func:`~srgan_med.io.dtypes.integer_dtype`) is
    decided on the float64 values, frame by frame as well.
    """
    first = frames[0]
    notes: dict[str, Any] = {}
    for frame in frames[1:]:
        if frame.stored.shape != first.stored.shape:
            raise InputError(f"{label}: slices differ in size ({first.stored.shape} vs {frame.stored.shape})")
        if np.max(np.abs(frame.orientation - first.orientation)) > _ORIENTATION_TOLERANCE:
            raise InputError(f"{label}: slices differ in orientation (a localizer or mixed series?)")
        if np.max(np.abs(frame.spacing - first.spacing)) > 1e-4:
            raise InputError(f"{label}: slices differ in pixel spacing")
    row_cosine, column_cosine = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row_cosine) - 1) > 1e-3 or abs(np.linalg.norm(column_cosine) - 1) > 1e-3:
        raise InputError(f"{label}: ImageOrientationPatient is not made of unit vectors")
    if abs(float(row_cosine @ column_cosine)) > 1e-4:  # dicom_write's tolerance: refused before the work
        raise InputError(
            f"{label}: ImageOrientationPatient's row and column directions are not perpendicular "
            f"(cosine {float(row_cosine @ column_cosine):.3g})"
        )
    normal = np.cross(row_cosine, column_cosine)
    heights = np.array([frame.position @ normal for frame in frames])
    order = np.argsort(heights, kind="stable")
    frames = [frames[i] for i in order]
    heights = heights[order]
    row_spacing, column_spacing = first.spacing
    if len(frames) > 1:
        steps = np.diff(heights)
        if np.min(steps) < _SPACING_TOLERANCE_MM:
            raise InputError(
                f"{label}: {len(frames)} slices but several share a position "
                "(multi-echo, dynamic or duplicated images?); not a single volume"
            )
        median = float(np.median(steps))
        if np.max(np.abs(steps - median)) > max(_SPACING_TOLERANCE_MM, 0.01 * median):
            raise InputError(
                f"{label}: uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm; missing "
                "slices?); resample it to even spacing first"
            )
        # The true step between slice origins: equal to normal * spacing for ordinary stacks, and
        # carrying the shear exactly for gantry-tilted CT (no resampling needed to stay correct).
        slice_step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
        tilt = np.degrees(np.arccos(np.clip(slice_step @ normal / np.linalg.norm(slice_step), -1, 1)))
        if tilt > 0.01:
            notes["gantry_tilt_deg"] = float(tilt)
            logger.info("%s: gantry tilt of %.2f deg kept exactly in the affine (sheared grid)", label, tilt)
    else:
        thickness = first.thickness if first.thickness and first.thickness > 0 else 1.0
        slice_step = normal * thickness
    if frames[0].thickness and frames[0].thickness > 0:  # written back as it was (DICOM output)
        notes["slice_thickness_mm"] = float(frames[0].thickness)
    rows = first.stored.shape[0]
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cosine * column_spacing
    affine_lps[:3, 1] = -column_cosine * row_spacing  # rows are stored flipped (dcm2niix layout)
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = frames[0].position + column_cosine * row_spacing * (rows - 1)
    volume = np.empty((first.stored.shape[1], rows, len(frames)), dtype=np.float32)
    integral, low, high = True, np.inf, -np.inf
    for k, frame in enumerate(frames):
        values = _rescale(frame.stored, frame.rescale, frame.path)
        integral = integral and bool(np.array_equal(values, np.rint(values)))
        low, high = min(low, float(values.min(initial=np.inf))), max(high, float(values.max(initial=-np.inf)))
        volume[:, :, k] = values[::-1, :].T
    notes["original_dtype"] = integer_dtype(integral and volume.size > 0, low, high)
    mappings = _real_world_mappings(frames, label)
    if mappings:  # carried to a DICOM output, rescaled to its stored values
        notes["real_world_mappings"] = mappings
    return volume, LPS_TO_RAS @ affine_lps, notes


# Transfer syntaxes that are always lossy (PS3.5 A.4): pixels decoded from them have lost
# information even where the file does not say so with LossyImageCompression. JPEG 2000 and HTJ2K
# may be reversible or not, and only the tag tells.
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
}


def _reference_header(ds, rescale_type: str | None = None) -> dict[str, Any]:
    """JSON form of the source header (no pixel data or per-frame groups) for writing back.

    Completed with what the writer must carry but the top level may not say: the rescale type of an
    enhanced object's functional groups, and the lossy-compression history a lossy transfer syntax
    implies (PS3.3 C.7.6.1.1.5: once lossy, always said).
    """
    import copy

    header = copy.copy(ds)
    # The real-world value mapping is of the source's stored values: it is carried rescaled
    # (``real_world_mappings``), never as it was.
    for keyword in (
        "PixelData",
        "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
        "RealWorldValueMappingSequence",
    ):
        if keyword in header:
            delattr(header, keyword)
    if rescale_type and "RescaleType" not in header:
        header.RescaleType = rescale_type
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax in _LOSSY_SYNTAXES and "LossyImageCompression" not in header:
        header.LossyImageCompression = "01"
        header.LossyImageCompressionMethod = _LOSSY_SYNTAXES[syntax]
    try:
        # The JSON round trip leaves plain types (pydicom's UID is a str subclass), so the header can be
        # pickled and loaded back with torch.load(weights_only=True), as MONAI's disk cache does.
        return json.loads(json.dumps(header.to_json_dict(suppress_invalid_tags=True)))
    except Exception:  # noqa: BLE001 - an unencodable private tag must not stop loading the image
        return {}


def read_dicom(path: Path, series: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a DICOM file (single or multi-frame) or a series folder.

    Args:
        path: a DICOM file, or a folder holding one series (or several, with ``series``).
        series: SeriesInstanceUID to pick when the folder holds several series.

    Returns:
        ``(volume, affine, meta)``: volume ``(I, J, K)`` float32 in physical units (modality LUT
        applied in float64: HU for CT), ``affine`` the ``(4, 4)`` voxel-centre affine to RAS+ mm, and ``meta``
        with ``modality``, ``dicom_reference`` (header as DICOM JSON), ``series_uid``,
        ``source_files``, ``original_dtype`` and, where the frames share a linear real-world value
        mapping, ``real_world_mappings`` (:func:`_real_world_mappings`).

    Raises:
        InputError: unreadable, non-image, colour, inconsistent or ambiguous input.
    """
    with warnings.catch_warnings():
        # pydicom warns about every oddity it tolerates; what matters is raised as InputError.
        warnings.simplefilter("ignore")
        return _read_dicom(Path(path), series)


def _read_dicom(path: Path, series: str | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from pydicom.errors import InvalidDicomError

    if path.is_dir():
        found = find_series(path)
        if not found:
            raise InputError(f"{path}: no DICOM image files in this folder")
        if series is not None:
            # the whole UID, or a start of it that only one series has (UIDs run to 64 characters)
            matches = [s for s in found if s.uid == series] or [s for s in found if s.uid.startswith(series)]
            if not matches:
                raise InputError(
                    f"{path}: no series with UID {series}; found {', '.join(s.uid for s in found)}"
                )
            if len(matches) > 1:
                raise InputError(
                    f"{path}: {len(matches)} series have UIDs that start with {series}: "
                    f"{', '.join(s.uid for s in matches)}; give more of it"
                )
            chosen = matches[0]
        elif len(found) > 1:
            listing = "; ".join(
                f"{s.uid} ({s.modality}, {s.description or 'no description'}, {s.slice_count} files)"
                for s in found
            )
            raise InputError(
                f"{path}: {len(found)} series found; pick one with --series UID "
                f"(or give a folder holding one series): {listing}"
            )
        else:
            chosen = found[0]
        files = chosen.files
        label = f"{path} (series {chosen.uid})"
    else:
        files = [path]
        label = str(path)

    headers = []
    for file in files:
        try:
            headers.append(_read_header(file, force_fallback=True))
        except InvalidDicomError:
            raise InputError(f"{file}: not a DICOM file") from None
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{file}: unreadable DICOM header ({exception_summary(exc)})") from None

    import pydicom

    frames: list[_Frame] = []
    assumed = False
    first_full = None
    for file, header in zip(files, headers, strict=True):
        try:
            ds = pydicom.dcmread(file, force=True)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{file}: unreadable DICOM file ({exception_summary(exc)})") from None
        if "Rows" in header and "Rows" not in ds:
            # pydicom gives an empty data set for a file cut inside its encapsulated pixel data
            # (RLE, JPEG 2000): said as that, not as "no Rows/Columns" its header does have
            raise InputError(f"{file}: truncated or corrupt image data (the file ends inside its pixel data)")
        _check_image(ds, file)
        _infer_transfer_syntax(ds)
        stored = _pixels(ds, file)
        if first_full is None:
            first_full = ds
        # An enhanced object keeps its geometry and rescale in functional groups, even with one
        # frame (the classic tags are absent: reading it as a plain image assumed an identity grid).
        if stored.shape[0] > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            if stored.shape[0] > 1 and len(files) > 1:
                raise InputError(f"{label}: mixes multi-frame and other files in one series")
            frames.extend(_frames_of_multiframe(ds, file, stored))
        else:
            frame, no_geometry = _frame_of_single(ds, file, stored)
            if no_geometry and len(files) > 1:
                raise InputError(
                    f"{file}: no ImagePositionPatient/ImageOrientationPatient; cannot order the series"
                )
            assumed |= no_geometry
            frames.append(frame)
    if assumed:
        logger.warning("%s: no patient position/orientation tags; assuming an axial LPS grid", label)
    if any(frame.spacing_assumed for frame in frames):
        logger.warning("%s: no PixelSpacing (nor ImagerPixelSpacing); assuming 1 mm pixels", label)
    modalities = sorted({str(h.get("Modality", "") or "") for h in headers} - {""})
    if len(modalities) > 1:  # one slice of MR among CT loaded as CT, without a word
        raise InputError(f"{label}: holds slices of several modalities ({', '.join(modalities)})")
    volume, affine, notes = _assemble(frames, label)
    assert first_full is not None
    meta: dict[str, Any] = {
        "modality": str(first_full.get("Modality", "") or "OT"),
        "series_uid": str(first_full.get("SeriesInstanceUID", "") or ""),
        "series_description": str(first_full.get("SeriesDescription", "") or ""),
        # JSON text, not a nested dict: DataLoader batches collate it whatever tags each file has
        "dicom_reference": json.dumps(_reference_header(headers[0], frames[0].rescale.get("RescaleType"))),
        "source_files": [str(f) for f in files],
        "geometry_assumed": assumed,
        **notes,
    }
    rescale_type = str(frames[0].rescale.get("RescaleType", "") or "").strip()
    if rescale_type:
        meta["rescale_type"] = rescale_type  # the values' unit where the file says it (US: unspecified)
    if meta["modality"] == "CT" and rescale_type and rescale_type.upper() != "HU":
        logger.warning(
            "%s: CT values in RescaleType %s, not Hounsfield units (a perfusion or other derived map?): "
            "the CT models and the CT window assume HU",
            label,
            rescale_type,
        )
    return volume, affine, meta
