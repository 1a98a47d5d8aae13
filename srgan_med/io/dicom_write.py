"""Write a volume as a DICOM series (one single-frame file per slice).

pydicom writes datasets but has no notion of "a volume with an affine", and MONAI's writers do not
write DICOM at all, so the geometry tags are derived here by hand from the affine: the inverse of
:func:`srgan_med.io.dicom_read.volume_geometry`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from srgan_med.errors import InputError
from srgan_med.io.geometry import LPS_TO_RAS, as_numpy_affine
from srgan_med.io.layout import slabs

# SOP classes of classic single-frame images we write; an enhanced (multi-frame) source is written
# back as the classic class of its modality, which every viewer and dcm2niix reads.
_SOP_CLASS_BY_MODALITY = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# Tags copied from the source so the derived series stays in the same patient and study.
_KEEP_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "BodyPartExamined",
    "PatientPosition",
    "KVP",
    "ConvolutionKernel",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "WindowCenter",
    "WindowWidth",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "AcquisitionNumber",
    # MR Image module (C.8.3.1): an inversion-recovery series kept IR but lost its TI
    "EchoTrainLength",
    "InversionTime",
    "TriggerTime",
    "EchoNumbers",
    "ImagingFrequency",
    "ImagedNucleus",
    "PixelBandwidth",
    # Contrast/Bolus module (C.7.6.4): a contrast-enhanced source's derived series must say so
    "ContrastBolusAgent",
    "ContrastBolusAgentSequence",
    "ContrastBolusRoute",
    "ContrastBolusVolume",
    "ContrastBolusStartTime",
    "ContrastBolusStopTime",
    "ContrastBolusTotalDose",
    "ContrastFlowRate",
    "ContrastFlowDuration",
    "ContrastBolusIngredient",
    "ContrastBolusIngredientConcentration",
    # PS3.3 C.7.6.1.1.5: once lossy compressed, always said so (the ratio and method are the history)
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)


# What each IOD written here requires that the loop does not set from the data (PS3.3 A.3 CT, A.4
# MR, A.8.1 SC): Type 2 attributes written empty when the source lacks them (or there is no DICOM
# source: a NIfTI), Type 1 ones with the value that says "not known" in the standard's terms.
_TYPE2_ALL = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "Manufacturer",
)  # fmt: skip
_TYPE2_BY_SOP = {
    _SOP_CLASS_BY_MODALITY["CT"]: (
        "PositionReferenceIndicator",
        "PatientPosition",
        "KVP",
        "AcquisitionNumber",
    ),
    _SOP_CLASS_BY_MODALITY["MR"]: (
        "PositionReferenceIndicator",
        "PatientPosition",
        "ScanOptions",
        "MRAcquisitionType",
        "EchoTime",
        "EchoTrainLength",
        "RepetitionTime",
    ),  # fmt: skip
    _SECONDARY_CAPTURE: ("PatientOrientation",),
}
_TYPE1_DEFAULTS = {
    # MR Image module: RM "research mode" and NONE are the defined terms for a sequence not known
    _SOP_CLASS_BY_MODALITY["MR"]: {"ScanningSequence": "RM", "SequenceVariant": "NONE"},
    # SC Equipment module (C.8.6.1): WSD, made on a workstation
    _SECONDARY_CAPTURE: {"ConversionType": "WSD"},
}


def _image_type(source, derivation: str | None) -> list[str]:
    """ImageType (C.7.6.1.1.2) of the written image: DERIVED\\SECONDARY with the source's own
    further values (a perfusion map's PERFUSION\\RCBF) when derived; the source's as it was for a
    copy; DERIVED\\SECONDARY without a DICOM source (a NIfTI is no original acquisition). It was
    ORIGINAL\\PRIMARY\\AXIAL whenever no derivation was given."""
    given = [str(v) for v in (source.get("ImageType") or [])]
    if derivation or not given:
        return ["DERIVED", "SECONDARY", *given[2:]]
    return given


def slice_geometry(affine_ras) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Split a voxel-centre RAS affine into DICOM terms.

    The array layout is the reader's (dcm2niix's): i = column, j = row counted from the last row,
    k = slice. So the DICOM column cosine (direction of increasing row number) is minus the
    direction of increasing j.

    Returns:
        ``(row_cosine, column_cosine, slice_step_lps, column_spacing_mm, row_spacing_mm)`` where
        ``row_cosine`` is the LPS direction of increasing column index (IOP[0:3]),
        ``column_cosine`` that of increasing row index (IOP[3:6]) and ``slice_step_lps`` the LPS
        vector from one slice position to the next.
    """
    affine_lps = LPS_TO_RAS @ as_numpy_affine(affine_ras)
    column_step, j_step, slice_step = affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2]
    column_spacing, row_spacing = float(np.linalg.norm(column_step)), float(np.linalg.norm(j_step))
    row_cosine, column_cosine = column_step / column_spacing, -j_step / row_spacing
    if abs(float(row_cosine @ column_cosine)) > 1e-4:
        raise InputError(
            "its in-plane voxel axes are not perpendicular (a sheared grid), which DICOM cannot "
            "describe; write NIfTI instead (--format nifti)"
        )
    return row_cosine, column_cosine, slice_step, column_spacing, row_spacing


def check_dicom_grid(affine_ras, name) -> None:
    """Refuse, naming ``name``, a grid a DICOM series cannot describe: before the work, not after
    it (a sheared NIfTI to ``--format dicom`` upscaled the whole volume, then stopped with an
    internal error)."""
    try:
        slice_geometry(affine_ras)
    except InputError as error:
        raise InputError(f"{name}: {error}") from None


class _Storage(NamedTuple):
    """How ``write_dicom_series`` stores values: integer type, rescale slope/intercept, and whether
    the values are scaled onto the int16 range (else stored as they are, rounded)."""

    dtype: type
    slope: float
    intercept: float
    pixel_representation: int
    scaled: bool


def _storage(volume: np.ndarray, integers: bool = False) -> _Storage:
    """Choose integer storage for ``volume``.

    Integer-valued data that fits int16/uint16 is stored as is (slope 1, intercept 0), so HU stay
    exact; so is any data with ``integers`` (rounded: the source stored integers, e.g. CT in whole
    HU, as the NIfTI writer rounds to the source's integer type); anything else is linearly scaled
    onto the int16 range. The check runs slab by slab in
    float64: with whole-volume float64 temporaries, enhancing a 512x512x150 CT at x2 into DICOM
    peaked at 10.45x the float32 output (``benchmarks/enhance_memory.py --format dicom``, docs).
    """
    finite_min, finite_max = float(volume.min()), float(volume.max())
    # Integers are kept as they are only where rounding costs no more than the scaled storage's own
    # quantisation (half a step of span / 65534): values of 1e-6 are not "integers within 1e-3".
    tolerance = min(1e-3, 0.5 * (finite_max - finite_min) / 65534.0)
    integral = True
    for slab in [] if integers else slabs(volume.shape, volume.strides, size=4):
        values = volume[slab].astype(np.float64)
        if np.max(np.abs(np.rint(values) - values), initial=0.0) > tolerance:
            integral = False
            break
    if integral:
        finite_min, finite_max = float(np.rint(finite_min)), float(np.rint(finite_max))
        if finite_min >= -32768 and finite_max <= 32767:
            return _Storage(np.int16, 1.0, 0.0, 1, scaled=False)
        if finite_min >= 0 and finite_max <= 65535:
            return _Storage(np.uint16, 1.0, 0.0, 0, scaled=False)
    span = max(finite_max - finite_min, 1e-12)
    slope = span / 65534.0
    return _Storage(np.int16, slope, finite_min + 32767.0 * slope, 1, scaled=True)


def _stored(values: np.ndarray, storage: _Storage) -> np.ndarray:
    """``values`` (one slice) as ``storage`` keeps them."""
    values = values.astype(np.float64)
    if not storage.scaled:
        return np.rint(values).astype(storage.dtype)
    return np.clip(np.rint((values - storage.intercept) / storage.slope), -32767, 32767).astype(np.int16)


_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _has_non_ascii_text(ds) -> bool:
    """Whether a text element of ``ds`` (or of its sequences' items: a real-world value mapping's
    explanation) needs a non-ASCII character set."""
    return any(
        any(_has_non_ascii_text(item) for item in elem.value)
        if elem.VR == "SQ"
        else elem.VR in _TEXT_VRS and not str(elem.value).isascii()
        for elem in ds
    )


def _rescale_text(storage: _Storage) -> tuple[str, str]:
    """RescaleSlope and RescaleIntercept as written (DS: a decimal string of at most 16 characters)."""
    return f"{storage.slope:.10g}", f"{storage.intercept:.10g}"


def _real_world_value_mappings(mappings, storage: _Storage) -> list:
    """RealWorldValueMappingSequence items for the output's stored values.

    ``mappings`` (``meta["real_world_mappings"]``, see ``dicom_read._real_world_mappings``) map the
    modality values ``v`` to real-world values ``slope * v + intercept``; the output stores ``s``
    with ``v = rescale_slope * s + rescale_intercept``, so its items map ``s`` with
    ``slope * rescale_slope`` and ``slope * rescale_intercept + intercept``. The rescale is the one
    written (10 digits), so the item agrees with the values a reader gets from the file.
    """
    from pydicom.dataset import Dataset

    info = np.iinfo(storage.dtype)
    # First/last value mapped (PS3.3 C.7.6.16.2.11.1) are stored pixel values, the ends of the range
    # the slope and intercept apply to, within what BitsStored (16) and PixelRepresentation allow. A
    # linear mapping holds for every one of them, so the whole range of the output's stored type is
    # given: it covers every value of every slice (scaled storage is clipped inside it), is the same
    # in every slice (one mapping of the series, not one per slice's min..max), and a value a later
    # edit stores is still mapped. The VR ("US or SS") follows PixelRepresentation: SS for int16.
    vr = "SS" if storage.pixel_representation == 1 else "US"
    rescale_slope, rescale_intercept = (float(text) for text in _rescale_text(storage))
    items = []
    for mapping in mappings:
        item = Dataset.from_json(mapping["item"])
        for keyword in (  # for float pixel data, and a table: the reader leaves them out already
            "DoubleFloatRealWorldValueFirstValueMapped",
            "DoubleFloatRealWorldValueLastValueMapped",
            "RealWorldValueLUTData",
        ):
            if keyword in item:
                delattr(item, keyword)
        item.add_new(0x00409216, vr, int(info.min))  # RealWorldValueFirstValueMapped
        item.add_new(0x00409211, vr, int(info.max))  # RealWorldValueLastValueMapped
        slope = float(mapping["slope"])
        item.RealWorldValueSlope = slope * rescale_slope
        item.RealWorldValueIntercept = slope * rescale_intercept + float(mapping["intercept"])
        items.append(item)
    return items


WRITER = "srgan-med"  # the Manufacturer of our ContributingEquipmentSequence item


def _our_contribution(now: _dt.datetime, description: str):
    """This writer as a ContributingEquipmentSequence item (PS3.3 C.7.5.1.1.4, DCM 109103 "Modifying
    Equipment"): what made the series, as DICOM records it, and how :func:`written_by_srgan_med`
    knows a folder of .dcm files is one of ours."""
    from pydicom.dataset import Dataset

    from srgan_med import __version__

    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "109103", "DCM"
    purpose.CodeMeaning = "Modifying Equipment"
    item = Dataset()
    item.Manufacturer = WRITER
    item.SoftwareVersions = __version__
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = description[:1024]
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def written_by_srgan_med(path: Path) -> bool:
    """Whether the DICOM file at ``path`` was written by this writer (its last ContributingEquipment
    item is ours): what ``--overwrite`` asks before it replaces a folder of .dcm files."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ContributingEquipmentSequence"])
        items = ds.get("ContributingEquipmentSequence") or []
        return bool(items) and str(items[-1].get("Manufacturer", "")) == WRITER
    except Exception:  # noqa: BLE001 - unreadable, not DICOM: not ours either way
        return False


def _without_pydicom_warnings(function):
    """Run ``function`` with Python warnings off: an invalid value the reader took as it was
    (PatientAge ``22Y``) was warned about again as it was copied, as raw warning lines on stderr."""

    @functools.wraps(function)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return function(*args, **kwargs)

    return quiet


@_without_pydicom_warnings
def write_dicom_series(
    volume: np.ndarray,
    affine_ras,
    folder: Path,
    *,
    reference: dict[str, Any] | None = None,
    modality: str = "OT",
    description: str = "srgan-med",
    derivation: str | None = None,
    slice_thickness_mm: float | None = None,
    integers: bool = False,
    real_world_mappings: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice into the (new, empty) ``folder``.

    Args:
        volume: ``(I, J, K)`` values in physical units (HU for CT); i = column, j = row, k = slice.
        affine_ras: ``(4, 4)`` voxel-centre affine to RAS+ mm.
        folder: destination folder, created here (the caller makes the write atomic).
        reference: DICOM JSON dict (``Dataset.to_json_dict()``) of a source slice: patient, study
            and acquisition tags are copied from it; the written series is marked DERIVED.
        modality: used when there is no reference.
        description: SeriesDescription of the new series.
        derivation: DerivationDescription; set (and ImageType DERIVED\\SECONDARY) when given.
        slice_thickness_mm: SliceThickness (thick or overlapping slices); default: the slice spacing.
        integers: round to whole numbers (the source stored integers), where int16/uint16 hold them.
        real_world_mappings: the source's real-world value mappings of the volume's values (the
            reader's ``meta["real_world_mappings"]``): written into every slice as a
            RealWorldValueMappingSequence of the new stored values.

    Returns:
        The written file paths, in slice order.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (I, J, K), got shape {volume.shape}")
    row_cosine, column_cosine, slice_step, column_spacing, row_spacing = slice_geometry(affine_ras)
    affine_lps = LPS_TO_RAS @ as_numpy_affine(affine_ras)
    storage = _storage(volume, integers)
    source = pydicom.Dataset.from_json(reference) if reference else Dataset()
    modality = str(source.get("Modality", modality) or modality)
    sop_class = _SOP_CLASS_BY_MODALITY.get(modality, _SECONDARY_CAPTURE)
    series_uid = generate_uid()
    frame_of_reference = str(source.get("FrameOfReferenceUID", "") or generate_uid())
    study_uid = str(source.get("StudyInstanceUID", "") or generate_uid())
    now = _dt.datetime.now()
    # PS3.3 C.7.6.2.1.1 / C.8.3.1: SpacingBetweenSlices is measured along the slice normal; the step
    # between positions is longer in a gantry-tilted series (3.0 mm positions, 2.934 mm apart at 12°)
    slice_spacing = abs(float(slice_step @ np.cross(row_cosine, column_cosine)))
    slice_thickness = float(slice_thickness_mm) if slice_thickness_mm else slice_spacing
    photometric = "MONOCHROME1" if source.get("PhotometricInterpretation") == "MONOCHROME1" else "MONOCHROME2"
    contribution = _our_contribution(now, derivation or description)
    image_type = _image_type(source, derivation)
    folder.mkdir(parents=True)
    paths = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        for keyword in _KEEP_TAGS:
            if keyword in source:
                setattr(ds, keyword, source[keyword].value)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.StudyInstanceUID = study_uid
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.SeriesDescription = description[:64]  # LO (PS3.5 6.2)
        ds.SeriesNumber = int(source.get("SeriesNumber", 0) or 0) + 1000 if reference else 1
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
        ds.ImageType = image_type
        if derivation:
            ds.DerivationDescription = derivation[:1024]
        for keyword in (*_TYPE2_ALL, *_TYPE2_BY_SOP.get(sop_class, ())):
            if keyword not in ds:
                setattr(ds, keyword, None)  # present, empty: Type 2
        if "IR" in list(ds.get("ScanningSequence") or []) and "InversionTime" not in ds:
            ds.InversionTime = None  # Type 2C: required with an inversion recovery
        for keyword, value in _TYPE1_DEFAULTS.get(sop_class, {}).items():
            if not ds.get(keyword):
                setattr(ds, keyword, value)
        # The first transmitted row is the last j (rows are stored flipped in the array).
        position = affine_lps @ np.array([0.0, float(volume.shape[1] - 1), float(k), 1.0])
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position[:3]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cosine, *column_cosine)]
        ds.PixelSpacing = [f"{row_spacing:.8f}", f"{column_spacing:.8f}"]
        ds.SliceThickness = f"{slice_thickness:.6f}"
        ds.SpacingBetweenSlices = f"{slice_spacing:.6f}"
        ds.SliceLocation = f"{float(position[:3] @ np.cross(row_cosine, column_cosine)):.6f}"
        pixels = np.ascontiguousarray(_stored(volume[:, ::-1, k].T, storage))  # (rows, columns)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        # Values keep their meaning, so the display rule does too: MONOCHROME1 (CR, DX: high = dark)
        # written as MONOCHROME2 would show the enhanced image inverted in every viewer.
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = storage.pixel_representation
        ds.RescaleSlope, ds.RescaleIntercept = _rescale_text(storage)
        # the values keep their units: the source's RescaleType (a CT perfusion map is "US",
        # unspecified), else HU, which a CT image's rescale gives when it does not say otherwise
        rescale_type = source.get("RescaleType") or ("HU" if modality == "CT" else None)
        if rescale_type:
            ds.RescaleType = rescale_type
        if real_world_mappings:
            ds.RealWorldValueMappingSequence = _real_world_value_mappings(real_world_mappings, storage)
        ds.ContributingEquipmentSequence = [*source.get("ContributingEquipmentSequence", []), contribution]
        if _has_non_ascii_text(ds):
            # The copied text is Unicode (read through the source's own character set); UTF-8 keeps
            # every character, where the default repertoire (ASCII) would write them as "?".
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PixelData = pixels.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        path = folder / f"IM{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
