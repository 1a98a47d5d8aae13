"""``srgan-med enhance`` end to end on CPU with a small, randomly initialised SRResNet bundle.

The weights are random (this tests the pipeline, not image quality): the bundle's card says so.
"""

from __future__ import annotations

import json
import shutil
import warnings

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
    write_nifti,
)
from monai.data import MetaTensor
from typer.testing import CliRunner

from srgan_med.cli import app
from srgan_med.degrade.config import NormaliseConfig
from srgan_med.enhance.run import percent
from srgan_med.examples import example_path
from srgan_med.io import load_scan, rescaled_affine
from srgan_med.io.dicom_write import write_dicom_series
from srgan_med.models.bundle import save_bundle
from srgan_med.nets import SRResNet

runner = CliRunner()


def _bundle(tmp_path, scale: int = 2):
    torch.manual_seed(0)
    generator = SRResNet(scale=scale, blocks=2, width=8)
    return save_bundle(
        tmp_path / f"tiny_x{scale}.safetensors",
        generator,
        architecture={"name": "srresnet", "kwargs": {"scale": scale, "blocks": 2, "width": 8}},
        scale=scale,
        modality="CT",
        normalisation=NormaliseConfig("window", (-1000.0, 2000.0)),
        card={"summary": "random-init test model (NOT trained)", "weights": "random"},
    )


def _invoke(*args: str):
    return runner.invoke(app, ["enhance", *args, "--quiet"])


def test_nifti_in_nifti_out_on_the_right_grid(tmp_path, small_ct_volume):
    volume, affine = small_ct_volume
    source = write_nifti(tmp_path / "ct.nii.gz", volume, affine)
    result = _invoke(str(source), "--model", str(_bundle(tmp_path)), "--scale", "2")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "ct_sr.nii.gz"
    scan, upscaled = load_scan(source), load_scan(out)
    assert tuple(upscaled.shape[1:]) == (volume.shape[0] * 2, volume.shape[1] * 2, volume.shape[2])
    np.testing.assert_allclose(upscaled.affine.numpy(), rescaled_affine(scan.affine, (2, 2, 1)), atol=1e-5)
    assert upscaled.meta["original_dtype"] == "int16"  # HU rounded back to the input's type
    report = json.loads((tmp_path / "ct_sr.nii.gz.json").read_text())
    assert report["scale"] == 2 and report["device"] == "cpu" and report["output_shape"][2] == volume.shape[2]
    assert isinstance(report["consistency_psnr_db"], float)
    stages = report["seconds_by_stage"]
    assert set(stages) == {"load", "upscale", "write"} and min(stages.values()) > 0
    assert report["seconds"] == pytest.approx(sum(stages.values()), abs=0.002)


def test_dicom_series_in_dicom_series_out(tmp_path, small_ct_volume):
    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])
    write_dicom_series(volume[:, :, :4], affine, tmp_path / "series", modality="CT")
    result = _invoke(str(tmp_path / "series"), "--model", str(_bundle(tmp_path)))
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "series_sr"
    upscaled = load_scan(out)
    np.testing.assert_allclose(
        upscaled.affine.numpy(), rescaled_affine(load_scan(tmp_path / "series").affine, (2, 2, 1)), atol=1e-4
    )
    reference = dcm2niix(out, tmp_path / "ref")
    np.testing.assert_allclose(reference.affine, upscaled.affine.numpy(), atol=1e-3)
    first = pydicom.dcmread(sorted(out.iterdir())[0])
    assert (
        list(first.ImageType) == ["DERIVED", "SECONDARY"]
        and "super-resolution x2" in first.DerivationDescription
    )


def test_a_ct_map_keeps_its_real_world_value_mapping(tmp_path):
    """A CT perfusion map (blood flow per HU-like value): the enhanced series stores new values with
    a new rescale, and its RealWorldValueMappingSequence still maps them to the same quantity."""
    slope, intercept = 0.05, 1.0
    rescale = [(1.0, -1024.0), (0.5, -1020.0), (1.0, -1024.0), (2.0, -1030.0)]
    fields = {
        "LUTLabel": "RCBF",
        "LUTExplanation": "regional cerebral blood flow",
        "MeasurementUnitsCodeSequence": ("ml/100ml/s", "UCUM", "ml/100ml/s"),
    }
    items = linear_mapping_items(rescale, slope, intercept, fields)
    stored = np.random.default_rng(1).integers(900, 1300, (4, 16, 16))
    source = real_world_series(tmp_path / "rcbf", stored, rescale, items, modality="CT")
    result = _invoke(str(source), "--model", str(_bundle(tmp_path)))
    assert result.exit_code == 0, result.stderr
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "rcbf_sr").iterdir())]
    assert len(written) == 4 and written[0].Rows == 32
    for ds in written:
        (item,) = ds.RealWorldValueMappingSequence
        assert item.LUTLabel == "RCBF" and item.LUTExplanation == "regional cerebral blood flow"
        assert item["RealWorldValueLastValueMapped"].VR == ("SS" if ds.PixelRepresentation else "US")
        np.testing.assert_allclose(real_world_values(ds), slope * modality_values(ds) + intercept, rtol=1e-12)


def test_example_scan_and_models_listing(tmp_path):
    result = _invoke(
        "example:ct-small", "--model", str(_bundle(tmp_path)), "-o", str(tmp_path / "ct_small_sr")
    )
    assert result.exit_code == 0, result.stderr
    assert tuple(load_scan(tmp_path / "ct_small_sr").shape[1:]) == (256, 256, 1)
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0
    card = runner.invoke(app, ["models", "ct-x2"])  # the README: "srgan-med models" shows the cards
    assert card.exit_code == 0 and card.stdout.startswith("# ct-x2:") and "## Known limits" in card.stdout
    own = runner.invoke(app, ["models", str(tmp_path / "tiny_x2.safetensors")])
    assert own.exit_code == 0 and json.loads(own.stdout)["weights"] == "random"


def _complex_nifti(path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((8, 8, 2), 1 + 2j, np.complex64), np.eye(4)), path)
    return path


@pytest.mark.parametrize(
    ("make_input", "model_scale", "args", "message"),
    [
        (
            lambda p: write_nifti(p / "fmri.nii.gz", np.zeros((8, 8, 4, 3), np.int16), np.eye(4)),
            2,
            [],
            "holds 3 volumes",
        ),
        (
            lambda p: pydicom_test_files() / "SC_rgb_rle.dcm",
            2,
            [],
            "photometric interpretation RGB (3 samples",
        ),
        (
            lambda p: write_nifti(p / "one.nii.gz", np.full((8, 8, 1), -1000, np.int16), np.eye(4)),
            2,
            ["--through-plane"],
            "--through-plane refines the slice axis, but this volume is one slice (shape (8, 8, 1))",
        ),
        (
            lambda p: write_nifti(p / "one.nii.gz", np.full((8, 8, 1), -1000, np.int16), np.eye(4)),
            2,
            ["--plane", "sagittal"],  # the engine's error now names the file
            "one.nii.gz: slices of 8x1 voxels are too small to upscale (plane axis 0)",
        ),
        (
            lambda p: _complex_nifti(p / "complex.nii.gz"),
            2,
            [],
            "complex-valued NIfTI",
        ),
        (
            lambda p: write_nifti(p / "ct.nii.gz", np.zeros((8, 8, 2), np.int16), np.eye(4)),
            2,
            ["--scale", "4"],
            "upscales x2; --scale 4 needs a x4 model",
        ),
    ],
)
def test_bad_inputs_give_one_line(tmp_path, make_input, model_scale, args, message):
    source = make_input(tmp_path)
    result = _invoke(
        str(source), "--model", str(_bundle(tmp_path, model_scale)), "-o", str(tmp_path / "o.nii.gz"), *args
    )
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()


def test_missing_model_file(tmp_path, small_ct_volume):
    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    result = _invoke(str(source), "--model", str(tmp_path / "absent.safetensors"))
    assert result.exit_code == 2 and "absent.safetensors' not found" in result.stderr


def test_interrupted_run_leaves_no_partial_output(tmp_path, small_ct_volume, monkeypatch):
    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    model = _bundle(tmp_path)
    import nibabel

    write = nibabel.Nifti1Image.to_file_map

    def interrupted(image, file_map=None, **kwargs):
        write(image, file_map, **kwargs)  # the gzip stream holds the whole image now, unflushed
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the output was being written

    monkeypatch.setattr(nibabel.Nifti1Image, "to_file_map", interrupted)
    result = _invoke(str(source), "--model", str(model))
    assert result.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "tiny_x2.safetensors"]


_TERMINATED_RUN = """
import os, signal, sys
from srgan_med.io import scratch
made = scratch.array

def array_then_sigterm(*args, **kwargs):
    storage = made(*args, **kwargs)  # the output-sized scratch file exists now
    os.kill(os.getpid(), signal.SIGTERM)
    return storage

scratch.array = array_then_sigterm
from srgan_med.cli import main
sys.argv = ["srgan-med", "enhance", sys.argv[1], "--model", sys.argv[2], "-q"]
main()
"""


def test_sigterm_takes_the_path_of_ctrl_c(tmp_path, small_ct_volume):
    """SIGTERM (kill, a scheduler's limit) ended enhance with no message and left the hidden,
    output-sized scratch file of its disk-backed output beside the input."""
    import os
    import subprocess
    import sys

    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    model = _bundle(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = subprocess.run(
        [sys.executable, "-c", _TERMINATED_RUN, str(source), str(model)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "SRGAN_MED_MAX_ARRAY_MB": "0"},
    )  # fmt: skip
    assert run.returncode == 143, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == "error: interrupted; nothing partial was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_evaluate_scores_a_model_beside_the_interpolators(tmp_path, small_ct_volume):
    import csv

    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    model = str(_bundle(tmp_path))
    out = tmp_path / "evaluation"
    args = ["evaluate", str(source), "--methods", "bicubic", "--model", model, "-q"]
    result = runner.invoke(app, [*args, "--scale", "2", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    methods = {row["method"] for row in csv.DictReader(open(out / "metrics.csv"))}
    assert methods == {"bicubic", "tiny_x2"}
    assert f"--model {model}" in (out / "report.md").read_text()  # the recorded command reproduces it
    wrong = runner.invoke(app, [*args, "--scale", "4", "-o", str(tmp_path / "e4")])
    assert wrong.exit_code == 2 and "upscales x2, the pair needs x4" in wrong.stderr
    assert not (tmp_path / "e4").exists()


def test_evaluate_runs_a_model_as_the_plain_generator_in_strict_fp32(tmp_path, small_ct_volume):
    """evaluate's model method (enhance's exact rewrites, strict fp32) equals the trained generator."""
    from srgan_med.evaluate.run import model_method
    from srgan_med.models.bundle import load_bundle

    volume, affine = small_ct_volume
    low_res = MetaTensor(
        torch.from_numpy(volume[None, :, :, :3].astype(np.float32)), affine=torch.as_tensor(affine)
    )
    name, reconstruct = model_method(str(_bundle(tmp_path)))
    output = reconstruct(low_res, (2, 2), 2)
    bundle = load_bundle(str(tmp_path / "tiny_x2.safetensors"))
    normalise, denormalise = bundle.intensity_maps(low_res[0])
    slices = torch.from_numpy(np.moveaxis(normalise(low_res[0].numpy()), 2, 0)[:, None].astype(np.float32))
    with torch.inference_mode():
        expected = np.moveaxis(denormalise(bundle.generator.eval()(slices)[:, 0].numpy()), 0, 2)
    assert name == "tiny_x2" and output.shape == expected.shape
    np.testing.assert_allclose(output, expected, atol=0.02)  # HU; float32 rounding of folded weights


def test_auto_model_follows_modality_and_scale(tmp_path, monkeypatch):
    import json

    import srgan_med.models.bundle as bundle_module

    shipped = tmp_path / "weights"
    shipped.mkdir()
    _bundle(tmp_path).rename(shipped / "ct-x2.safetensors")
    monkeypatch.setattr(bundle_module, "SHIPPED_DIR", shipped)
    result = _invoke("example:ct-small", "-o", str(tmp_path / "auto"))  # a CT DICOM file
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "auto.json").read_text())["model"] == "ct-x2"
    four = _invoke("example:ct-small", "--scale", "4", "-o", str(tmp_path / "x4"))
    assert four.exit_code == 2 and "no shipped model for CT scans at x4 (shipped: ct-x2)" in four.stderr
    assert not (tmp_path / "x4").exists()
    mr = _invoke("example:mr-small", "-o", str(tmp_path / "mr"))
    assert mr.exit_code == 2 and "no shipped model for MR scans at x2" in mr.stderr
    torch.manual_seed(1)
    save_bundle(
        shipped / "mr-x2.safetensors",
        SRResNet(scale=2, blocks=2, width=8),
        architecture={"name": "srresnet", "kwargs": {"scale": 2, "blocks": 2, "width": 8}},
        scale=2,
        modality="MR",
        normalisation=NormaliseConfig("percentile", percentiles=(0.5, 99.5)),
        card={"summary": "random-init test model (NOT trained)", "weights": "random"},
    )
    mixed = _invoke("example:ct-small", "example:mr-small", "-o", str(tmp_path / "mixed"))
    assert mixed.exit_code == 0, mixed.stderr
    models = {p.stem: json.loads(p.read_text())["model"] for p in (tmp_path / "mixed").glob("*.json")}
    assert models == {"CT_small_sr": "ct-x2", "MR_small_sr": "mr-x2"}  # each scan's own modality
    assert "trained on" not in mixed.stderr


def test_unknown_precision_is_one_line_error_and_writes_nothing(tmp_path, small_ct_volume):
    volume, affine = small_ct_volume
    source = write_nifti(tmp_path / "ct.nii.gz", volume, affine)
    result = _invoke(str(source), "--model", str(_bundle(tmp_path)), "--precision", "fp16")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: --precision must be auto, fp32, tf32, bf16")
    assert not (tmp_path / "ct_sr.nii.gz").exists()


def test_bf16_precision_is_recorded_in_the_report(tmp_path, small_ct_volume):
    volume, affine = small_ct_volume
    source = write_nifti(tmp_path / "ct.nii.gz", volume, affine)
    model = str(_bundle(tmp_path))
    result = _invoke(str(source), "--model", model, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ct_sr.nii.gz.json").read_text())
    assert report["precision"] == "bf16" and report["batch_size"] == 8  # CPU default batch
    # TF32 exists on CUDA only: on the CPU the report says what ran (it said "tf32")
    tf32 = _invoke(str(source), "--model", model, "--precision", "tf32", "--overwrite")
    assert tf32.exit_code == 0, tf32.output
    assert json.loads((tmp_path / "ct_sr.nii.gz.json").read_text())["precision"] == "fp32"


_FILE_SIZE_LIMITED = """
import json, resource, signal, sys
from typer.testing import CliRunner
from srgan_med.cli import app

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))
results = {}
for output, fmt in json.loads(sys.argv[1]):
    run = CliRunner().invoke(app, ["enhance", sys.argv[2], "--model", sys.argv[3], "-o", output,
                                   "--format", fmt, "--quiet"])
    results[output] = [run.exit_code, run.stderr]
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs POSIX resource limits")
def test_output_past_the_file_size_limit_is_one_line_error_and_leaves_nothing(tmp_path, small_ct_volume):
    """A real write failure (EFBIG under RLIMIT_FSIZE, as a full disk gives ENOSPC), in every format."""
    import subprocess
    import sys

    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    model = _bundle(tmp_path)
    outputs = tmp_path / "out"
    outputs.mkdir()
    cases = [[str(outputs / "a.nii"), "nifti"], [str(outputs / "b.nii.gz"), "nifti"]]
    cases.append([str(outputs / "c"), "dicom"])
    child = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMITED, json.dumps(cases), str(source), str(model)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    for output, _ in cases:
        code, stderr = results[output]
        assert code == 2, stderr
        errors = [line for line in stderr.splitlines() if not line.startswith("warning: ")]
        assert errors == [f"error: {output}: cannot write it: File too large (EFBIG); it was left as it was"]
    assert list(outputs.iterdir()) == []  # no partial file, folder or temporary


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root may write into a read-only folder",
)
def test_read_only_output_folder_is_one_line_error(tmp_path, small_ct_volume):
    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = _invoke(str(source), "--model", str(_bundle(tmp_path)), "-o", str(locked / "o.nii.gz"))
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 2 and "Permission denied (EACCES)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and list(locked.iterdir()) == []


def test_a_single_image_with_coarse_pixels_is_enhanced_in_its_own_plane(tmp_path):
    """pydicom's JPEG2000.dcm: one 1024x256 NM image, 2.26 mm pixels, no slice thickness (1 mm
    assumed). It was sliced along a pixel axis (the coarsest spacing) and refused as 1024x1 slices."""
    source = pydicom_test_files() / "JPEG2000.dcm"
    result = _invoke(str(source), "--model", str(_bundle(tmp_path)), "-o", str(tmp_path / "nm.nii.gz"))
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "nm.nii.gz.json").read_text())
    assert report["slice_axis"] == 2 and report["output_shape"] == [512, 2048, 1]


def test_several_inputs_check_every_output_before_any_work_and_name_what_was_written(
    tmp_path, small_ct_volume
):
    """Clashing or existing outputs are found before the first input is read; an input that fails
    after others were written says which were."""
    volume, affine = small_ct_volume
    model = str(_bundle(tmp_path))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_nifti(tmp_path / folder / "ct.nii.gz", volume, affine)
    first, second = str(tmp_path / "a" / "ct.nii.gz"), str(tmp_path / "b" / "ct.nii.gz")
    clash = _invoke(first, second, "--model", model, "-o", str(tmp_path / "out"))
    assert clash.exit_code == 2 and "would both be written to" in clash.stderr
    assert not (tmp_path / "out").exists()

    (tmp_path / "b" / "ct_sr.nii.gz").write_text("an earlier result")
    existing = _invoke(first, second, "--model", model)
    assert existing.exit_code == 2 and "b/ct_sr.nii.gz: exists already" in existing.stderr
    assert not (tmp_path / "a" / "ct_sr.nii.gz").exists()  # the first was not written either
    assert (tmp_path / "b" / "ct_sr.nii.gz").read_text() == "an earlier result"

    broken = tmp_path / "b" / "broken.nii.gz"
    broken.write_bytes(b"not gzip")
    stopped = _invoke(first, str(broken), "--model", model)
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert stopped.exit_code == 2 and len(errors) == 1  # (and a warning: the tiny model is CT's)
    assert "broken.nii.gz: not a readable NIfTI file" in stopped.stderr
    assert (
        "stopped there; 1 of 2 written before it: " in stopped.stderr and "a/ct_sr.nii.gz" in stopped.stderr
    )
    assert not (tmp_path / "b" / "broken_sr.nii.gz").exists()


@pytest.mark.parametrize(
    ("name", "fmt", "message"),
    [
        ("out", "nifti", "out: a NIfTI output needs a .nii or .nii.gz name"),  # was an internal error
        ("out.nii.gz", "dicom", "a DICOM series is a folder; give it a name without .nii.gz"),  # was a folder
    ],
)
def test_an_output_name_that_does_not_fit_the_format_is_refused_first(
    tmp_path, small_ct_volume, name, fmt, message
):
    volume, affine = small_ct_volume
    source = write_nifti(tmp_path / "ct.nii.gz", volume, affine)
    model = str(tmp_path / "not-read-yet.safetensors")  # the output is checked before the model is read
    result = _invoke(str(source), "--model", model, "--format", fmt, "-o", str(tmp_path / name))
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / name).exists()


@pytest.mark.slow  # inductor compiles the tiny generator: ~10 s on 2 cores
def test_compiled_enhance_writes_what_the_eager_one_writes(tmp_path, small_ct_volume):
    from srgan_med.enhance.inference import compile_problem

    problem = compile_problem("cpu")
    if problem:
        pytest.skip(f"torch.compile cannot build kernels on this CPU: {problem}")
    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    model = str(_bundle(tmp_path))
    outputs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        out = tmp_path / f"{name}.nii.gz"
        result = _invoke(str(source), "--model", model, "--precision", "fp32", "-o", str(out), *extra)
        assert result.exit_code == 0, result.stderr
        assert json.loads((tmp_path / f"{name}.nii.gz.json").read_text())["compiled"] == bool(extra)
        outputs[name] = load_scan(out)[0].numpy()
    assert np.abs(outputs["compiled"] - outputs["eager"]).max() <= 1  # int16 HU: rounding apart at most


def test_compile_without_a_compiler_is_one_line_error_and_writes_nothing(tmp_path, small_ct_volume):
    """A real failed compile: inductor pointed at a C++ compiler that does not exist, with empty
    caches (a cached kernel would need no compiler)."""
    import os
    import subprocess
    import sys

    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    out = tmp_path / "out.nii.gz"
    env = os.environ | {"CXX": str(tmp_path / "no-such-g++")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "cache")
    args = [str(source), "--model", str(_bundle(tmp_path)), "-o", str(out), "--device", "cpu", "--compile"]
    child = subprocess.run(
        [sys.executable, "-m", "srgan_med", "enhance", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert child.returncode == 2, child.stderr[-2000:]
    errors = [line for line in child.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1
    assert errors[0].startswith("error: --compile: torch.compile cannot build kernels here")
    assert (
        f"(CXX={str(tmp_path / 'no-such-g++')!r} is not a program: install g++ or clang++, or set CXX"
        in errors[0]
    )
    assert not out.exists() and not (tmp_path / "out.nii.gz.json").exists()


def test_series_option_picks_one_series_of_a_study_folder(tmp_path):
    folder = pydicom_test_files() / "dicomdirtests" / "98892001"  # a scout and a 5-slice CT series
    model = str(_bundle(tmp_path))
    # its series' subfolders are enhanced in turn; the scout, first, is not a volume, and says so
    several = _invoke(str(folder), "--model", model, "-o", str(tmp_path / "all"))
    assert several.exit_code == 2 and "CT2N (series " in several.stderr
    assert "slices differ in orientation (a localizer or mixed series?)" in several.stderr
    uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"
    picked = _invoke(str(folder), "--series", uid, "--model", model, "-o", str(tmp_path / "ct"))
    assert picked.exit_code == 0, picked.stderr
    assert load_scan(tmp_path / "ct").shape[1:] == (32, 32, 5)
    assert json.loads((tmp_path / "ct.json").read_text())["input_series_uid"] == uid
    two = _invoke(
        str(folder), "example:ct-small", "--series", uid, "--model", model, "-o", str(tmp_path / "two")
    )
    assert two.exit_code == 2 and "--series picks a series of one folder; got 2 inputs" in two.stderr
    assert not any((tmp_path / name).exists() for name in ("all", "all.json", "two", "two.json"))


def test_piped_output_holds_only_the_result_lines(tmp_path):
    """A progress bar cannot redraw in a pipe or log: rich left a blank line on stdout there."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "srgan_med", "enhance", "example:ct-small", "-o", str(tmp_path / "ct")]
    result = subprocess.run([*command, "--model", str(_bundle(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(str(example_path("ct-small"))) and f" -> {tmp_path / 'ct'} (x2, " in line
    assert result.stderr == ""


def test_monochrome1_input_stays_monochrome1(tmp_path):
    """CR/DX images are often MONOCHROME1 (high values dark); written as MONOCHROME2 the enhanced
    image showed inverted. dcm2niix keeps the stored values for NIfTI, and so do we."""
    source = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
    source.PhotometricInterpretation = "MONOCHROME1"
    source.save_as(tmp_path / "mono1.dcm")
    model = str(_bundle(tmp_path))
    result = _invoke(str(tmp_path / "mono1.dcm"), "--model", model, "-o", str(tmp_path / "sr"))
    assert result.exit_code == 0, result.stderr
    (written,) = sorted((tmp_path / "sr").iterdir())
    assert pydicom.dcmread(written).PhotometricInterpretation == "MONOCHROME1"
    plain = _invoke(
        str(pydicom_test_files() / "CT_small.dcm"),
        "--model",
        model,
        "-o",
        str(tmp_path / "sr2"),
    )
    assert plain.exit_code == 0, plain.stderr
    assert pydicom.dcmread(next((tmp_path / "sr2").iterdir())).PhotometricInterpretation == "MONOCHROME2"


def test_an_existing_folder_takes_a_nifti_output_and_is_a_dicom_output_itself(tmp_path, small_ct_volume):
    volume, affine = small_ct_volume
    source = write_nifti(tmp_path / "ct.nii.gz", volume, affine)
    folder = tmp_path / "out"
    folder.mkdir()
    model = str(_bundle(tmp_path))
    into = _invoke(str(source), "--model", model, "-o", str(folder))  # it was refused as "exists already"
    assert into.exit_code == 0, into.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["ct_sr.nii.gz", "ct_sr.nii.gz.json"]
    series = _invoke(str(source), "--model", model, "--format", "dicom", "-o", str(folder))
    assert series.exit_code == 2 and f"{folder}: exists already" in series.stderr


def test_nifti_header_fields_are_carried_over(tmp_path, small_ct_volume):
    """descrip (with the SR suffix, always visible), aux_file, TR and its unit, display range, intent."""
    import nibabel as nib

    volume, affine = small_ct_volume
    image = nib.Nifti1Image(volume[:, :, :3], affine)
    header = image.header
    header.set_xyzt_units("mm", "msec")
    header["pixdim"][4] = 2500.0
    header["descrip"] = ("T2w TSE " + "x" * 80).encode()[:79]
    header["aux_file"], header["cal_min"], header["cal_max"] = b"lut.txt", -160.0, 240.0
    header.set_intent("estimate", name="T2 map")
    nib.save(image, tmp_path / "ct.nii.gz")
    result = _invoke(str(tmp_path / "ct.nii.gz"), "--model", str(_bundle(tmp_path)), "--scale", "2")
    assert result.exit_code == 0, result.stderr
    written = nib.load(tmp_path / "ct_sr.nii.gz").header
    description = written["descrip"].item().decode()
    assert (
        description.startswith("T2w TSE xxx") and description.endswith("x SR x2") and len(description) == 79
    )
    assert written["aux_file"].item() == b"lut.txt" and written.get_xyzt_units() == ("mm", "msec")
    assert float(written["pixdim"][4]) == 2500.0
    assert (float(written["cal_min"]), float(written["cal_max"])) == (-160.0, 240.0)
    assert written.get_intent() == ("estimate", (), "T2 map")


def test_a_study_folder_of_series_subfolders_is_enhanced_series_by_series(tmp_path, small_ct_volume):
    """A folder of scans is processed in turn (issue #5), DICOM series subfolders as NIfTI files are."""
    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])
    study = tmp_path / "study"
    write_dicom_series(volume[:, :, :3], affine, study / "1_axial", modality="CT")
    write_dicom_series(volume[:, :, 3:5] + 100, affine, study / "2_late", modality="CT")
    model = str(_bundle(tmp_path))
    result = _invoke(str(study), "--model", model, "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "1_axial_sr",
        "1_axial_sr.json",
        "2_late_sr",
        "2_late_sr.json",
    ]
    for name, slices in (("1_axial", 3), ("2_late", 2)):
        written = load_scan(tmp_path / "out" / f"{name}_sr")
        assert tuple(written.shape[1:]) == (volume.shape[0] * 2, volume.shape[1] * 2, slices)
    # --series still picks one series of the folder, and one flat folder of two series still asks for it
    uid = load_scan(study / "2_late").meta["series_uid"]
    picked = _invoke(str(study), "--model", model, "--series", uid, "-o", str(tmp_path / "one"))
    assert picked.exit_code == 0 and load_scan(tmp_path / "one").shape[-1] == 2
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in [*(study / "1_axial").iterdir(), *(study / "2_late").iterdir()]:
        (flat / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    mixed = _invoke(str(flat), "--model", model, "-o", str(tmp_path / "flat_out"))
    assert mixed.exit_code == 2 and "2 series found; pick one with --series UID" in mixed.stderr


def test_dicom_slice_thickness_is_kept_where_the_slices_are_and_follows_a_simulated_one(
    tmp_path, small_ct_volume
):
    """Overlapping 5 mm slices every 2.5 mm stay 5 mm thick after in-plane SR; degrade's thick slices
    are written with their simulated thickness, not their spacing; through-plane SR writes its spacing."""
    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])
    for path in write_dicom_series(volume[:, :, :8], affine, tmp_path / "series", modality="CT"):
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "5.0"
        ds.save_as(path)

    def thickness_and_spacing(folder):
        ds = pydicom.dcmread(sorted(folder.iterdir())[0])
        return float(ds.SliceThickness), float(ds.SpacingBetweenSlices)

    model = str(_bundle(tmp_path))
    assert _invoke(str(tmp_path / "series"), "--model", model, "-o", str(tmp_path / "sr")).exit_code == 0
    assert thickness_and_spacing(tmp_path / "sr") == (5.0, 2.5)
    through = _invoke(
        str(tmp_path / "series"), "--model", model, "--through-plane", "-o", str(tmp_path / "tp")
    )
    assert through.exit_code == 0, through.stderr
    assert thickness_and_spacing(tmp_path / "tp") == (1.25, 1.25)
    derivation = pydicom.dcmread(sorted((tmp_path / "tp").iterdir())[0]).DerivationDescription
    assert "super-resolution x2 through-plane, model" in derivation, derivation
    args = ["--scale", "2", "--slice-thickness-mm", "7.5", "--slice-gap-mm", "2.5", "--noise", "0"]
    degraded = runner.invoke(app, ["degrade", str(tmp_path / "series"), "-o", str(tmp_path / "lr"), *args])
    assert degraded.exit_code == 0, degraded.stderr
    assert thickness_and_spacing(tmp_path / "lr") == (7.5, 10.0)
    assert load_scan(tmp_path / "lr").meta["slice_thickness_mm"] == 7.5  # and read back as such


def test_dicom_output_of_integer_hu_is_whole_hu(tmp_path):
    """CT stored in whole HU comes back in whole HU (slope 1), as NIfTI output is rounded to int16."""
    result = _invoke("example:ct-small", "--model", str(_bundle(tmp_path)), "-o", str(tmp_path / "sr"))
    assert result.exit_code == 0, result.stderr
    ds = pydicom.dcmread(next((tmp_path / "sr").iterdir()))
    assert (float(ds.RescaleSlope), ds.PixelRepresentation, ds.RescaleType) == (1.0, 1, "HU")
    scan = load_scan(tmp_path / "sr")
    assert scan.meta["original_dtype"] == "int16"
    values = scan[0].numpy()
    assert np.array_equal(values, np.rint(values)) and values.std() > 10


def test_through_plane_to_a_slice_spacing(tmp_path, small_ct_volume):
    """5 mm slices, x2 model (2.5 mm), 2 mm asked: the model's output resampled along the slice axis."""
    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 5.0, 30], [0, 0, 0, 1.0]])
    source = write_nifti(tmp_path / "thick.nii.gz", volume[:, :, :6], affine)  # a 30 mm slab
    model = str(_bundle(tmp_path))
    result = _invoke(
        str(source),
        "--model",
        model,
        "--through-plane",
        "--slice-spacing",
        "2",
        "-o",
        str(tmp_path / "o.nii.gz"),
    )
    assert result.exit_code == 0, result.stderr
    assert "--slice-spacing 2 mm is finer than x2 makes of 5 mm slices (2.5 mm)" in result.stderr  # said
    written = load_scan(tmp_path / "o.nii.gz")
    assert tuple(written.shape[1:]) == (volume.shape[0], volume.shape[1], 15)
    np.testing.assert_allclose(
        np.linalg.norm(written.affine.numpy()[:3, :3], axis=0), [0.7, 0.7, 2.0], atol=1e-6
    )
    slab_centre = lambda a, n: a @ np.array([0, 0, (n - 1) / 2, 1.0])  # noqa: E731
    np.testing.assert_allclose(slab_centre(written.affine.numpy(), 15), slab_centre(affine, 6), atol=1e-5)
    assert json.loads((tmp_path / "o.nii.gz.json").read_text())["slice_spacing_mm"] == 2.0
    for args, message in (
        (["--slice-spacing", "2"], "--slice-spacing sets the slice spacing of --through-plane"),
        (
            ["--through-plane", "--slice-spacing", "5"],
            "--slice-spacing 5 mm is not finer than its 5 mm slices",
        ),
        (["--through-plane", "--slice-spacing", "nan"], "--slice-spacing must be a positive number of mm"),
    ):
        refused = _invoke(str(source), "--model", model, *args, "-o", str(tmp_path / "x.nii.gz"))
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr
        assert not (tmp_path / "x.nii.gz").exists()


def test_slice_spacing_is_between_slice_planes_on_a_tilted_grid(tmp_path, small_ct_volume):
    """A gantry-tilted grid: slices 3.06 mm apart along the sheared column, 3.0 mm apart as planes
    (what DICOM's SpacingBetweenSlices says). ``--slice-spacing`` is between planes: 1 mm gave
    0.98 mm planes, and 3.02 mm (coarser than the input's planes) was accepted."""
    from srgan_med.io.geometry import plane_spacing

    volume, _ = small_ct_volume
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0.6, -20], [0, 0, 3.0, 30], [0, 0, 0, 1.0]])
    source = write_nifti(tmp_path / "tilted.nii.gz", volume[:, :, :6], affine)
    model = str(_bundle(tmp_path))
    args = ["--model", model, "--through-plane", "--slice-spacing"]
    result = _invoke(str(source), *args, "1", "-o", str(tmp_path / "o.nii.gz"))
    assert result.exit_code == 0, result.stderr
    written = load_scan(tmp_path / "o.nii.gz").affine.numpy()
    assert plane_spacing(written, 2) == pytest.approx(1.0, abs=1e-6)
    report = json.loads((tmp_path / "o.nii.gz.json").read_text())
    assert report["output_slice_spacing_mm"] == pytest.approx(1.0, abs=1e-6)
    assert report["output_voxel_mm"][2] == pytest.approx(np.hypot(0.6, 3.0) / 3.0, abs=1e-6)  # the column
    np.testing.assert_allclose(written[:3, 2] / written[2, 2], affine[:3, 2] / affine[2, 2])  # same tilt
    refused = _invoke(str(source), *args, "3.02", "-o", str(tmp_path / "x.nii.gz"))
    assert refused.exit_code == 2 and "is not finer than its 3 mm slices" in refused.stderr, refused.stderr
    assert not (tmp_path / "x.nii.gz").exists()


def test_a_slice_spacing_far_finer_than_the_model_is_refused_before_any_work(tmp_path, small_ct_volume):
    """1e-9 mm (a typo) passed the checks, ran the whole inference, then died allocating 60 GiB."""
    volume, _ = small_ct_volume
    affine = np.diag([0.7, 0.7, 4.0, 1.0])
    source = write_nifti(tmp_path / "thick.nii.gz", volume[:, :, :4], affine)
    model = str(_bundle(tmp_path))
    args = [str(source), "--model", model, "--through-plane", "--slice-spacing"]
    refused = _invoke(*args, "1e-9", "-o", str(tmp_path / "x.nii.gz"))
    assert refused.exit_code == 2, refused.stderr
    assert "would interpolate more than 8 slices per slice of the model's x2 (2 mm); give 0.25 mm" in (
        refused.stderr
    )
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "x.nii.gz.json").exists()
    accepted = _invoke(*args, "0.25", "-o", str(tmp_path / "o.nii.gz"))  # the finest allowed
    assert accepted.exit_code == 0, accepted.stderr
    assert load_scan(tmp_path / "o.nii.gz").shape[-1] == 64


def test_the_report_says_how_the_volume_was_upscaled(tmp_path, small_ct_volume):
    """In-plane and through-plane runs reported the same keys and the same ``slice_axis`` meaning two
    things; the voxel sizes, the plane and a guessed modality were not said."""
    volume, _ = small_ct_volume
    affine = np.diag([0.7, 0.8, 4.0, 1.0])
    source = write_nifti(tmp_path / "thick.nii.gz", volume[:, :, :4], affine)
    model = str(_bundle(tmp_path))
    reports = {}
    for name, extra in (
        ("in", []),
        ("tp", ["--through-plane"]),
        ("rs", ["--through-plane", "--slice-spacing", "1.5"]),
    ):
        result = _invoke(str(source), "--model", model, *extra, "-o", str(tmp_path / f"{name}.nii.gz"))
        assert result.exit_code == 0, result.stderr
        reports[name] = json.loads((tmp_path / f"{name}.nii.gz.json").read_text())
    inplane, through, resampled = reports["in"], reports["tp"], reports["rs"]
    assert (inplane["through_plane"], inplane["plane"], inplane["upscaled_axes"]) == (False, "auto", [0, 1])
    assert inplane["plane_used"] == "axial"  # what auto chose ("plane" says only "auto")
    assert (through["through_plane"], through["slice_axis"], through["upscaled_axes"]) == (True, 2, [2])
    assert inplane["input_voxel_mm"] == [0.7, 0.8, 4.0]
    assert inplane["output_voxel_mm"] == [0.35, 0.4, 4.0] and through["output_voxel_mm"] == [0.7, 0.8, 2.0]
    assert resampled["output_voxel_mm"] == [0.7, 0.8, 1.5] and resampled["slice_spacing_mm"] == 1.5
    assert "before resampling" in resampled["consistency_of"] and "consistency_of" not in through
    assert inplane["modality_guessed"] is True
    tagged = _invoke(str(source), "--model", model, "--modality", "CT", "-o", str(tmp_path / "ct.nii.gz"))
    assert tagged.exit_code == 0, tagged.stderr
    assert json.loads((tmp_path / "ct.nii.gz.json").read_text())["modality_guessed"] is False
    import nibabel as nib

    descrip = nib.load(tmp_path / "rs.nii.gz").header["descrip"].tobytes().decode()
    assert "SR x2" in descrip
    warned = _invoke(
        str(source),
        "--model",
        model,
        "--through-plane",
        "--plane",
        "coronal",
        "-o",
        str(tmp_path / "c.nii.gz"),
    )
    assert warned.exit_code == 0, warned.stderr
    assert "--through-plane --plane coronal refines voxel axis 1 (0.8 mm), finer than axis 2 (4 mm)" in (
        warned.stderr
    )


def test_an_output_over_the_memory_budget_is_built_on_disk_with_the_same_result(
    tmp_path, small_ct_volume, monkeypatch
):
    """SRGAN_MED_MAX_ARRAY_MB=0: the float output and its int16 rounding are memory-mapped files
    beside the output, removed afterwards; the written scan is the one an in-memory run writes."""
    import nibabel as nib

    source = write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume)
    model = str(_bundle(tmp_path))
    assert _invoke(str(source), "--model", model, "-o", str(tmp_path / "memory.nii.gz")).exit_code == 0
    monkeypatch.setenv("SRGAN_MED_MAX_ARRAY_MB", "0")
    from srgan_med.io import scratch

    made, allocate = [], scratch.array
    monkeypatch.setattr(scratch, "array", lambda *a, **k: made.append(allocate(*a, **k)) or made[-1])
    (tmp_path / "out").mkdir()
    result = _invoke(str(source), "--model", model, "-o", str(tmp_path / "out" / "disk.nii.gz"))
    assert result.exit_code == 0, result.stderr
    assert [type(a).__name__ for a in made] == ["memmap", "memmap"]  # the float output, its int16 rounding
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["disk.nii.gz", "disk.nii.gz.json"]
    on_disk, in_memory = nib.load(tmp_path / "out" / "disk.nii.gz"), nib.load(tmp_path / "memory.nii.gz")
    assert on_disk.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(on_disk.dataobj), np.asarray(in_memory.dataobj))


def test_output_is_clamped_at_the_input_minimum_and_the_stored_type_maximum(tmp_path):
    """The shipped MR model on pydicom's real MR slice overshoots below the input's minimum: by
    default those values are clamped and the report says how many and how far. The ceiling is the
    stored type's maximum, not the input's (a sharper image may rightly exceed a blurred maximum):
    a uint8 scan stays uint8, a float one has no ceiling. ``--no-clip`` writes the values as computed."""
    ds = pydicom.dcmread(example_path("mr-small"))
    values = ds.pixel_array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    clamped = _invoke("example:mr-small", "--model", "mr-x2", "-o", str(tmp_path / "clip"))
    raw = _invoke("example:mr-small", "--model", "mr-x2", "--no-clip", "-o", str(tmp_path / "raw"))
    assert clamped.exit_code == 0 and raw.exit_code == 0, clamped.stderr + raw.stderr
    raw_values = load_scan(tmp_path / "raw")[0].numpy()
    assert raw_values.min() < low - 20  # the model's overshoot, as computed
    written = load_scan(tmp_path / "clip")[0].numpy()
    assert written.min() >= low
    report = json.loads((tmp_path / "clip.json").read_text())
    assert report["clipped_to"] == [low, 32767.0]  # the slice's values are read as int16
    expected = np.count_nonzero(raw_values < low - 0.5) / raw_values.size
    assert report["clipped_fraction"] >= expected > 0
    assert report["clipped_most"] == pytest.approx(low - raw_values.min(), abs=1)
    assert json.loads((tmp_path / "raw.json").read_text())["clipped_to"] is None
    for flag, says in (("--clip", f"{percent(report['clipped_fraction'])} clamped)"), ("--no-clip", "dB)")):
        out = tmp_path / f"loud{flag}"
        loud = runner.invoke(app, ["enhance", "example:mr-small", "--model", "mr-x2", flag, "-o", str(out)])
        assert loud.exit_code == 0 and says in loud.stdout, loud.stdout

    affine = np.diag([0.3125, 0.3125, 5.0, 1.0])
    eight_bit = np.rint(255 * (values - low) / (high - low)).astype(np.uint8)[:, :, None]
    nifti = write_nifti(tmp_path / "mr8.nii.gz", eight_bit, affine)
    for flag, dtype in (("--clip", "uint8"), ("--no-clip", "float32")):
        out = tmp_path / f"mr8{flag}.nii.gz"
        result = _invoke(str(nifti), "--model", "mr-x2", "--modality", "MR", flag, "-o", str(out))
        assert result.exit_code == 0, result.stderr
        assert load_scan(out).meta["original_dtype"] == dtype
    assert json.loads((tmp_path / "mr8--clip.nii.gz.json").read_text())["clipped_to"] == [0.0, 255.0]

    # a float scan: no ceiling, only the floor
    floats = write_nifti(tmp_path / "mrf.nii.gz", values.astype(np.float32)[:, :, None], affine)
    outputs = {}
    for flag in ("--clip", "--no-clip"):
        out = tmp_path / f"mrf{flag}.nii.gz"
        result = _invoke(str(floats), "--model", "mr-x2", "--modality", "MR", flag, "-o", str(out))
        assert result.exit_code == 0, result.stderr
        outputs[flag] = load_scan(out)[0].numpy()
    assert json.loads((tmp_path / "mrf--clip.nii.gz.json").read_text())["clipped_to"] == [low, None]
    np.testing.assert_allclose(outputs["--clip"], np.maximum(outputs["--no-clip"], low), rtol=1e-6)


def test_derived_series_says_its_source_was_lossy_compressed(tmp_path):
    """PS3.3 C.7.6.1.1.5: LossyImageCompression 01 must never be reset; the derived series dropped
    it (and the ratio and method) for a JPEG 2000 lossy source."""
    source = pydicom_test_files() / "693_J2KI.dcm"
    original = pydicom.dcmread(source)
    assert original.LossyImageCompression == "01"
    result = _invoke(str(source), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    written = pydicom.dcmread(next((tmp_path / "out").iterdir()))
    assert written.LossyImageCompression == "01"
    ratio = float(original.LossyImageCompressionRatio)
    assert float(written.LossyImageCompressionRatio) == pytest.approx(ratio)


def test_a_lossy_transfer_syntax_is_history_even_without_the_tag(tmp_path):
    """A JPEG-LS near-lossless file without LossyImageCompression gave a derived series that did not
    say its pixels had been through lossy compression."""
    source = pydicom_test_files() / "JPEGLSNearLossless_16.dcm"
    assert "LossyImageCompression" not in pydicom.dcmread(source, stop_before_pixels=True)
    result = _invoke(str(source), "--modality", "MR", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    written = pydicom.dcmread(next((tmp_path / "out").iterdir()))
    assert written.LossyImageCompression == "01" and written.LossyImageCompressionMethod == "ISO_14495_1"


def test_a_ct_map_not_in_hu_keeps_its_rescale_type_and_is_warned_about(tmp_path):
    """The derived series of an enhanced CT perfusion map (RescaleType US) was labelled HU."""
    source = pydicom_data_files() / "eCT_Supplemental.dcm"
    result = _invoke(str(source), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "CT values in RescaleType US, not Hounsfield units" in result.stderr
    assert {pydicom.dcmread(f).RescaleType for f in (tmp_path / "out").iterdir()} == {"US"}
    assert load_scan(source).meta["units"] == "US"  # info gave its value range in HU
    ct = _invoke("example:ct-small", "-o", str(tmp_path / "ct"))
    assert ct.exit_code == 0 and "RescaleType" not in ct.stderr
    assert pydicom.dcmread(next((tmp_path / "ct").iterdir())).RescaleType == "HU"


def test_default_output_of_dicom_names_with_dots_is_a_folder(tmp_path):
    """MR_small.IMA and a series folder named by its UID: the default output name was refused
    ("cannot tell the output format")."""
    shutil.copy(pydicom_test_files() / "MR_small.dcm", tmp_path / "MR_small.IMA")
    series = tmp_path / "1.2.840.113619.2.55"
    series.mkdir()
    shutil.copy(pydicom_test_files() / "MR_small.dcm", series / "a.dcm")
    for source, expected in ((tmp_path / "MR_small.IMA", "MR_small_sr"), (series, "1.2.840.113619.2.55_sr")):
        result = _invoke(str(source))
        assert result.exit_code == 0, result.output
        assert (tmp_path / expected).is_dir() and (tmp_path / f"{expected}.json").is_file()


def test_an_existing_report_is_not_replaced_without_overwrite(tmp_path):
    """The JSON report beside the output was replaced silently, even without --overwrite."""
    mine = tmp_path / "out.json"
    mine.write_text('{"mine": 1}')
    result = _invoke("example:mr-small", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "out.json: exists already; pass --overwrite" in result.output
    assert mine.read_text() == '{"mine": 1}' and not (tmp_path / "out").exists()
    assert _invoke("example:mr-small", "-o", str(tmp_path / "out"), "--overwrite").exit_code == 0
    assert json.loads(mine.read_text())["output"] == str(tmp_path / "out")


def test_ctrl_c_between_the_output_and_its_report_leaves_neither(tmp_path, monkeypatch):
    """Interrupted after the volume was renamed into place and before its report was, the run said
    "nothing partial was written" and left the output without a report (a rerun then refused it)."""
    import srgan_med.io.atomic

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(srgan_med.io.atomic, "atomic_output", interrupted)  # only the report's write
    for name in ("ct.nii.gz", "series"):
        result = _invoke("example:ct-small", "-o", str(tmp_path / name))
        assert result.exit_code == 130, (result.output, result.exception)
        assert "interrupted; nothing partial was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_ending_in_a_slash_is_the_folder_outputs_go_into(tmp_path, small_ct_volume):
    """``-o out/`` with one NIfTI input wrote a DICOM series named ``out`` (the slash was lost), where
    two inputs put ``out/a_sr.nii.gz`` and ``out/b_sr.nii.gz`` there."""
    source = write_nifti(tmp_path / "a.nii.gz", *small_ct_volume)
    model = str(_bundle(tmp_path))
    result = _invoke(str(source), "--model", model, "-o", f"{tmp_path / 'out'}/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_sr.nii.gz", "a_sr.nii.gz.json"]


def test_the_current_folder_as_input_is_named_by_its_own_name(tmp_path, small_ct_volume, monkeypatch):
    """``srgan-med enhance .`` inside a series folder ended in "internal error (ValueError:
    PosixPath('.') has an empty name)", with or without -o."""
    scan = load_scan(write_nifti(tmp_path / "ct.nii.gz", *small_ct_volume))
    series = tmp_path / "series"
    write_dicom_series(scan[0].numpy(), scan.affine, series, modality="CT")
    model = str(_bundle(tmp_path))
    monkeypatch.chdir(series)
    result = _invoke(".", "--model", model)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "series_sr").is_dir() and (tmp_path / "series_sr.json").is_file()


def test_a_sheared_grid_to_dicom_is_refused_before_the_work(tmp_path, small_ct_volume):
    """DICOM cannot describe non-perpendicular in-plane axes: the whole volume was upscaled first,
    then "internal error (ValueError: cannot write DICOM ...)" with exit code 1."""
    volume, affine = small_ct_volume
    sheared = np.array(affine, dtype=np.float64)
    sheared[:3, 1] += 0.2 * sheared[:3, 0]  # j leans towards i: a sheared in-plane grid
    source = write_nifti(tmp_path / "sheared.nii.gz", volume, sheared)
    model = str(_bundle(tmp_path))
    for command in (
        ["enhance", str(source), "--model", model, "-o", str(tmp_path / "sr"), "--format", "dicom", "-q"],
        ["degrade", str(source), "-o", str(tmp_path / "lr"), "--scale", "2"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            f"error: {source}: its in-plane voxel axes are not perpendicular (a sheared grid), which "
            "DICOM cannot describe; write NIfTI instead (--format nifti)"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheared.nii.gz", "tiny_x2.safetensors"]


def test_a_grid_orthogonal_but_for_rounding_keeps_its_qform(tmp_path, caplog):
    """An oblique series whose positions are written to 3 decimals (axes 0.001 deg from
    perpendicular) was called a sheared gantry-tilt grid: the NIfTI output lost its qform (code 0;
    dcm2niix writes 1) and a warning said ITK tools would refuse it (SimpleITK reads it)."""
    import nibabel as nib

    angle = np.deg2rad(15.0)
    rows, columns = np.array([1.0, 0, 0]), np.array([0, np.cos(angle), -np.sin(angle)])
    normal = np.cross(rows, columns)
    reference = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
    series = tmp_path / "oblique"
    series.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        ds = reference.copy()
        ds.SOPInstanceUID = f"1.2.3.{k + 1}"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*rows, *columns)]
        ds.ImagePositionPatient = [f"{v:.3f}" for v in np.array([-40.0, -35.3, 12.7]) + k * normal]
        ds.Rows = ds.Columns = 32
        ds.PixelData = rng.integers(0, 1000, (32, 32)).astype(np.int16).tobytes()
        ds.save_as(series / f"{k:03d}.dcm")
    out = tmp_path / "oblique_sr.nii.gz"
    with caplog.at_level("WARNING", logger="srgan_med"):
        result = _invoke(str(series), "--model", str(_bundle(tmp_path)), "-o", str(out))
    assert result.exit_code == 0, result.output
    header = nib.load(out).header
    assert int(header["qform_code"]) == 1 and np.allclose(header.get_qform(), header.get_sform(), atol=1e-3)
    assert "sheared grid" not in caplog.text and "sheared grid" not in result.output


def test_an_invalid_header_value_copied_into_the_derived_series_is_not_a_raw_warning(tmp_path):
    """A source with PatientAge "22Y" (invalid AS) wrote pydicom's UserWarning lines to stderr as
    the header was copied; the reader had taken it silently."""
    ds = pydicom.dcmread(pydicom_test_files() / "CT_small.dcm")
    ds.PatientAge = "22Y"
    source = tmp_path / "bad_age.dcm"
    ds.save_as(source)
    model = str(_bundle(tmp_path))
    with warnings.catch_warnings(record=True) as caught:  # pytest would swallow them from stderr
        warnings.simplefilter("always")
        result = _invoke(str(source), "--model", model)
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught if "pydicom" in w.filename] == []
    assert pydicom.dcmread(next((tmp_path / "bad_age_sr").glob("*.dcm"))).PatientAge == "22Y"


def test_ctrl_c_during_the_second_input_names_the_outputs_already_complete(tmp_path, monkeypatch):
    """It said only "nothing partial was written", not which outputs were complete and kept."""
    import srgan_med.io

    real_load, calls = srgan_med.io.load_scan, []

    def load_then_interrupt(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:  # the second input
            raise KeyboardInterrupt
        return real_load(*args, **kwargs)

    monkeypatch.setattr(srgan_med.io, "load_scan", load_then_interrupt)
    result = _invoke("example:ct-small", "example:mr-small", "-o", str(tmp_path / "out"))
    assert result.exit_code == 130, (result.output, result.exception)
    first = tmp_path / "out" / "CT_small_sr"
    assert result.stderr.strip() == (
        f"error: interrupted; nothing partial was written (1 of 2 written before it: {first})"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CT_small_sr", "CT_small_sr.json"]
