"""Bad input gets one line on stderr naming the file and the reason, exit code 2, no traceback."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import pydicom_data_files, pydicom_test_files, write_nifti
from typer.testing import CliRunner

from srgan_med.cli import app
from srgan_med.io import load_scan, save_scan

runner = CliRunner()


def _info(*args: str):
    return runner.invoke(app, ["info", *args, "--json"])


def _assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""
    return lines[0]


def _corpus() -> list[Path]:
    roots = [pydicom_test_files().parent]  # test_files, charset_files and palettes: every file pydicom ships
    try:
        roots.append(pydicom_data_files())
    except pytest.skip.Exception:
        pass
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def test_every_shipped_dicom_file_loads_or_fails_cleanly():
    outcomes = {"loaded": 0, "refused": 0}
    for path in _corpus():
        result = _info(str(path))
        if result.exit_code == 0:
            facts = json.loads(result.stdout)
            assert len(facts["shape"]) == 3 and all(s > 0 for s in facts["spacing"]), path
            assert np.isfinite([facts["min"], facts["max"]]).all()
            outcomes["loaded"] += 1
        else:
            _assert_one_line_error(result, str(path))
            outcomes["refused"] += 1
    # both kinds are really exercised: real scans load, RT/SR/colour/truncated files are refused
    assert outcomes["loaded"] >= 20 and outcomes["refused"] >= 50, outcomes


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", "cannot decode pixel data"),
        ("rtstruct.dcm", "an RT structure set (RTSTRUCT) holds no scan to load"),  # no file meta: still named
        ("rtplan.dcm", "RT plan"),
        ("rtdose.dcm", "RT dose"),
        ("test-SR.dcm", "structured report"),
        ("SC_rgb_rle.dcm", "photometric interpretation RGB"),
        ("examples_palette.dcm", "PALETTE COLOR"),
        ("meta_missing_tsyntax.dcm", "no image"),
        ("dicomdirtests/DICOMDIR", "a DICOMDIR (an index of files) holds no image; give the series' folder"),
        ("README.txt", "not a DICOM file"),
    ],
)
def test_named_bad_files_give_the_reason(name, reason):
    path = pydicom_test_files() / name
    _assert_one_line_error(_info(str(path)), str(path), reason)


def test_folder_of_localizers_with_mixed_orientation_is_refused():
    folder = pydicom_test_files() / "dicomdirtests" / "98892003" / "MR700"
    _assert_one_line_error(_info(str(folder)), "differ in orientation")


def test_folder_with_several_series_lists_them_and_series_option_picks_one():
    folder = pydicom_test_files() / "dicomdirtests" / "98892001"
    line = _assert_one_line_error(_info(str(folder)), "series found; pick one with --series UID")
    uid = next(part.split(" ")[0] for part in line.split(": ", 2)[2].split("; ") if "CT" in part)
    chosen = _info(str(folder), "--series", uid)
    if chosen.exit_code == 0:
        assert json.loads(chosen.stdout)["modality"] == "CT"
    else:  # a series that itself is inconsistent must still fail cleanly
        _assert_one_line_error(chosen, str(folder))
    _assert_one_line_error(_info(str(folder), "--series", "1.2.3.4"), "no series with UID 1.2.3.4")
    # a start of a UID picks the one series it starts; one that two share asks for more
    import os

    uids = [part.split(" ")[0] for part in line.split(": ", 2)[2].split("; ")]
    shared = os.path.commonprefix(uids)
    assert _info(str(folder), "--series", uid[: len(shared) + 1]).stdout == chosen.stdout
    _assert_one_line_error(
        _info(str(folder), "--series", shared), f"2 series have UIDs that start with {shared}"
    )
    single = pydicom_test_files() / "CT_small.dcm"
    _assert_one_line_error(_info(str(single), "--series", uid), "--series picks a series in a DICOM folder")


def test_empty_folder(tmp_path):
    _assert_one_line_error(_info(str(tmp_path)), str(tmp_path), "no DICOM image files")


def test_missing_path(tmp_path):
    _assert_one_line_error(_info(str(tmp_path / "nope.nii.gz")), "no such file")


def test_text_file_named_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image\n")
    _assert_one_line_error(_info(str(path)), str(path), "not a readable NIfTI file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii"
    path.write_bytes(b"")
    _assert_one_line_error(_info(str(path)), "empty file")


def test_truncated_nifti(tmp_path, small_ct_volume):
    whole = write_nifti(tmp_path / "whole.nii.gz", *small_ct_volume).read_bytes()
    raw = gzip.decompress(whole)
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _assert_one_line_error(_info(str(path)), str(path), "truncated or corrupt")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole[: len(whole) // 2])  # a broken gzip stream
    _assert_one_line_error(_info(str(cut)), str(cut))


def test_four_d_nifti_is_refused_but_a_single_volume_4d_loads(tmp_path):
    four_d = write_nifti(tmp_path / "fmri.nii.gz", np.zeros((8, 8, 4, 3), np.int16), np.eye(4))
    _assert_one_line_error(_info(str(four_d)), "holds 3 volumes")
    one = write_nifti(tmp_path / "one.nii.gz", np.zeros((8, 8, 4, 1), np.int16), np.eye(4))
    assert json.loads(_info(str(one)).stdout)["shape"] == [8, 8, 4]


def test_other_formats_are_named_and_a_dicom_file_with_any_suffix_still_loads(tmp_path):
    """Any file that is not NIfTI is read as DICOM (DICOM files carry any suffix); when it is not,
    a known suffix names the format, instead of a bare "not a DICOM file"."""
    import nibabel as nib
    from PIL import Image

    nib.save(nib.Nifti1Pair(np.zeros((8, 8, 4), np.int16), np.eye(4)), tmp_path / "pair.img")
    for name in ("pair.img", "pair.hdr"):
        _assert_one_line_error(_info(str(tmp_path / name)), "Analyze / NIfTI-pair", "convert it to .nii.gz")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "slice.png")
    _assert_one_line_error(_info(str(tmp_path / "slice.png")), "a PNG picture, not a format srgan-med reads")
    (tmp_path / "notes.txt").write_text("hello")
    _assert_one_line_error(_info(str(tmp_path / "notes.txt")), "notes.txt: not a DICOM file")
    disguised = tmp_path / "ct.png"
    shutil.copy(pydicom_test_files() / "CT_small.dcm", disguised)
    assert json.loads(_info(str(disguised)).stdout)["shape"] == [128, 128, 1]


def test_big_endian_nifti_loads_with_its_values_and_integer_type(tmp_path):
    """nibabel's own test data has big-endian files (anatomical.nii); torch takes native byte order
    only, so these were an internal error, and their type (">i2") was not recognised as int16."""
    import nibabel as nib

    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(np.int16)
    volume = (np.arange(8 * 8 * 4).reshape(8, 8, 4) - 100).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.5, 0.5, 2.0, 1.0]), header=header), tmp_path / "big.nii")
    assert nib.load(tmp_path / "big.nii").get_data_dtype().str == ">i2"
    scan = load_scan(tmp_path / "big.nii")
    np.testing.assert_array_equal(scan[0].numpy(), volume)
    assert scan.meta["original_dtype"] == "int16"
    written = nib.load(save_scan(scan, tmp_path / "copy.nii.gz"))
    assert written.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(written.dataobj), volume)


def test_cifti_and_streamlines_are_named(tmp_path):
    for name, message in (
        ("conn.dconn.nii", "a CIFTI-2 file (grayordinates or a matrix), not a volume of voxels"),
        ("fibres.tck", "fibres.tck: MRtrix streamlines, not an image"),
        ("fibres.trk", "fibres.trk: TrackVis streamlines, not an image"),
        ("brain.mnc", "a MINC volume, not a format srgan-med reads"),
        ("scan.PAR", "a Philips PAR/REC header, not a format srgan-med reads"),
    ):
        (tmp_path / name).write_bytes(b"not a volume srgan-med reads" * 8)
        _assert_one_line_error(_info(str(tmp_path / name)), message)


def test_nifti_named_like_cifti_is_read_and_cifti_intents_are_refused(tmp_path):
    """Only the CIFTI-2 suffixes name CIFTI files: "head.preop.nii" and "t1.defaced.nii" had been
    refused as CIFTI by a pattern that took any ".d*"/".p*" before ".nii". A NIfTI-2 with a CIFTI
    intent code is refused whatever its name."""
    import nibabel as nib

    volume = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4)
    for name in ("head.preop.nii", "t1.defaced.nii.gz", "brain.dwi.nii"):
        write_nifti(tmp_path / name, volume, np.eye(4))
        assert json.loads(_info(str(tmp_path / name)).stdout)["shape"] == [8, 8, 4]
    cifti = nib.Nifti2Image(volume, np.eye(4))
    cifti.header.set_intent(3006)  # NIFTI_INTENT_CONNECTIVITY_DENSE_SCALARS
    nib.save(cifti, tmp_path / "renamed.nii")
    _assert_one_line_error(_info(str(tmp_path / "renamed.nii")), "a CIFTI-2 file")


def _patch_sform(path: Path, rows) -> Path:
    """Write sform rows into a NIfTI-1 header as bytes (nibabel's save would recompute them)."""
    data = bytearray(path.read_bytes())
    data[280:328] = np.asarray(rows, "<f4").tobytes()  # srow_x, srow_y, srow_z
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ([[1, 0, 0, np.nan], [0, 1, 0, 0], [0, 0, 1, 0]], "affine holds NaN or infinite values"),
        ([[0] * 4] * 3, "affine is degenerate (a voxel of zero volume)"),
    ],
)
def test_nifti_with_a_broken_affine_is_refused_before_any_work(tmp_path, rows, says):
    """A NaN sform went through the whole run and ended in an internal error at writing (and
    ``info --json`` printed NaN, which is not JSON); a zero sform was written back as it was."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ones((8, 8, 3), np.int16), np.eye(4))
    image.set_sform(np.eye(4), code=2)
    nib.save(image, tmp_path / "broken.nii")
    path = _patch_sform(tmp_path / "broken.nii", rows)
    _assert_one_line_error(_info(str(path)), says)
    result = runner.invoke(app, ["enhance", str(path), "--modality", "MR", "-o", str(tmp_path / "out.nii")])
    _assert_one_line_error(result, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nii"]


def test_nifti_header_larger_than_its_data_is_named_before_allocating(tmp_path):
    """A header declaring 30000^3 voxels: the allocation failed with a MemoryError whose message
    is empty, so the error line ended in "()"."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    with open(tmp_path / "huge.nii", "wb") as stream:
        header.write_to(stream)
        stream.write(bytes(1000))
    _assert_one_line_error(
        _info(str(tmp_path / "huge.nii")), "truncated or corrupt image data (the header declares 54,"
    )


def test_colour_and_complex_nifti_are_refused(tmp_path):
    """nibabel reads RGB24 as a structured dtype (which broke the value checks: an internal error)
    and complex voxels as complex (whose imaginary part the float conversion silently dropped)."""
    import nibabel as nib

    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    _assert_one_line_error(_info(str(tmp_path / "rgb.nii.gz")), "colour NIfTI (R, G, B per voxel)")
    complex_volume = (np.random.default_rng(0).random((8, 8, 4)) * (1 + 1j)).astype(np.complex64)
    nib.save(nib.Nifti1Image(complex_volume, np.eye(4)), tmp_path / "complex.nii.gz")
    _assert_one_line_error(
        _info(str(tmp_path / "complex.nii.gz")), "complex-valued NIfTI (complex64)", "magnitude"
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_voxels_are_refused(tmp_path, bad):
    volume = np.zeros((8, 8, 4), np.float32)
    volume[2, 3, 1] = bad
    path = write_nifti(tmp_path / "bad.nii.gz", volume, np.eye(4))
    _assert_one_line_error(_info(str(path)), str(path), "1 voxels are NaN or infinite")


def test_one_voxel_thick_and_2d_images_load_as_one_slice(tmp_path):
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    thin = write_nifti(tmp_path / "thin.nii.gz", np.ones((10, 12, 1), np.int16), affine)
    facts = json.loads(_info(str(thin)).stdout)
    assert facts["shape"] == [10, 12, 1] and facts["spacing"] == [0.5, 0.5, 3.0]
    flat = write_nifti(tmp_path / "flat.nii.gz", np.ones((10, 12), np.int16), affine)
    assert json.loads(_info(str(flat)).stdout)["shape"] == [10, 12, 1]


def test_long_decoder_messages_are_cut_at_a_word_and_marked():
    from srgan_med.errors import exception_summary

    words = exception_summary(RuntimeError("plugin failed: " + "marker segment " * 30))
    assert len(words) <= 200 and words.endswith("segment ...")
    assert exception_summary(RuntimeError("x" * 300)) == "x" * 196 + " ..."
    assert exception_summary(RuntimeError("  short\n message ")) == "short message"
    assert exception_summary(RuntimeError()) == "RuntimeError"


def test_nifti_without_qform_or_sform_says_its_orientation_is_assumed(tmp_path, caplog):
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros((8, 8, 2), np.int16), None)  # both codes 0, as ANALYZE-era files
    image.header.set_zooms((0.8, 0.8, 3.0))
    nib.save(image, tmp_path / "bare.nii.gz")
    with caplog.at_level("WARNING"):
        scan = load_scan(tmp_path / "bare.nii.gz")
    assert "no qform or sform (both codes 0): orientation unknown" in caplog.text and "(LAS)" in caplog.text
    np.testing.assert_allclose(scan.pixdim[:3], [0.8, 0.8, 3.0], rtol=1e-6)


def test_our_own_errors_inside_an_atomic_output_keep_their_message(tmp_path):
    """A missing model raised while an output is being written is not a write failure of that output."""
    from srgan_med.errors import WeightsNotFoundError
    from srgan_med.io.atomic import atomic_output

    with pytest.raises(WeightsNotFoundError, match="^no shipped model for US scans$"):
        with atomic_output(tmp_path / "report") as temporary:
            temporary.mkdir()
            raise WeightsNotFoundError("no shipped model for US scans")
    assert sorted(tmp_path.iterdir()) == []


def _ct_small_with(tmp_path: Path, name: str, **raw: bytes) -> Path:
    """CT_small.dcm with tags replaced by raw DS bytes (pydicom refuses to set malformed values)."""
    import pydicom
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
    for keyword, value in raw.items():
        tag = ds[keyword].tag
        ds._dict[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)
    ds.save_as(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ({"RescaleSlope": b"abc "}, "malformed RescaleSlope 'abc'"),
        ({"RescaleSlope": b"0 "}, "RescaleSlope is 0 (every pixel would have the same value)"),
        ({"RescaleIntercept": b"x "}, "malformed modality LUT or rescale tags"),
    ],
)
def test_malformed_rescale_tags_are_input_errors(tmp_path, tags, says):
    """They were internal errors (ValueError from pydicom's LUT), or, for a slope of 0, a volume of
    one value."""
    _assert_one_line_error(_info(str(_ct_small_with(tmp_path, "bad.dcm", **tags))), says)


def test_malformed_slice_thickness_is_said_and_ignored(tmp_path):
    path = _ct_small_with(tmp_path, "thick.dcm", SliceThickness=b"5.0\\5.0 ")
    result = _info(str(path))
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "malformed SliceThickness" in result.stderr
    assert json.loads(result.stdout)["spacing"][2] == 1.0  # as for a missing one


def test_orientation_that_is_not_orthogonal_is_refused_before_the_work(tmp_path):
    """Accepted by the reader, it failed only when the DICOM writer met it after the whole run."""
    import pydicom

    ds = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0.02, 0.9998, 0]
    ds.save_as(tmp_path / "skewed.dcm")
    result = runner.invoke(app, ["enhance", str(tmp_path / "skewed.dcm"), "-o", str(tmp_path / "out")])
    _assert_one_line_error(result, "row and column directions are not perpendicular (cosine 0.02)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skewed.dcm"]


def test_files_without_a_meta_header_count_in_a_series_and_load_alone(tmp_path):
    """A data set written without preamble and meta header (old archives) was skipped silently in
    a folder, so the series lost a slice, and failed alone for want of a transfer syntax."""
    import pydicom
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset
    from pydicom.uid import generate_uid

    series, uid = tmp_path / "series", generate_uid()
    series.mkdir()
    for k in range(5):
        ds = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = uid, generate_uid(), k + 1
        ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 2.5 * k
        if k < 4:
            ds.save_as(series / f"f{k}.dcm")
            continue
        with open(series / "bare", "wb") as stream:
            bare = DicomFileLike(stream)
            bare.is_little_endian, bare.is_implicit_VR = True, True
            write_dataset(bare, ds)
    volume = load_scan(series)
    assert tuple(volume.shape) == (1, 128, 128, 5)
    alone = load_scan(series / "bare")[0, :, :, 0].numpy()
    np.testing.assert_array_equal(alone, volume[0, :, :, 4].numpy())  # the top slice


def test_single_frame_enhanced_dicom_uses_its_functional_groups(tmp_path):
    """With one frame, an enhanced CT was read as a classic image: no rescale (values off by 1024)
    and an assumed identity grid, then written as a misregistered derived series."""
    import pydicom

    source = pydicom_data_files() / "eCT_Supplemental.dcm"  # two frames; checked against dcm2niix
    ds = pydicom.dcmread(source)
    frames = ds.pixel_array
    ds.NumberOfFrames = 1
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:1]
    ds.PixelData = frames[0].tobytes()
    ds.save_as(tmp_path / "one_frame.dcm")
    both, one = load_scan(source), load_scan(tmp_path / "one_frame.dcm")
    assert not one.meta["geometry_assumed"] and one.meta["original_dtype"] == "int16"
    # The single frame is the two-frame volume's slice at the same place, values and grid alike.
    origin = one.affine.numpy()[:3, 3]
    k = int(np.argmin([np.linalg.norm(both.affine.numpy() @ [0, 0, k, 1] - [*origin, 1]) for k in (0, 1)]))
    np.testing.assert_allclose(both.affine.numpy() @ [0, 0, k, 1], [*origin, 1], atol=1e-4)
    np.testing.assert_allclose(one.affine.numpy()[:3, :2], both.affine.numpy()[:3, :2], atol=1e-6)
    np.testing.assert_array_equal(one[0, :, :, 0].numpy(), both[0, :, :, k].numpy())


def _gz_nifti_bytes(volume: np.ndarray, **header_fields) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(volume, np.eye(4))
    for key, value in header_fields.items():
        image.header[key] = value
    return gzip.compress(image.to_bytes(), mtime=0)


def test_a_corrupted_gzip_stream_is_refused_not_read_as_wrong_voxels(tmp_path):
    """One byte changed inside a .nii.gz gave thousands of wrong voxels and exit 0: nibabel stops
    reading after the voxels, before the CRC-32 that gzip checks at the end of the stream."""
    import zlib

    volume = np.random.default_rng(0).integers(-1000, 1000, (64, 64, 32)).astype(np.int16)
    good = _gz_nifti_bytes(volume)
    for position in range(3 * len(good) // 4, len(good) - 8):
        flipped = bytearray(good)
        flipped[position] ^= 0x01
        try:
            gzip.decompress(bytes(flipped))
        except gzip.BadGzipFile as error:
            if "CRC" in str(error):
                break  # inflates without a deflate error: only the checksum tells
        except (zlib.error, EOFError):
            continue
    else:
        pytest.fail("no single-bit change that only the CRC catches")
    (tmp_path / "flipped.nii.gz").write_bytes(bytes(flipped))
    line = _assert_one_line_error(
        _info(str(tmp_path / "flipped.nii.gz")), "truncated or corrupt image data ("
    )
    assert "checksum" in line.lower() or "data check" in line, line  # python-isal's words, or zlib's
    small = bytearray(_gz_nifti_bytes(volume[:8, :8, :4]))  # read whole while nibabel sniffs the header
    small[-8] ^= 0x01  # the CRC itself
    (tmp_path / "small.nii.gz").write_bytes(bytes(small))
    _assert_one_line_error(_info(str(tmp_path / "small.nii.gz")), "corrupt compressed data (CRC")
    (tmp_path / "cut.nii.gz").write_bytes(good[:-5])  # the trailer cut: never checked either
    _assert_one_line_error(_info(str(tmp_path / "cut.nii.gz")), "truncated or corrupt image data")
    (tmp_path / "good.nii.gz").write_bytes(good + b"trailing garbage")  # gzip -t tolerates it
    np.testing.assert_array_equal(load_scan(tmp_path / "good.nii.gz")[0].numpy(), volume)
    # ...also a file of a few KB, which python-isal's reader refused while nibabel sniffed its header
    (tmp_path / "tiny.nii.gz").write_bytes(_gz_nifti_bytes(volume[:8, :8, :4]) + b"junkjunk")
    np.testing.assert_array_equal(load_scan(tmp_path / "tiny.nii.gz")[0].numpy(), volume[:8, :8, :4])


def test_the_trailing_bytes_reader_bounds_all_members_together(tmp_path):
    """The limit on what the members inflate to held for each member, not for all: a file of many
    small members, each inflating to just under the limit, was inflated whole."""
    import zlib

    from srgan_med.io.nifti import _with_trailing_bytes

    member = gzip.compress(bytes(600))  # inflates to 600 bytes
    (tmp_path / "many.nii.gz").write_bytes(member * 3 + b"junk")
    calls = []
    real = zlib.decompressobj

    def counting(*args):
        calls.append(args)
        return real(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zlib, "decompressobj", counting)
        assert _with_trailing_bytes(tmp_path / "many.nii.gz", limit=1000) is None
    assert len(calls) == 2  # the second member reached the limit: no third inflated


def test_a_tiny_nii_gz_declaring_gigabytes_fails_without_allocating_them(tmp_path):
    """A 6 KB .nii.gz declaring 4096x4096x512 int16 took 16.7 GB and 19 s before its error: nibabel
    allocates and zeroes the whole declared size before inflating."""
    import resource

    raw = bytearray(gzip.decompress(_gz_nifti_bytes(np.zeros((16, 16, 8), np.int16))))
    header = np.frombuffer(raw[:348], dtype=np.uint8).copy()
    dims = np.array([3, 4096, 4096, 512, 1, 1, 1, 1], dtype=np.int16)
    header[40:56] = np.frombuffer(dims.tobytes(), np.uint8)  # dim[8] at byte 40 of the header
    raw[:348] = header.tobytes()
    (tmp_path / "big.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = _assert_one_line_error(_info(str(tmp_path / "big.nii.gz")), "truncated or corrupt image data")
    assert "declares 17,179,869,184 bytes of voxels, the compressed stream holds 4,096" in line
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1000, grown_mb


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ((40, np.int16, [4, 8, 8, 4, 0]), "the header declares no voxels (shape (8, 8, 4, 0): a dim of 0)"),
        ((123, np.uint8, [255]), "xyzt_units 255 holds no known spatial/time unit code"),
    ],
)
def test_headers_no_reader_can_use_are_one_line(tmp_path, fields, says):
    """Both were internal errors (exit 1): a reshape ValueError and a KeyError of nibabel's."""
    offset, dtype, values = fields  # header bytes: dim[] at 40, xyzt_units at 123
    raw = bytearray(gzip.decompress(_gz_nifti_bytes(np.zeros((8, 8, 4), np.int16))))
    patch = np.array(values, dtype=dtype).tobytes()
    raw[offset : offset + len(patch)] = patch
    path = tmp_path / "odd.nii"
    path.write_bytes(bytes(raw))
    _assert_one_line_error(_info(str(path)), says)


def test_nibabels_header_notes_do_not_reach_the_user(tmp_path):
    """nibabel printed "sizeof_hdr should be 348; set sizeof_hdr to 348" and similar through its
    own handler, as extra lines beside srgan-med's output."""
    import logging

    from nibabel.imageglobals import logger as nibabel_logger

    path = tmp_path / "odd.nii"
    raw = bytearray(gzip.decompress(_gz_nifti_bytes(np.ones((8, 8, 4), np.int16))))
    raw[0:4] = np.int32(0).tobytes()  # sizeof_hdr 0: nibabel fixes it and says so
    path.write_bytes(bytes(raw))
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    nibabel_logger.addHandler(handler)
    try:
        assert load_scan(path).shape == (1, 8, 8, 4)
    finally:
        nibabel_logger.removeHandler(handler)
    assert seen == []


def test_values_beyond_float32_and_pipes_are_refused(tmp_path):
    """A float64 NIfTI with finite values near 1e302 became infinite in float32, printed numpy's
    RuntimeWarnings and blamed the output; reading a FIFO waited forever."""
    import os

    huge = write_nifti(tmp_path / "huge.nii", np.full((8, 8, 4), 1e302), np.eye(4))
    _assert_one_line_error(_info(str(huge)), "values up to 1e+302, beyond what float32 arithmetic handles")
    import nibabel as nib

    image = nib.Nifti1Image(np.ones((8, 8, 4), np.int16), np.eye(4))
    image.header.set_slope_inter(1.0, 1e30)  # a broken intercept: enhance's output became infinite
    nib.save(image, tmp_path / "intercept.nii")
    _assert_one_line_error(_info(str(tmp_path / "intercept.nii")), "values up to 1e+30")
    os.mkfifo(tmp_path / "pipe.nii.gz")
    _assert_one_line_error(_info(str(tmp_path / "pipe.nii.gz")), "not a regular file or folder")


def test_implausible_missing_and_negative_spacings_are_refused_or_said(tmp_path):
    """PixelSpacing 1e300 gave "spacing inf x inf" and a DICOM series with infinite pixels (exit 0);
    a missing PixelSpacing and a negative SliceThickness became 1 mm without a word."""
    huge = _ct_small_with(tmp_path, "huge.dcm", PixelSpacing=b"1e300\\1e300 ")
    _assert_one_line_error(_info(str(huge)), "implausible PixelSpacing")
    import pydicom

    ds = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm")
    result = _info(str(tmp_path / "nospacing.dcm"))
    assert (
        result.exit_code == 0 and "no PixelSpacing (nor ImagerPixelSpacing); assuming 1 mm" in result.stderr
    )
    negative = _info(str(_ct_small_with(tmp_path, "neg.dcm", SliceThickness=b"-5 ")))
    assert negative.exit_code == 0 and "SliceThickness -5" in negative.stderr and "ignored" in negative.stderr


def test_a_series_of_two_modalities_is_refused(tmp_path):
    """One MR slice among CT slices was loaded as CT without a word."""
    import pydicom

    from srgan_med.io.dicom_write import write_dicom_series

    volume = np.zeros((16, 16, 4), np.int16)
    files = write_dicom_series(volume, np.diag([0.7, 0.7, 2.0, 1.0]), tmp_path / "series", modality="CT")
    ds = pydicom.dcmread(files[2])
    ds.Modality = "MR"
    ds.save_as(files[2])
    _assert_one_line_error(_info(str(tmp_path / "series")), "holds slices of several modalities (CT, MR)")


def test_a_compressed_dicom_cut_inside_its_pixel_data_is_called_truncated(tmp_path):
    """pydicom reads such a file as an empty data set: the error said "no Rows/Columns", which its
    header has."""
    whole = (pydicom_test_files() / "MR_small_RLE.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(whole[: len(whole) // 2])
    _assert_one_line_error(_info(str(tmp_path / "cut.dcm")), "truncated or corrupt image data")


def test_a_nifti_loaded_as_ct_without_negative_values_is_warned_about(tmp_path, caplog):
    """An MR NIfTI trained or enhanced as CT (NIfTI has no modality tag) went through silently."""
    import logging

    magnitudes = write_nifti(tmp_path / "mr.nii.gz", np.full((8, 8, 4), 300, np.int16), np.eye(4))
    with caplog.at_level(logging.WARNING):
        load_scan(magnitudes, modality="CT")
    assert "no value below 0 (no fat, no air): not CT in Hounsfield units?" in caplog.text
    caplog.clear()
    ct = write_nifti(tmp_path / "ct.nii.gz", np.full((8, 8, 4), -100, np.int16), np.eye(4))
    with caplog.at_level(logging.WARNING):
        load_scan(ct, modality="CT")
        load_scan(magnitudes, modality="MR")
    assert "Hounsfield" not in caplog.text
