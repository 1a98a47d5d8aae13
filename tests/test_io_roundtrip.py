"""Round trips (NIfTI -> NIfTI, DICOM series -> DICOM series), upscaled-grid geometry, safe writes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from conftest import (
    dcm2niix,
    linear_mapping_items,
    modality_values,
    pydicom_data_files,
    pydicom_test_files,
    real_world_series,
    real_world_values,
    shared_scan,
    write_nifti,
)
from monai.data import MetaTensor
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from srgan_med.errors import OutputExistsError
from srgan_med.io import load_scan, rescaled_affine, save_scan
from srgan_med.io.dicom_write import write_dicom_series


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*index, 1.0]))[:3]


def test_nifti_roundtrip_keeps_values_dtype_and_affine(tmp_path):
    import nibabel as nib

    source = shared_scan("ct_chest_pulmonary_1p5mm.nii.gz")
    scan = load_scan(source)
    assert scan.meta["modality"] == "CT" and scan.meta["original_dtype"] == "int16"
    out = save_scan(scan, tmp_path / "copy.nii.gz")
    original, copy = nib.load(source), nib.load(out)
    assert copy.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(original.dataobj))
    np.testing.assert_allclose(copy.affine, original.affine, atol=1e-5)
    assert copy.header.get_xyzt_units()[0] == "mm"


def test_uint8_mr_roundtrip(tmp_path):
    scan = load_scan(shared_scan("mr_head_t1_1p6mm.nii.gz"))
    assert scan.meta["modality"] == "MR" and scan.meta["original_dtype"] == "uint8"
    back = load_scan(save_scan(scan, tmp_path / "t1.nii"))
    np.testing.assert_array_equal(back.numpy(), scan.numpy())
    np.testing.assert_allclose(back.affine.numpy(), scan.affine.numpy(), atol=1e-5)


def test_nifti_2_is_written_back_as_nifti_2_and_nifti_1_as_nifti_1(tmp_path, small_ct_volume):
    """The output keeps the input's format, the NIfTI version included (NIfTI-2 holds sizes past
    32767 and 64-bit fields; it had been written back as NIfTI-1)."""
    import nibabel as nib

    volume, affine = small_ct_volume
    nib.save(nib.Nifti2Image(volume, affine), tmp_path / "two.nii.gz")
    for name, header_class in (("two", nib.Nifti2Header), ("one", nib.Nifti1Header)):
        source = tmp_path / f"{name}.nii.gz"
        if name == "one":
            write_nifti(source, volume, affine)
        scan = load_scan(source)
        written = nib.load(save_scan(scan, tmp_path / f"{name}_copy.nii.gz"))
        assert type(written.header) is header_class
        np.testing.assert_array_equal(np.asarray(written.dataobj), volume)
        np.testing.assert_allclose(written.affine, affine, atol=1e-5)


def test_float_values_that_do_not_fit_the_dtype_are_written_as_float(tmp_path, small_ct_volume):
    volume, affine = small_ct_volume
    scan = load_scan(write_nifti(tmp_path / "ct.nii.gz", volume, affine))
    scan = scan * 0 + 40000.5  # beyond int16: must not wrap around
    back = load_scan(save_scan(scan, tmp_path / "big.nii.gz", reference=load_scan(tmp_path / "ct.nii.gz")))
    assert back.meta["original_dtype"] == "float32"
    assert float(back.max()) == 40000.5


@pytest.mark.parametrize(
    ("stored", "slope", "intercept", "expected"),
    [
        (np.int16, 1e-6, 0.0, "float32"),  # an ADC map in mm^2/s: stored integers x 1e-6
        (np.int16, 0.5, 10.0, "float32"),  # half units
        (np.int16, 1.0, -1024.0, "int16"),  # CT written with an intercept: still whole HU
        (np.uint8, 2.0, 0.0, "int16"),  # whole numbers past uint8's range
        (np.uint8, 1.0, 1.0, "uint8"),  # whole numbers that uint8 still holds
    ],
)
def test_scaled_nifti_keeps_its_values(tmp_path, stored, slope, intercept, expected):
    """scl_slope/scl_inter: nibabel leaves the loaded header's fields NaN and keeps them on the array
    proxy, so the scaling went unseen and an ADC map (int16 x 1e-6) was written back rounded to
    integers: all zeros."""
    import nibabel as nib

    raw = np.zeros((24, 20, 3), dtype=stored)
    raw[4:20, 4:16] = np.random.default_rng(0).integers(1, 250, (16, 12, 3))
    image = nib.Nifti1Image(raw, np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header.set_slope_inter(slope, intercept)
    source = tmp_path / "scaled.nii.gz"
    image.to_filename(source)
    physical = nib.load(source).get_fdata()
    assert physical.max() > physical.min()
    scan = load_scan(source, modality="MR")
    assert scan.meta["original_dtype"] == expected
    written = nib.load(save_scan(scan, tmp_path / "copy.nii.gz"))
    assert written.get_data_dtype() == np.dtype(expected)
    np.testing.assert_allclose(written.get_fdata(), physical, rtol=1e-6, atol=1e-9)


def test_sform_is_kept_when_pixdim_disagrees_with_it(tmp_path):
    """MONAI's NibabelReader.read replaced the sform by the qform whenever the sform's voxel sizes
    differed from pixdim: a registered image came back at another size and place (here 1 mm
    voxels instead of 0.8 x 0.9 x 3 mm, and no left-right flip)."""
    import nibabel as nib

    sform = np.diag([-0.8, 0.9, 3.0, 1.0])
    sform[:3, 3] = [40.0, -30.0, 20.0]
    image = nib.Nifti1Image(np.arange(24 * 20 * 6, dtype=np.int16).reshape(24, 20, 6), sform)
    image.header.set_zooms((1.0, 1.0, 1.0))  # stale pixdim
    nib.save(image, tmp_path / "registered.nii.gz")
    source = nib.load(tmp_path / "registered.nii.gz")
    np.testing.assert_allclose(source.affine, sform, atol=1e-6)
    scan = load_scan(tmp_path / "registered.nii.gz", modality="MR")
    np.testing.assert_allclose(scan.affine.numpy(), sform, atol=1e-6)
    upscaled = np.repeat(np.repeat(scan[0].numpy(), 2, axis=0), 2, axis=1)
    out = torch.from_numpy(upscaled)[None]
    written = nib.load(
        save_scan(
            MetaTensor(out, affine=torch.as_tensor(rescaled_affine(sform, (2, 2, 1)))),
            tmp_path / "up.nii.gz",
            reference=scan,
        )
    )
    # The field of view is the input's: the outer corners coincide.
    for corner in ((-0.5, -0.5, -0.5), (23.5, 19.5, 5.5)):
        output_corner = [2 * corner[0] + 0.5, 2 * corner[1] + 0.5, corner[2]]
        expected = _world(source.affine, corner)
        np.testing.assert_allclose(_world(written.affine, output_corner), expected, atol=1e-4)


def test_a_qform_apart_from_the_sform_is_mapped_to_the_output_grid_and_header_fields_are_kept(tmp_path):
    """A scanner qform beside a registered sform was replaced by the sform on output, so a viewer
    reading the qform put the output 95 mm from the input. dim_info, slice timing, toffset and
    comment extensions were dropped; a 2-D input came back 3-D."""
    import nibabel as nib

    sform = np.diag([0.8, 0.9, 3.0, 1.0])
    qform = sform.copy()
    qform[:3, 3] += 95.0
    volume = np.arange(24 * 20 * 6, dtype=np.int16).reshape(24, 20, 6)
    image = nib.Nifti1Image(volume, sform)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=2)
    image.header.set_dim_info(freq=1, phase=0, slice=2)
    image.header["slice_code"], image.header["slice_end"], image.header["slice_duration"] = 1, 5, 0.05
    image.header["toffset"] = 3.0
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"motion-corrected"))
    nib.save(image, tmp_path / "two_forms.nii")
    scan = load_scan(tmp_path / "two_forms.nii", modality="MR")
    out = MetaTensor(
        torch.from_numpy(np.repeat(np.repeat(volume, 2, 0), 2, 1).astype(np.float32))[None],
        affine=torch.as_tensor(rescaled_affine(sform, (2, 2, 1))),
    )
    written = nib.load(save_scan(out, tmp_path / "up.nii", reference=scan))
    header = written.header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 1)
    expected_qform = qform @ np.linalg.solve(sform, written.affine)
    np.testing.assert_allclose(written.get_qform(), expected_qform, atol=1e-4)
    corner = [-0.5, -0.5, -0.5, 1.0]  # the outer corner of voxel 0, the same point on both grids
    np.testing.assert_allclose(written.get_qform() @ corner, qform @ corner, atol=1e-4)
    assert header.get_dim_info() == (1, 0, 2)
    assert (int(header["slice_code"]), int(header["slice_end"])) == (1, 5)
    assert float(header["slice_duration"]) == pytest.approx(0.05) and float(header["toffset"]) == 3.0
    assert [e.get_content() for e in header.extensions] == [b"motion-corrected"]

    nib.save(nib.Nifti1Image(volume[:, :, 0], sform), tmp_path / "flat.nii")
    flat = load_scan(tmp_path / "flat.nii", modality="MR")
    assert tuple(flat.shape) == (1, 24, 20, 1)
    assert nib.load(save_scan(flat, tmp_path / "flat_copy.nii")).shape == (24, 20)


def test_dicom_series_roundtrip_makes_a_derived_series(tmp_path, small_ct_volume):
    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])
    write_dicom_series(volume, affine, tmp_path / "src", modality="CT")
    source_header = pydicom.dcmread(next((tmp_path / "src").iterdir()))
    scan = load_scan(tmp_path / "src")
    out = save_scan(scan, tmp_path / "derived", derivation="srgan-med test copy", description="copy")
    back = load_scan(out)
    np.testing.assert_array_equal(back.numpy(), scan.numpy())
    np.testing.assert_allclose(back.affine.numpy(), scan.affine.numpy(), atol=1e-4)
    written = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert len({ds.SOPInstanceUID for ds in written}) == len(written) == volume.shape[2]
    for ds in written:
        assert ds.SeriesInstanceUID != source_header.SeriesInstanceUID
        assert ds.StudyInstanceUID == source_header.StudyInstanceUID
        assert ds.PatientID == source_header.PatientID
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.DerivationDescription == "srgan-med test copy"
        assert ds.Modality == "CT"


@pytest.mark.parametrize("factors", [(2, 2, 1), (3, 4, 2), (4, 4, 1)])
@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_upscaled_grid_puts_a_landmark_where_it_was(tmp_path, small_ct_volume, factors, fmt):
    """A bright voxel upscaled by repetition must have the same world centre in the output."""
    volume, _ = small_ct_volume
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 2.0, 30], [0, 0, 0, 1.0]])
    volume = np.full_like(volume, -1000)
    landmark = (7, 11, 5)
    volume[landmark] = 2000
    source = write_nifti(tmp_path / "lr.nii.gz", volume, affine)
    low_res = load_scan(source)
    high = np.kron(volume, np.ones(factors, dtype=volume.dtype))  # each voxel -> a block
    from monai.data import MetaTensor

    high_res = MetaTensor(
        torch.from_numpy(high[None].astype(np.float32)),
        affine=torch.as_tensor(rescaled_affine(low_res.affine, factors)),
    )
    out = tmp_path / ("sr.nii.gz" if fmt == "nifti" else "sr_dicom")
    back = load_scan(save_scan(high_res, out, reference=low_res, derivation="upscaled"))
    bright = np.argwhere(back[0].numpy() > 1000)
    assert len(bright) == int(np.prod(factors))
    centre = np.mean([_world(back.affine.numpy(), b) for b in bright], axis=0)
    np.testing.assert_allclose(centre, _world(affine, landmark), atol=1e-3)
    if fmt == "dicom":  # the reference converter reads the same geometry
        reference = dcm2niix(out, tmp_path / "ref")
        np.testing.assert_allclose(reference.affine, back.affine.numpy(), atol=1e-3)


def test_existing_output_needs_overwrite_and_inputs_are_never_overwritten(tmp_path, small_ct_volume):
    source = write_nifti(tmp_path / "in.nii.gz", *small_ct_volume)
    scan = load_scan(source)
    before = source.read_bytes()
    with pytest.raises(OutputExistsError, match="input"):
        save_scan(scan, source, overwrite=True)
    assert source.read_bytes() == before
    out = save_scan(scan, tmp_path / "out.nii.gz")
    stamp = out.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_scan(scan, out)
    assert out.stat().st_mtime_ns == stamp
    save_scan(scan * 2, out, overwrite=True, reference=scan)
    assert float(load_scan(out).min()) == 2 * float(scan.min())
    # a DICOM folder is replaced whole, too
    folder = save_scan(scan, tmp_path / "dcm")
    save_scan(scan, folder, overwrite=True)
    assert len(list(folder.iterdir())) == scan.shape[3]
    # ...but not one holding a file srgan-med did not write: --overwrite deleted it with the folder
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"files srgan-med does not write \(notes.txt\)"):
        save_scan(scan, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine" and len(list(folder.iterdir())) == scan.shape[3] + 1
    # ...nor a series srgan-med did not write (a scanner's): its .dcm names alone let it be deleted
    scanner = tmp_path / "scanner"
    scanner.mkdir()
    for index, path in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        assert ds.ContributingEquipmentSequence[-1].Manufacturer == "srgan-med"
        if index:  # one slice of ours among the scanner's is not enough
            del ds.ContributingEquipmentSequence
        ds.save_as(scanner / path.name)
    with pytest.raises(OutputExistsError, match=r"scanner: a DICOM series srgan-med did not write \(IM00002"):
        save_scan(scan, scanner, overwrite=True)
    assert len(list(scanner.iterdir())) == scan.shape[3]
    (tmp_path / "empty").mkdir()
    save_scan(scan, tmp_path / "empty", overwrite=True)  # an empty folder holds nothing to lose


def test_failed_write_leaves_nothing_behind(tmp_path, small_ct_volume, monkeypatch):
    scan = load_scan(write_nifti(tmp_path / "in.nii.gz", *small_ct_volume))
    import srgan_med.io.dicom_write as dicom_write

    stored, calls = dicom_write._stored, []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # two slices are written: as if the user pressed Ctrl-C halfway through
            raise KeyboardInterrupt
        return stored(*args, **kwargs)

    monkeypatch.setattr(dicom_write, "_stored", broken)
    with pytest.raises(KeyboardInterrupt):
        save_scan(scan, tmp_path / "out_dicom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_load_scand_in_a_monai_pipeline(tmp_path, small_ct_volume):
    from monai.transforms import Compose

    from srgan_med.io.transforms import LoadScand

    path = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    item = Compose([LoadScand(keys="high_res")])({"high_res": str(path), "label": 3})
    assert item["label"] == 3
    assert tuple(item["high_res"].shape) == (1, *small_ct_volume[0].shape)
    np.testing.assert_allclose(item["high_res"].affine.numpy(), small_ct_volume[1], atol=1e-5)
    np.testing.assert_array_equal(item["high_res"][0].numpy(), small_ct_volume[0])


def test_nifti_writing_of_an_integer_scan_holds_no_extra_float_copy(tmp_path):
    """The writer rounds slab by slab: peak extra memory stays well under one float32 volume."""
    import tracemalloc

    from monai.data import MetaTensor

    from srgan_med.io import save_scan

    volume = np.random.default_rng(0).normal(0.0, 300.0, (128, 128, 96)).astype(np.float32)
    image = MetaTensor(torch.from_numpy(volume[None]), affine=torch.eye(4), meta={"original_dtype": "int16"})
    tracemalloc.start()
    save_scan(image, tmp_path / "ct.nii", fmt="nifti")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # int16 output (half a float32 volume) + slabs; a whole-volume rint alone would add a full float copy.
    assert peak < 0.8 * volume.nbytes, peak / volume.nbytes
    import nibabel as nib

    written = nib.load(tmp_path / "ct.nii")
    assert written.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.rint(volume).astype(np.int16))


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_nifti_files_do_not_depend_on_the_volume_memory_layout(tmp_path, dtype):
    """enhance hands the writer Fortran-ordered volumes; the file is byte for byte the C-order one's."""
    from monai.data import MetaTensor

    volume = np.random.default_rng(1).normal(0.0, 300.0, (20, 17, 40)).astype(np.float32)
    for name, array in (("c", np.ascontiguousarray(volume)), ("f", np.asfortranarray(volume))):
        image = MetaTensor(torch.from_numpy(array[None]), affine=torch.eye(4), meta={"original_dtype": dtype})
        save_scan(image, tmp_path / f"{name}.nii", fmt="nifti")
    assert (tmp_path / "c.nii").read_bytes() == (tmp_path / "f.nii").read_bytes()


def test_slabs_cover_the_volume_along_its_slowest_axis():
    from srgan_med.io.layout import slabs

    cases = (
        (np.zeros((40, 6, 5)), 0, 3),
        (np.zeros((6, 5, 40), order="F"), 2, 3),
        (np.zeros((3, 4, 5)), 0, 1),
    )
    for array, axis, count in cases:
        covered = np.zeros(array.shape, dtype=int)
        found = list(slabs(array.shape, array.strides, size=16))
        for slab in found:
            covered[slab] += 1
            assert all(s == slice(None) for a, s in enumerate(slab) if a != axis)
        assert (covered == 1).all() and len(found) == count


def test_dicom_writing_holds_no_whole_volume_copy(tmp_path):
    """Storage is chosen slab by slab and each slice converted on its own: the peak extra memory
    stays a fraction of the float32 volume (whole-volume float64 temporaries took 8x)."""
    import tracemalloc

    volume = np.asfortranarray(
        np.rint(np.random.default_rng(0).normal(0.0, 300.0, (128, 128, 96))).astype(np.float32)
    )
    tracemalloc.start()
    write_dicom_series(volume, np.diag([0.7, 0.7, 2.0, 1.0]), tmp_path / "series", modality="CT")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.5 * volume.nbytes, peak / volume.nbytes
    for k in (0, 47, 95):  # HU stored exactly (slope 1); rows run along -j, columns along i
        ds = pydicom.dcmread(tmp_path / "series" / f"IM{k + 1:05d}.dcm")
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        np.testing.assert_array_equal(ds.pixel_array, volume[:, ::-1, k].T)


def test_gzipped_nifti_is_read_through_isal_and_nibabel_is_left_as_it_was(
    tmp_path, small_ct_volume, monkeypatch
):
    """The read goes through ISA-L (the speed-up docs/benchmarks.md measures), gives nibabel's own
    voxels, and nibabel's opener table is back as it was afterwards, also after a failed read."""
    import nibabel as nib
    from isal import igzip
    from nibabel.openers import ImageOpener

    from srgan_med.errors import InputError

    opened = []
    real_open = igzip.open
    monkeypatch.setattr(igzip, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    before = dict(ImageOpener.compress_ext_map)
    path = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    scan = load_scan(path)
    assert opened and all(str(p) == str(path) for p in opened)
    np.testing.assert_array_equal(scan[0].numpy(), np.asarray(nib.load(path).dataobj, dtype=np.float32))
    assert ImageOpener.compress_ext_map == before
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_scan(broken)
    assert ImageOpener.compress_ext_map == before


def test_modality_guess_is_the_lower_tenth_of_a_percentile_without_sorting():
    from srgan_med.io.scan import _guess_modality

    rng = np.random.default_rng(0)
    for size in (1, 2, 1000, 1001, 12345):
        for _ in range(40):  # volumes around the threshold: exactly -500 HU counts as air
            weights = rng.dirichlet(np.ones(5))
            weights[:2] *= rng.choice([1.0, 0.01, 0.001])  # air shares about 0.1% as well
            weights /= weights.sum()
            volume = rng.choice([-1000.0, -500.0, -499.0, 0.0, 40.0], size=size, p=weights)
            expected = "CT" if np.percentile(volume, 0.1, method="lower") <= -500 else "MR"
            assert _guess_modality(volume.astype(np.float32)) == expected
    crop = np.full(100_000, 40.0, np.float32)  # an abdominal crop with 0.57% air was guessed MR
    crop[:570] = -1000.0
    assert _guess_modality(crop) == "CT"
    assert _guess_modality(np.r_[crop[570:], np.full(99, -1000.0, np.float32)]) == "MR"
    assert _guess_modality(np.full((4, 4, 4), -1000, np.int16)) == "CT"
    assert _guess_modality(np.zeros((4, 4, 4), np.uint8)) == "MR"


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int32, np.float32, np.float64])
def test_loaded_volumes_are_c_ordered_float32_with_the_stored_values(dtype):
    """NIfTI data arrive in Fortran order; the loaded tensor is C-ordered float32 either way."""
    from srgan_med.io.scan import _float32_c_order

    volume = np.asfortranarray(np.arange(7 * 5 * 3).reshape(7, 5, 3).astype(dtype))
    tensor = _float32_c_order(volume)
    assert tensor.dtype == torch.float32 and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.numpy(), volume.astype(np.float32))
    volume.flags.writeable = False  # torch.from_numpy would warn: the copy is numpy's then
    np.testing.assert_array_equal(_float32_c_order(volume).numpy(), volume.astype(np.float32))


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_gzipped_nifti_holds_the_same_bytes_on_any_number_of_cores(
    tmp_path, small_ct_volume, monkeypatch, cores
):
    """One core: ISA-L's single-stream writer; more: its threaded writer behind a forward-only
    seekable stream. Either way a standard gzip, mtime 0, of the bytes the .nii writer writes."""
    import gzip

    import srgan_med.io.nifti as nifti

    monkeypatch.setattr(nifti, "_available_cores", lambda: cores)
    scan = load_scan(write_nifti(tmp_path / "ct.nii", *small_ct_volume))
    plain = save_scan(scan, tmp_path / "plain.nii").read_bytes()
    data = save_scan(scan, tmp_path / f"packed{cores}.nii.gz").read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip, mtime 0: reproducible
    assert gzip.decompress(data) == plain


def test_forward_writer_allows_only_forward_seeks(tmp_path):
    import io

    from srgan_med.io.nifti import _ForwardWriter

    sink = io.BytesIO()
    sink.close = lambda: None  # keep the bytes readable after the writer closes its stream
    with _ForwardWriter(sink) as stream:
        stream.seek(0)
        stream.write(b"abc")
        assert stream.tell() == 3 and stream.seek(6) == 6 and stream.seek(2, io.SEEK_CUR) == 8
        stream.write(np.arange(2, dtype=np.int16))
        with pytest.raises(io.UnsupportedOperation, match="only seek forward"):
            stream.seek(1)
    assert sink.getvalue() == b"abc" + bytes(5) + np.arange(2, dtype=np.int16).tobytes()


def test_gzipped_reads_in_several_threads_put_nibabel_back_once(tmp_path, small_ct_volume):
    from concurrent.futures import ThreadPoolExecutor

    from nibabel.openers import ImageOpener

    before = dict(ImageOpener.compress_ext_map)
    path = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    expected = load_scan(path).numpy()
    with ThreadPoolExecutor(4) as pool:
        scans = list(pool.map(lambda _: load_scan(path).numpy(), range(16)))
    assert all(np.array_equal(scan, expected) for scan in scans)
    assert ImageOpener.compress_ext_map == before


@pytest.mark.parametrize(
    ("values", "integer_storage"),
    [
        (np.random.default_rng(1).uniform(0.0, 1e-6, (16, 16, 3)), False),  # were all stored as 0
        (np.random.default_rng(2).uniform(-5.0, 5.0, (16, 16, 3)), False),
        (np.rint(np.random.default_rng(3).normal(0.0, 300.0, (16, 16, 3))) + 1e-5, True),
    ],
)
def test_dicom_storage_keeps_small_values_and_exact_integers(tmp_path, values, integer_storage):
    volume, affine = values.astype(np.float32), np.diag([0.7, 0.7, 2.0, 1.0])
    write_dicom_series(volume, affine, tmp_path / "series", modality="MR")
    ds = pydicom.dcmread(tmp_path / "series" / "IM00001.dcm")
    assert (float(ds.RescaleSlope) == 1.0) == integer_storage
    loaded = load_scan(tmp_path / "series")
    # The reader orders slices its own way: bring its voxels back onto the written axes.
    to_written = ornt_transform(io_orientation(loaded.affine.numpy()), io_orientation(affine))
    back = apply_orientation(loaded[0].numpy(), to_written)
    step = np.ptp(volume) / 65534.0
    tolerance = 1e-3 if integer_storage else step  # rounding to integers, or half a scaled step
    np.testing.assert_allclose(back, volume, rtol=0, atol=tolerance)


@pytest.mark.parametrize(
    ("charset", "name", "description"),
    [("ISO_IR 192", "Иванов^Иван", "Грудная клетка"), ("ISO_IR 100", "Müller^Jörg", "Thorax ärztlich")],
)
def test_non_ascii_patient_and_study_text_survives_a_derived_series(
    tmp_path, small_ct_volume, charset, name, description
):
    """Copied text keeps its characters: the written series declares the character set it is in."""
    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])
    paths = write_dicom_series(volume[:, :, :3], affine, tmp_path / "src", modality="CT")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = charset
        ds.PatientName, ds.StudyDescription = name, description
        ds.save_as(path)
    out = save_scan(load_scan(tmp_path / "src"), tmp_path / "derived", derivation="copy", description="copy")
    for path in sorted(out.iterdir()):
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == name and ds.StudyDescription == description
        assert ds.SpecificCharacterSet == "ISO_IR 192"
    plain = save_scan(load_scan(tmp_path / "derived"), tmp_path / "again", description="ascii")
    assert pydicom.dcmread(next(plain.iterdir())).SpecificCharacterSet == "ISO_IR 192"  # still non-ASCII


_INTERRUPTED_WRITE = """
import os, signal, sys, threading
from pathlib import Path
from srgan_med.io import nifti
if nifti._available_cores() < 2:
    print("single-threaded"); sys.exit(0)
def interrupt(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
block = os.urandom(1 << 20)
try:
    with nifti._gzip_writer(Path(sys.argv[1])) as stream:
        for _ in range(5000):
            stream.write(block)
except KeyboardInterrupt:
    print("interrupted", threading.active_count())
"""


@pytest.mark.parametrize("after", [0.05, 0.1, 0.2, 0.3])
def test_ctrl_c_while_writing_a_gz_ends_at_once(tmp_path, after):
    """Ctrl-C inside ISA-L's threaded gzip writer hung the process in 4 of 7 tries: leaving the
    ``with`` block flushed, and waited for a block counted but never queued."""
    pytest.importorskip("isal")
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_WRITE, str(tmp_path / "x.nii.gz"), str(after)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() in (["interrupted", "1"], ["single-threaded"]), run.stdout


_SCRATCH_PAST_THE_LIMIT = """
import resource, signal, sys
from pathlib import Path
import numpy as np
from srgan_med.io import scratch

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))
with scratch.disk_backed(Path(sys.argv[1]), 0):
    try:
        scratch.array((100, 100, 10), np.float32)
    except Exception as error:
        print(type(error).__name__, error)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs POSIX resource limits")
def test_a_scratch_file_that_cannot_be_made_names_its_folder(tmp_path):
    """On the disk-backed output path a full disk or size limit said only "File too large (EFBIG)"."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _SCRATCH_PAST_THE_LIMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.stdout.strip() == (
        f"OutputWriteError {tmp_path}: cannot write a 0.4 MiB scratch file for the output: "
        "File too large (EFBIG); nothing was written"
    ), run.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


# A real-world value mapping of the modality values (ADC in um2/s = 10^-6 mm2/s), and its item's
# other attributes; each slice's item maps that slice's stored values (its own rescale) onto it.
_RW_SLOPE, _RW_INTERCEPT = 2.0, -5.0
_ADC = {
    "LUTLabel": "ADC",
    "LUTExplanation": "apparent diffusion coefficient",
    "MeasurementUnitsCodeSequence": ("um2/s", "UCUM", "um2/s"),
}
_PER_SLICE_RESCALE = [(1.0, 0.0), (0.5, 4.0), (2.0, -2.0), (0.25, 1.0)]


def _adc_items(rescale, first: int = 0, last: int = 65535) -> list[list[dict]]:
    return linear_mapping_items(rescale, _RW_SLOPE, _RW_INTERCEPT, _ADC, first=first, last=last)


@pytest.mark.parametrize(
    ("rescale", "top", "vr"),
    [
        ([(1.0, 0.0)] * 4, 3000, "SS"),  # integers: stored as they are, int16
        (_PER_SLICE_RESCALE, 3000, "SS"),  # each slice its own rescale: scaled int16 storage
        ([(1.0, 0.0)] * 4, 60000, "US"),  # integers beyond int16: uint16
    ],
    ids=["same-rescale", "per-slice-rescale", "uint16"],
)
def test_real_world_value_mapping_is_carried_rescaled_to_the_written_values(tmp_path, rescale, top, vr):
    """The source's RealWorldValueMappingSequence maps its stored values; the output stores others
    (its own RescaleSlope/Intercept), so the mapping is rewritten to give the same real values."""
    import io

    stored = np.random.default_rng(5).integers(0, top + 1, (4, 12, 10))
    source = real_world_series(tmp_path / "src", stored, rescale, _adc_items(rescale))
    scan = load_scan(source)
    assert "00409096" not in scan.meta["dicom_reference"]  # never copied raw
    buffer = io.BytesIO()  # plain types: MONAI's cache loads the meta with weights_only
    torch.save(scan.meta["real_world_mappings"], buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == scan.meta["real_world_mappings"]
    out = save_scan(scan, tmp_path / "derived", derivation="copy", description="copy")
    sources = {str(ds.ImagePositionPatient): ds for ds in map(pydicom.dcmread, sorted(source.iterdir()))}
    for path in sorted(out.iterdir()):
        ds = pydicom.dcmread(path)
        source_ds = sources.pop(str(ds.ImagePositionPatient))  # the same slice (unchanged grid)
        (item,) = ds.RealWorldValueMappingSequence
        assert ds.PixelRepresentation == (1 if vr == "SS" else 0)
        info = np.iinfo(np.int16 if vr == "SS" else np.uint16)
        for keyword, value in (
            ("RealWorldValueFirstValueMapped", info.min),
            ("RealWorldValueLastValueMapped", info.max),
        ):
            assert item[keyword].VR == vr and item[keyword].value == value
        assert item.LUTLabel == "ADC" and item.LUTExplanation == "apparent diffusion coefficient"
        assert item.MeasurementUnitsCodeSequence[0].CodeValue == "um2/s"
        assert "RealWorldValueLUTData" not in item and "DoubleFloatRealWorldValueFirstValueMapped" not in item
        real = real_world_values(ds)
        np.testing.assert_allclose(
            real, _RW_SLOPE * modality_values(ds) + _RW_INTERCEPT, rtol=1e-12, atol=1e-9
        )
        # the source's real-world values, to half a stored step of the (scaled) output
        step = abs(_RW_SLOPE) * float(ds.RescaleSlope)
        np.testing.assert_allclose(real, real_world_values(source_ds), rtol=0, atol=step / 2 + 1e-9)
    (again,) = load_scan(out).meta["real_world_mappings"]  # the written mapping reads back as itself
    assert again["slope"] == pytest.approx(_RW_SLOPE) and again["intercept"] == pytest.approx(_RW_INTERCEPT)


@pytest.mark.parametrize(
    ("case", "reason", "kept"),
    [
        ("lut", "mapping 1 (LUT) is a lookup table (RealWorldValueLUTData)", ["ADC"]),
        ("inconsistent", "mapping 1 (ADC) maps the frames' values differently", []),
        ("labels-differ", "mapping 1 (ADC) differs between frames", []),
        ("partial", "mapping 1 (ADC) maps only part of the stored values", []),
        ("no-slope", "mapping 1 (ADC) has no RealWorldValueSlope", []),
    ],
)
def test_mappings_that_cannot_be_carried_are_dropped_with_one_warning(tmp_path, caplog, case, reason, kept):
    stored = np.random.default_rng(6).integers(0, 3001, (4, 12, 10))
    items = _adc_items(_PER_SLICE_RESCALE, last=1000 if case == "partial" else 65535)
    if case == "lut":  # a table first: the linear item after it is still carried
        table = {"LUTLabel": "LUT", "RealWorldValueLUTData": [0.0, 1.0, 4.0, 9.0]}
        table.update(RealWorldValueFirstValueMapped=0, RealWorldValueLastValueMapped=3)
        items = [[table, *slice_items] for slice_items in items]
    elif case == "inconsistent":
        items[2][0]["RealWorldValueSlope"] *= 1.01
    elif case == "labels-differ":
        items[1][0]["LUTLabel"] = "ADC2"  # a middle slice: the others name the item
    elif case == "no-slope":
        for slice_items in items:
            del slice_items[0]["RealWorldValueSlope"]
    source = real_world_series(tmp_path / "src", stored, _PER_SLICE_RESCALE, items)
    with caplog.at_level("WARNING", logger="srgan_med.io.dicom_read"):
        scan = load_scan(source)
    said = [r.getMessage() for r in caplog.records if "real-world value mapping" in r.getMessage()]
    assert len(said) == 1 and reason in said[0] and said[0].endswith("; not carried to the output"), said
    out = save_scan(scan, tmp_path / "derived", derivation="copy", description="copy")
    for path in sorted(out.iterdir()):
        ds = pydicom.dcmread(path)
        assert [item.LUTLabel for item in ds.get("RealWorldValueMappingSequence", [])] == kept
        if kept:
            np.testing.assert_allclose(
                real_world_values(ds), _RW_SLOPE * modality_values(ds) + _RW_INTERCEPT, rtol=1e-12, atol=1e-9
            )


def _ect_frames(ds):
    """The eCT_Supplemental frames' ImagePositionPatient, in frame order."""
    return [
        np.array(g.PlanePositionSequence[0].ImagePositionPatient, float)
        for g in ds.PerFrameFunctionalGroupsSequence
    ]


@pytest.mark.parametrize("per_frame", [False, True], ids=["shared", "per-frame-differs"])
def test_enhanced_multiframe_mapping_of_the_functional_groups_is_carried(tmp_path, caplog, per_frame):
    """pydicom-data's enhanced CT (a cerebral blood flow map) keeps its RWVM in the shared functional
    group; a per-frame group's own item takes its place for that frame, and one that maps the frame
    differently from the others leaves the mapping out."""
    import copy

    source = pydicom_data_files() / "eCT_Supplemental.dcm"
    ds = pydicom.dcmread(source)
    (shared_item,) = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence
    frames_real = ds.pixel_array * shared_item.RealWorldValueSlope + shared_item.RealWorldValueIntercept
    if per_frame:
        own = copy.deepcopy(shared_item)
        own.RealWorldValueSlope = 2.0  # frame 2 only: its values are not the shared map's
        ds.PerFrameFunctionalGroupsSequence[1].RealWorldValueMappingSequence = [own]
        source = tmp_path / "per_frame.dcm"
        ds.save_as(source)
    with caplog.at_level("WARNING", logger="srgan_med.io.dicom_read"):
        scan = load_scan(source)
    said = [r.getMessage() for r in caplog.records if "real-world value mapping" in r.getMessage()]
    if per_frame:
        assert len(said) == 1 and "mapping 1 (RCBF) maps the frames' values differently" in said[0], said
    else:
        assert said == []
    out = save_scan(scan, tmp_path / "derived", derivation="copy", description="copy")
    positions = _ect_frames(ds)
    for path in sorted(out.iterdir()):
        written = pydicom.dcmread(path)
        if per_frame:
            assert "RealWorldValueMappingSequence" not in written
            continue
        k = int(
            np.argmin([np.linalg.norm(p - np.array(written.ImagePositionPatient, float)) for p in positions])
        )
        (item,) = written.RealWorldValueMappingSequence
        assert item.LUTLabel == "RCBF" and item.MeasurementUnitsCodeSequence[0].CodeValue == "ml/100ml/s"
        assert item["RealWorldValueFirstValueMapped"].VR == ("SS" if written.PixelRepresentation else "US")
        np.testing.assert_allclose(real_world_values(written), frames_real[k], rtol=0, atol=1e-9)


def test_a_signed_sources_mapping_read_without_its_vr_is_carried(tmp_path, caplog):
    """ "US or SS" is not written in implicit VR: a signed source's First/Last value mapped of
    -32768..32767 reads back as 32768..32767, which mapped none of its values (a partial range)."""
    from pydicom.uid import ImplicitVRLittleEndian

    ds = pydicom.dcmread(pydicom_data_files() / "eCT_Supplemental.dcm")
    ds.PixelRepresentation = 1  # the same bits as int16: every value is below 32768
    (item,) = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence
    item["RealWorldValueFirstValueMapped"] = pydicom.DataElement(0x00409216, "SS", -32768)
    item["RealWorldValueLastValueMapped"] = pydicom.DataElement(0x00409211, "SS", 32767)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    source = tmp_path / "signed_implicit.dcm"
    ds.save_as(source, implicit_vr=True, little_endian=True)
    read_back = pydicom.dcmread(source).SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert int(read_back.RealWorldValueFirstValueMapped) in (32768, -32768)  # as pydicom resolves it
    with caplog.at_level("WARNING", logger="srgan_med.io.dicom_read"):
        scan = load_scan(source)
    assert not [r for r in caplog.records if "real-world value mapping" in r.getMessage()]
    (mapping,) = scan.meta["real_world_mappings"]
    assert (mapping["slope"], mapping["intercept"]) == (1.0, 0.0)  # RCBF = stored - 1024 = the CT value


def test_written_series_carry_what_their_iod_requires(tmp_path, small_ct_volume):
    """An audit against PS3.3 found: a NIfTI written as CT/MR Image Storage without its Type 2
    attributes (KVP, Manufacturer, PatientPosition...) nor MR's Type 1 ScanningSequence; a
    Secondary Capture without ConversionType; ImageType relabelled ORIGINAL\\PRIMARY\\AXIAL (a
    perfusion map's too); an inversion-recovery MR losing its TI; a contrast series losing its
    agent; a SeriesDescription over LO's 64 characters."""
    volume, affine = small_ct_volume
    ct = load_scan(write_nifti(tmp_path / "ct.nii.gz", volume, affine), modality="CT")
    mr = load_scan(write_nifti(tmp_path / "mr.nii.gz", np.abs(volume), affine), modality="MR")
    first = {}
    for name, scan in (("ct", ct), ("mr", mr)):
        folder = save_scan(scan, tmp_path / f"{name}_dcm", description="x" * 80)
        first[name] = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    for keyword in (
        "KVP",
        "AcquisitionNumber",
        "Manufacturer",
        "PatientPosition",
        "PositionReferenceIndicator",
    ):
        assert keyword in first["ct"], keyword
    for keyword in ("EchoTime", "EchoTrainLength", "RepetitionTime", "ScanOptions", "MRAcquisitionType"):
        assert keyword in first["mr"], keyword
    assert (first["mr"].ScanningSequence, first["mr"].SequenceVariant) == ("RM", "NONE")
    assert list(first["ct"].ImageType) == ["DERIVED", "SECONDARY"]  # a NIfTI is no original
    assert first["ct"].SeriesDescription == "x" * 64
    source = pydicom.dcmread(pydicom_test_files() / "MR_small.dcm")
    source.ScanningSequence, source.InversionTime, source.EchoTrainLength = ["SE", "IR"], 2200, 8
    source.ContrastBolusAgent, source.ContrastBolusRoute = "GADO", "IV"
    source.ImageType = ["DERIVED", "PRIMARY", "PERFUSION", "RCBF"]
    source.save_as(tmp_path / "ir.dcm")
    scan = load_scan(tmp_path / "ir.dcm")
    for derivation, image_type in ((None, ["DERIVED", "PRIMARY", "PERFUSION", "RCBF"]),
                                   ("x2", ["DERIVED", "SECONDARY", "PERFUSION", "RCBF"])):  # fmt: skip
        folder = save_scan(scan, tmp_path / f"ir_{derivation}", derivation=derivation)
        written = pydicom.dcmread(next(folder.glob("*.dcm")))
        assert list(written.ImageType) == image_type
        assert (written.InversionTime, written.EchoTrainLength) == (2200, 8)
        assert (written.ContrastBolusAgent, written.ContrastBolusRoute) == ("GADO", "IV")
    source.Modality = "PT"  # another modality: Secondary Capture
    source.save_as(tmp_path / "pt.dcm")
    folder = save_scan(load_scan(tmp_path / "pt.dcm"), tmp_path / "pt_out")
    written = pydicom.dcmread(next(folder.glob("*.dcm")))
    assert written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert written.ConversionType == "WSD" and "PatientOrientation" in written
