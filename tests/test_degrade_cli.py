"""``srgan-med degrade`` through Typer's CliRunner on a tiny synthetic NIfTI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import linear_mapping_items, modality_values, real_world_series, real_world_values
from typer.testing import CliRunner

from srgan_med.cli import app
from srgan_med.degrade import downsampled_affine


@pytest.fixture
def ct_nifti(tmp_path):
    rng = np.random.default_rng(0)
    volume = np.full((32, 32, 12), -1000, dtype=np.int16)
    volume[6:26, 6:26, :] = rng.integers(-100, 200, (20, 20, 12)).astype(np.int16)
    affine = np.diag([0.8, 0.8, 1.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path, affine


def run(*args):
    result = CliRunner().invoke(app, ["degrade", *map(str, args)])
    return result


def test_degrade_writes_lr_with_correct_geometry_and_preview(ct_nifti, tmp_path):
    source, affine = ct_nifti
    output, preview = tmp_path / "lr.nii.gz", tmp_path / "preview.png"
    result = run(source, "-o", output, "--scale", 4, "--fwhm-mm", 1.5, "--noise", 0, "--preview", preview)
    assert result.exit_code == 0, result.output
    written = nib.load(output)
    assert written.shape == (8, 8, 12)
    np.testing.assert_allclose(written.affine, downsampled_affine(affine, (4, 4, 1)), atol=1e-5)
    data = np.asarray(written.dataobj, dtype=np.float64)
    assert data[0, 0, 0] == pytest.approx(-1000, abs=1)  # background stays air, in HU
    assert -100 <= data[4, 4, 6] <= 200  # tissue stays tissue
    from skimage.io import imread

    picture = imread(preview)
    assert picture.shape[:2] == (400, 1050)  # a labelled figure (it was a bare 1-pixel-per-voxel strip)


def test_thick_slices_and_same_seed_same_output(ct_nifti, tmp_path):
    source, affine = ct_nifti
    first, second = tmp_path / "a.nii", tmp_path / "b.nii"
    for path in (first, second):
        result = run(
            source, "-o", path, "--scale", 2, "--slice-thickness-mm", 5, "--slice-gap-mm", 1, "--seed", 3
        )
        assert result.exit_code == 0, result.output
    a, b = nib.load(first), nib.load(second)
    assert a.shape == (16, 16, 2)
    np.testing.assert_allclose(np.linalg.norm(a.affine[:3, :3], axis=0), [1.6, 1.6, 6.0], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def test_user_errors_are_one_line_exit_2(ct_nifti, tmp_path):
    source, _ = ct_nifti
    output = tmp_path / "lr.nii.gz"
    assert run(source, "-o", output, "--scale", 2).exit_code == 0
    refused = run(source, "-o", output, "--scale", 2)
    assert refused.exit_code == 2 and "overwrite" in refused.output
    thin = run(source, "-o", tmp_path / "x.nii.gz", "--slice-thickness-mm", 0.5)
    assert thin.exit_code == 2 and "through_plane.slice_thickness_mm" in thin.output
    bad_preset = run(source, "-o", tmp_path / "y.nii.gz", "--preset", "pet")
    assert bad_preset.exit_code == 2 and "preset" in bad_preset.output
    assert "Traceback" not in thin.output + bad_preset.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fwhm-mm", "nan"], "--fwhm-mm: must be a finite number"),  # named the config key
        (["--noise", "inf"], "--noise: must be a finite number"),  # was caught only at writing
        # 1e4 mm on a 64-voxel scan asked for 77 GB, then "internal error"
        (["--fwhm-mm", "1e4"], "PSF of 10000 mm FWHM is wider than the scan's in-plane field of view (25.6"),
        (["--fwhm-mm", "1e9", "--psf", "box"], "is wider than the scan's in-plane field of view"),
        # a fraction of the range: 5 (meant as 5%?) was five times the range
        (["--noise", "5", "--modality", "MR"], "--noise: this preset's noise is a fraction of the intensity"),
        (["--slice-gap-mm", "5"], "a gap between simulated slices needs slice_thickness_mm"),  # was ignored
        (["--slice-thickness-mm", "inf"], "through_plane.slice_thickness_mm: must be a positive number"),
        (["--slice-thickness-mm", "1000"], "ct.nii.gz: 12 slices of 1 mm cannot hold one 1000 mm slice"),
    ],
)
def test_impossible_values_are_refused_before_any_work(ct_nifti, tmp_path, args, message):
    source, _ = ct_nifti
    result = run(source, "-o", tmp_path / "lr.nii.gz", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "lr.nii.gz").exists()


def test_scan_and_preview_are_written_both_or_neither(ct_nifti, tmp_path):
    """A preview that cannot be written left the scan written and an error (something partial)."""
    source, _ = ct_nifti
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the preview's folder would be")
    result = run(source, "-o", tmp_path / "lr.nii.gz", "--preview", blocked / "preview.png")
    assert result.exit_code == 2 and "preview.png" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "ct.nii.gz"]
    (tmp_path / "old.png").write_text("an earlier preview")
    exists = run(source, "-o", tmp_path / "lr.nii.gz", "--preview", tmp_path / "old.png")
    assert exists.exit_code == 2 and "old.png: exists already" in exists.output
    assert not (tmp_path / "lr.nii.gz").exists()
    text = run(source, "-o", tmp_path / "lr.nii.gz", "--preview", tmp_path / "preview.txt")
    assert text.exit_code == 2  # matplotlib knows no .txt format: it was an internal error (KeyError)
    assert (
        text.output.strip() == f"error: --preview: {tmp_path / 'preview.txt'}: give the picture a .png name"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "ct.nii.gz", "old.png"]


def test_an_output_name_of_no_format_is_refused_before_the_input_is_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not a scan: reading it would fail, but the output is checked first")
    result = run(tmp_path / "notes.txt", "-o", tmp_path / "lr.png")
    assert result.exit_code == 2 and "lr.png: cannot tell the output format" in result.output


def test_fwhm_fixes_the_psf_family_for_every_seed(ct_nifti, tmp_path):
    """The presets draw a PSF family per seed: --fwhm-mm applied only where gaussian or box came up."""
    source, _ = ct_nifti
    for seed in range(4):
        result = run(
            source, "-o", tmp_path / f"g{seed}.nii.gz", "--scale", 2, "--fwhm-mm", 1.5, "--seed", seed
        )
        assert (
            result.exit_code == 0
            and "'blur': {'profile': 'gaussian', 'fwhm_mm': [1.5, 1.5]}" in result.stderr
        )
    box = run(source, "-o", tmp_path / "box.nii.gz", "--scale", 2, "--fwhm-mm", 1.5, "--psf", "box")
    assert box.exit_code == 0 and "'blur': {'profile': 'box', 'fwhm_mm': [1.5, 1.5]}" in box.stderr
    bicubic = run(source, "-o", tmp_path / "bicubic.nii.gz", "--scale", 2, "--psf", "bicubic", "--seed", 2)
    assert bicubic.exit_code == 0 and "'profile': 'bicubic'" in bicubic.stderr
    for args, message in (
        (
            ["--fwhm-mm", 1, "--psf", "bicubic"],
            "--fwhm-mm sets the width of a gaussian or box PSF, not of --psf bicubic",
        ),
        (["--psf", "airy"], "--psf: must be one of gaussian, box, bicubic, none, got 'airy'"),
    ):
        refused = run(source, "-o", tmp_path / "x.nii.gz", *args)
        assert refused.exit_code == 2 and message in refused.stderr and not (tmp_path / "x.nii.gz").exists()


def test_thick_slices_of_a_float32_spacing_keep_the_last_slab(tmp_path):
    """0.7 mm is 0.69999999 in a float32 header: 20 slices made 3 slabs of 3.5 mm, not 4."""
    volume = np.zeros((16, 16, 20), dtype=np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 0.7, 1.0])), tmp_path / "thin.nii.gz")
    result = run(tmp_path / "thin.nii.gz", "-o", tmp_path / "thick.nii.gz", "--scale", 1,
                 "--slice-thickness-mm", 3.5, "--noise", 0, "--modality", "CT")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "thick.nii.gz").shape == (16, 16, 4)


def test_the_largest_seed_the_option_takes_runs(ct_nifti, tmp_path):
    """Seeds above 4294966 overflowed numpy's generator (an internal error)."""
    source, _ = ct_nifti
    outputs = [tmp_path / f"lr{seed}.nii.gz" for seed in (2**29 - 1, 2**29 - 2)]
    for output, seed in zip(outputs, (2**29 - 1, 2**29 - 2), strict=True):
        result = run(source, "-o", output, "--scale", 2, "--seed", seed)
        assert result.exit_code == 0, result.output
    first, second = (np.asarray(nib.load(p).dataobj) for p in outputs)
    assert not np.array_equal(first, second)


def test_a_dicom_adc_map_keeps_its_real_world_value_mapping(tmp_path):
    """An ADC map whose slices each have their own rescale (and RWVM to match): the degraded series
    stores other values, and its RealWorldValueMappingSequence still gives ADC in um2/s."""
    slope, intercept = 1e-3, 0.0  # 10^-3 mm2/s of the modality values, whatever the slice's rescale
    rescale = [(1.0, 0.0), (0.5, 4.0), (2.0, -2.0), (0.25, 1.0)]
    units = {"LUTLabel": "ADC", "MeasurementUnitsCodeSequence": ("mm2/s", "UCUM", "mm2/s")}
    items = linear_mapping_items(rescale, slope, intercept, units, last=4095)
    stored = np.random.default_rng(0).integers(200, 3000, (4, 32, 32))
    source = real_world_series(tmp_path / "adc", stored, rescale, items)
    result = run(source, "-o", tmp_path / "lr", "--scale", 2, "--noise", 0)
    assert result.exit_code == 0, result.output
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "lr").iterdir())]
    assert len(written) == 4 and written[0].Rows == 16
    for ds in written:
        (item,) = ds.RealWorldValueMappingSequence
        assert item.LUTLabel == "ADC" and item.MeasurementUnitsCodeSequence[0].CodeValue == "mm2/s"
        np.testing.assert_allclose(real_world_values(ds), slope * modality_values(ds) + intercept, rtol=1e-12)


def test_thick_slices_on_a_tilted_grid_are_measured_between_slice_planes(tmp_path):
    """20 degrees of gantry tilt: steps of 1.0 mm along the sheared column are 0.940 mm apart as
    planes. 3 mm slabs with 1 mm gaps came out 2.819 mm thick and 3.759 mm apart."""
    from srgan_med.io.geometry import plane_spacing

    tilt = np.radians(20.0)
    affine = np.array([[0.8, 0, 0, 0], [0, 0.8, np.sin(tilt), 0], [0, 0, np.cos(tilt), 0], [0, 0, 0, 1.0]])
    volume = np.random.default_rng(0).integers(-100, 200, (16, 16, 40)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "tilted.nii.gz")
    args = ["--scale", 1, "--slice-thickness-mm", 3, "--slice-gap-mm", 1, "--noise", 0, "--modality", "CT"]
    result = run(tmp_path / "tilted.nii.gz", "-o", tmp_path / "dicom", *args)
    assert result.exit_code == 0, result.output
    first = pydicom.dcmread(sorted((tmp_path / "dicom").iterdir())[0])
    assert float(first.SliceThickness) == 3.0
    assert float(first.SpacingBetweenSlices) == pytest.approx(4.0, abs=1e-5)
    result = run(tmp_path / "tilted.nii.gz", "-o", tmp_path / "thick.nii.gz", *args)
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "thick.nii.gz").affine
    assert plane_spacing(written, 2) == pytest.approx(4.0, abs=1e-5)
    np.testing.assert_allclose(written[:3, 2] / np.linalg.norm(written[:3, 2]), affine[:3, 2], atol=1e-6)


def test_seeds_equal_modulo_2_to_the_29_are_not_taken(ct_nifti, tmp_path):
    """(seed * 1000 + step) % 2**32 gives seeds 0 and 2**29 the same streams: the option stops below
    2**29; the streams themselves are kept, as every documented result was drawn from them."""
    from srgan_med.degrade.pipeline import _step_state

    source, _ = ct_nifti
    refused = run(source, "-o", tmp_path / "lr.nii.gz", "--seed", 2**29)
    assert refused.exit_code == 2 and "--seed" in refused.output and not (tmp_path / "lr.nii.gz").exists()
    legacy = np.random.RandomState(7 * 1000 + 3).randint(0, 2**31 - 1, 4)
    np.testing.assert_array_equal(_step_state(7, 3).randint(0, 2**31 - 1, 4), legacy)


def test_a_scan_sliced_across_another_axis_is_said(tmp_path):
    """A sagittal acquisition stored with its 2.5 mm slices along voxel axis 0: the preset's in-plane
    axes 0 and 1 put the in-plane blur and x4 across its slices (10 x 2.4 x 0.6 mm) without a word."""
    volume = np.random.default_rng(0).integers(0, 300, (8, 32, 32)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([2.5, 0.6, 0.6, 1.0])), tmp_path / "sagittal.nii.gz")
    result = run(tmp_path / "sagittal.nii.gz", "-o", tmp_path / "lr.nii.gz", "--scale", 2, "--modality", "MR")
    assert result.exit_code == 0, result.output
    said = "the in-plane axes are voxel axes 0 and 1 (2.5 x 0.6 mm), but axis 2 (0.6 mm) is finer"
    assert said in result.output
    nib.save(nib.Nifti1Image(volume.T.copy(), np.diag([0.6, 0.6, 2.5, 1.0])), tmp_path / "axial.nii.gz")
    axial = run(tmp_path / "axial.nii.gz", "-o", tmp_path / "lr2.nii.gz", "--scale", 2, "--modality", "MR")
    assert axial.exit_code == 0 and "in-plane axes" not in axial.output, axial.output


def test_voxels_that_fill_no_whole_block_are_said(tmp_path):
    """101 voxels at x4: 25 blocks cover 100; the last one was left out without a word."""
    volume = np.random.default_rng(0).integers(-100, 200, (101, 32, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), tmp_path / "odd.nii.gz")
    result = run(tmp_path / "odd.nii.gz", "-o", tmp_path / "lr.nii.gz", "--scale", 4, "--modality", "CT")
    assert result.exit_code == 0, result.output
    assert "the last 1 voxel(s) along axis 0 fill no whole block of 4: left out" in result.output
    assert "along axis 1" not in result.output and nib.load(tmp_path / "lr.nii.gz").shape == (25, 8, 3)
