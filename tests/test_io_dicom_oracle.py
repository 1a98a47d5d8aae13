"""DICOM geometry against the reference converter dcm2niix: affine to 1e-3 mm, voxels exactly."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_SCANS, dcm2niix, pydicom_data_files, pydicom_test_files

from srgan_med.errors import InputError
from srgan_med.io import load_scan
from srgan_med.io.dicom_write import write_dicom_series


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(4)
    rotation[[i, i, j, j], [i, j, i, j]] = [c, -s, s, c]
    return rotation


_SPACING = np.diag([0.7, 0.8, 2.5, 1.0])
# RAS affines (before translation) for each slice orientation; "descending" flips the slice axis.
_ORIENTATIONS = {
    "axial": np.diag([-1.0, -1.0, 1.0, 1.0]) @ _SPACING,
    "coronal": np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]) @ _SPACING,
    "sagittal": np.array([[0.0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]) @ _SPACING,
    "oblique": _rotation(0, 20) @ _rotation(2, 15) @ np.diag([-1.0, -1.0, 1.0, 1.0]) @ _SPACING,
}


def _source_volume(name: str, small_ct_volume) -> np.ndarray:
    if name == "ct":
        return small_ct_volume[0]
    path = SHARED_SCANS / "mr_head_t2w.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared MR scan not available at {SHARED_SCANS}")
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj)[90:130, 100:136, 25:35].astype(np.int16)


def _shuffle_names(folder: Path, seed: int) -> None:
    """Give the files random names so listing order says nothing about slice order."""
    files = sorted(folder.iterdir())
    names = [f"{random.Random(seed + n).getrandbits(40):x}" for n in range(len(files))]
    random.Random(seed).shuffle(names)
    for file, name in zip(files, names, strict=True):
        os.replace(file, folder / name)


@pytest.mark.parametrize("source", ["ct", "mr"])
@pytest.mark.parametrize("orientation", sorted(_ORIENTATIONS))
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_written_series_match_dcm2niix(tmp_path, small_ct_volume, source, orientation, descending):
    volume = _source_volume(source, small_ct_volume)
    affine = _ORIENTATIONS[orientation].copy()
    if descending:
        affine[:, 2] *= -1
    affine[:3, 3] = [12.5, -30.25, 41.0]
    folder = tmp_path / "series"
    write_dicom_series(volume, affine, folder, modality="CT" if source == "ct" else "MR")
    _shuffle_names(folder, seed=len(orientation))

    ours = load_scan(folder)
    reference = dcm2niix(folder, tmp_path / "ref")

    np.testing.assert_allclose(ours.affine.numpy(), reference.affine, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(ours[0].numpy(), np.asarray(reference.dataobj))
    # and it is the volume we wrote, on the same world grid: the reader orders slices along the DICOM
    # normal, so its k axis may run opposite to ours, with the affine saying so.
    flipped = affine.copy()
    flipped[:3, 3] += affine[:3, 2] * (volume.shape[2] - 1)
    flipped[:, 2] *= -1
    if np.allclose(ours.affine.numpy(), affine, atol=1e-3):
        np.testing.assert_array_equal(ours[0].numpy(), volume)
    else:
        np.testing.assert_allclose(ours.affine.numpy(), flipped, atol=1e-3)
        np.testing.assert_array_equal(ours[0].numpy(), volume[:, :, ::-1])


def test_enhanced_multiframe_ct_matches_dcm2niix(tmp_path):
    path = pydicom_data_files() / "eCT_Supplemental.dcm"
    ours = load_scan(path)
    reference = dcm2niix(path, tmp_path / "ref", single_file=True)
    assert ours.shape[1:] == reference.shape
    np.testing.assert_allclose(ours.affine.numpy(), reference.affine, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(ours[0].numpy(), np.asarray(reference.dataobj))
    assert ours.meta["modality"] == "CT" and ours.meta["units"] == "US"  # a perfusion map: RescaleType US


def test_pydicom_shipped_ct_series_matches_dcm2niix(tmp_path):
    folder = pydicom_test_files() / "dicomdirtests" / "98892001" / "CT5N"
    ours = load_scan(folder)
    reference = dcm2niix(folder, tmp_path / "ref")
    np.testing.assert_allclose(ours.affine.numpy(), reference.affine, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(ours[0].numpy(), np.asarray(reference.dataobj))


def test_gantry_tilt_is_kept_exactly_in_the_affine(tmp_path, small_ct_volume, caplog):
    import pydicom

    volume = small_ct_volume[0]
    sheared = np.diag([-0.7, 0.8, 2.5, 1.0])  # k runs along the DICOM normal: no reordering
    sheared[1, 2] = 2.5 * np.tan(np.deg2rad(12))  # each slice shifted along y: a 12 degree tilt
    written_files = write_dicom_series(volume, sheared, tmp_path / "tilted", modality="CT")
    # PS3.3: SpacingBetweenSlices along the normal (2.5 mm), not between positions (2.556 mm)
    spacing = [float(pydicom.dcmread(f, stop_before_pixels=True).SpacingBetweenSlices) for f in written_files]
    assert spacing == pytest.approx([2.5] * len(written_files), abs=1e-6)
    scan = load_scan(tmp_path / "tilted")
    assert scan.meta["gantry_tilt_deg"] == pytest.approx(12, abs=0.01)
    np.testing.assert_allclose(scan.affine.numpy(), sheared, atol=1e-4)
    # As NIfTI: the sform holds the shear; no qform (a rotation, it could only approximate it)
    import nibabel as nib

    from srgan_med.io import save_scan

    written = nib.load(save_scan(scan, tmp_path / "tilted.nii.gz"))
    assert int(written.header["qform_code"]) == 0 and int(written.header["sform_code"]) > 0
    assert "ITK-based tools (SimpleITK, 3D Slicer, ANTs) refuse it" in caplog.text
    np.testing.assert_allclose(written.get_sform(), sheared, atol=1e-4)
    np.testing.assert_allclose(load_scan(tmp_path / "tilted.nii.gz").affine.numpy(), sheared, atol=1e-4)


def test_uneven_spacing_is_an_error(tmp_path, small_ct_volume):
    folder = tmp_path / "gap"
    write_dicom_series(small_ct_volume[0], np.diag([-0.7, -0.8, 2.5, 1.0]), folder, modality="CT")
    sorted(folder.iterdir())[5].unlink()  # a missing slice
    with pytest.raises(InputError, match="uneven slice spacing"):
        load_scan(folder)


def test_duplicate_positions_are_an_error(tmp_path, small_ct_volume):
    folder = tmp_path / "dup"
    write_dicom_series(small_ct_volume[0], np.diag([-0.7, -0.8, 2.5, 1.0]), folder, modality="CT")
    write_dicom_series(small_ct_volume[0], np.diag([-0.7, -0.8, 2.5, 1.0]), tmp_path / "echo2", modality="CT")
    import pydicom

    series_uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    for n, file in enumerate(sorted((tmp_path / "echo2").iterdir())):
        ds = pydicom.dcmread(file)
        ds.SeriesInstanceUID = series_uid
        ds.save_as(folder / f"echo2_{n}.dcm")
    with pytest.raises(InputError, match="share a position"):
        load_scan(folder)


def test_every_shipped_series_loads_like_dcm2niix_or_is_refused(tmp_path):
    """Walk every series in pydicom's DICOMDIR test tree: a series we accept must match dcm2niix."""
    import shutil

    from srgan_med.io.dicom_read import find_series

    compared = refused = 0
    for n, series in enumerate(find_series(pydicom_test_files() / "dicomdirtests")):
        folder = tmp_path / f"s{n}"
        folder.mkdir()
        for file in series.files:
            shutil.copy(file, folder / f"{file.parent.name}_{file.name}")
        try:
            ours = load_scan(folder)
        except InputError as error:
            assert str(folder) in str(error)
            refused += 1
            continue
        if ours.meta["geometry_assumed"]:  # radiographs: no patient geometry to compare
            assert ours.shape[3] == 1
            continue
        reference = dcm2niix(folder, tmp_path / f"ref{n}")
        np.testing.assert_allclose(ours.affine.numpy(), reference.affine, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(ours[0].numpy(), np.asarray(reference.dataobj).reshape(ours.shape[1:]))
        compared += 1
    assert compared >= 5 and refused >= 2, (compared, refused)
