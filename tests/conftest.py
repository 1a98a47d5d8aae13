"""Shared fixtures: real data locations (skipped with a reason when absent) and tiny scans."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SCANS = Path(os.environ.get("SRGAN_MED_SHARED", REPO.parent / "shared" / "data" / "scans"))


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module, executed afresh. It is registered in ``sys.modules``
    before it runs (a dataclass resolves its annotations through it, and a spawned child imports it
    by name), and its folder goes on ``sys.path`` for the helpers the scripts import beside them."""
    folder = REPO / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def shared_scan(name: str) -> Path:
    """Path of a public scan in ../shared/data/scans, or skip the test saying why."""
    path = SHARED_SCANS / name
    if not path.is_file():
        pytest.skip(
            f"shared scan {name} not available at {SHARED_SCANS} (only present in the team's workspace)"
        )
    return path


def pydicom_test_files() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files"


def pydicom_data_files() -> Path:
    data_store = pytest.importorskip("data_store", reason="pydicom-data (test extra) not installed")
    return Path(data_store.__file__).parent / "data"


def dcm2niix(source: Path, out_dir: Path, single_file: bool = False):
    """Run the reference converter; returns the nibabel image it wrote (one volume expected)."""
    import nibabel as nib

    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix (test extra) not installed")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = (
        [exe, "-z", "n", "-f", "ref", "-o", str(out_dir)]
        + (["-s", "y"] if single_file else [])
        + [str(source)]
    )
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    written = sorted(out_dir.glob("*.nii"))
    assert len(written) == 1, f"dcm2niix wrote {written}"
    return nib.load(written[0])


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


@pytest.fixture
def small_ct_volume() -> tuple[np.ndarray, np.ndarray]:
    """A real CT crop (int16 HU) when the shared scans are present, else a synthetic phantom."""
    path = SHARED_SCANS / "ct_chest_abdomen_aorta_1p5mm.nii.gz"
    if path.is_file():
        import nibabel as nib

        image = nib.load(path)
        return np.asarray(image.dataobj)[30:70, 40:72, 60:72].astype(np.int16), image.affine
    rng = np.random.default_rng(0)
    volume = np.full((40, 32, 12), -1000, np.int16)
    volume[5:35, 4:28, :] = rng.integers(-100, 300, size=(30, 24, 12))
    return volume, np.diag([1.5, 1.5, 1.5, 1.0])


def linear_mapping_items(
    rescale: list[tuple[float, float]], slope: float, intercept: float, fields: dict, *, first=0, last=65535
) -> list[list[dict]]:
    """Per slice, one RealWorldValueMappingSequence item (``fields``: label, units...) mapping that
    slice's stored values to ``slope * v + intercept`` of its modality values ``v`` (the slice's
    ``rescale``): every slice the same real-world mapping, through its own rescale."""
    return [
        [
            {
                **fields,
                "RealWorldValueSlope": slope * rescale_slope,
                "RealWorldValueIntercept": slope * rescale_intercept + intercept,
                "RealWorldValueFirstValueMapped": first,
                "RealWorldValueLastValueMapped": last,
            }
        ]
        for rescale_slope, rescale_intercept in rescale
    ]


def real_world_series(
    folder: Path,
    stored: np.ndarray,
    rescale: list[tuple[float, float]],
    items: list[list[dict]],
    *,
    modality: str = "MR",
) -> Path:
    """A classic single-frame DICOM series of ``stored`` (``(slices, rows, columns)`` uint16) with
    each slice's RescaleSlope/Intercept and RealWorldValueMappingSequence items (keyword -> value;
    ``RealWorldValueFirstValueMapped``/``LastValueMapped`` written as US, as PixelRepresentation 0
    says). Geometry and identity come from ``write_dicom_series``: 0.8 mm pixels, 2 mm apart."""
    import pydicom
    from pydicom.dataset import Dataset

    from srgan_med.io.dicom_write import write_dicom_series

    slices, rows, columns = stored.shape
    paths = write_dicom_series(
        np.zeros((columns, rows, slices), np.float32),
        np.diag([0.8, 0.8, 2.0, 1.0]),
        folder,
        modality=modality,
    )
    for path, pixels, (slope, intercept), slice_items in zip(paths, stored, rescale, items, strict=True):
        ds = pydicom.dcmread(path)
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        sequence = []
        for fields in slice_items:
            item = Dataset()
            for keyword, value in fields.items():
                if keyword == "RealWorldValueFirstValueMapped":
                    item.add_new(0x00409216, "US", value)
                elif keyword == "RealWorldValueLastValueMapped":
                    item.add_new(0x00409211, "US", value)
                elif keyword == "MeasurementUnitsCodeSequence":
                    unit = Dataset()
                    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = value
                    item.MeasurementUnitsCodeSequence = [unit]
                else:
                    setattr(item, keyword, value)
            sequence.append(item)
        if sequence:
            ds.RealWorldValueMappingSequence = sequence
        ds.save_as(path)
    return folder


def real_world_values(ds, position: int = 0) -> np.ndarray:
    """Real-world values of a single-frame image: its stored pixels through its
    RealWorldValueMappingSequence item ``position`` (which must cover them all)."""
    item = ds.RealWorldValueMappingSequence[position]
    stored = ds.pixel_array.astype(np.float64)
    assert (
        item.RealWorldValueFirstValueMapped
        <= stored.min()
        <= stored.max()
        <= item.RealWorldValueLastValueMapped
    )
    return stored * item.RealWorldValueSlope + item.RealWorldValueIntercept


def modality_values(ds) -> np.ndarray:
    """Stored pixels through RescaleSlope/Intercept."""
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
