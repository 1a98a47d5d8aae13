"""``evaluate`` on tiny volumes: every output written, rows as expected, baselines honest."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import write_nifti
from monai.data import MetaTensor
from PIL import Image
from typer.testing import CliRunner

from srgan_med import metrics
from srgan_med.cli import app
from srgan_med.evaluate.core import Case, evaluate_case, interpolation_method
from srgan_med.evaluate.figures import BOX_PLOT_INCHES, DPI, montage_size, plot_gain_boxplot, plot_montage
from srgan_med.evaluate.report import summarise, write_tables
from srgan_med.io import load_scan, rescaled_affine, save_scan

METHODS = ["nearest", "linear", "bicubic", "bspline", "lanczos"]


def _pair(tmp_path, index: int, small_ct_volume):
    volume, affine = small_ct_volume
    rng = np.random.default_rng(index)
    high = (volume[:, :, :6] + rng.normal(0, 5, volume[:, :, :6].shape)).astype(np.float32)
    low = high.reshape(high.shape[0] // 2, 2, high.shape[1] // 2, 2, high.shape[2]).mean(axis=(1, 3))
    high_res = MetaTensor(
        torch.from_numpy(high[None]),
        affine=torch.as_tensor(affine),
        meta={"modality": "CT", "original_dtype": "float32"},
    )
    low_res = MetaTensor(
        torch.from_numpy(low[None]),
        affine=torch.as_tensor(rescaled_affine(affine, (0.5, 0.5, 1))),
        meta={"modality": "CT", "original_dtype": "float32"},
    )
    high_path = save_scan(high_res, tmp_path / f"hr{index}.nii.gz")
    low_path = save_scan(low_res, tmp_path / f"lr{index}.nii.gz")
    return high_path, low_path


def test_evaluate_command_writes_every_output(tmp_path, small_ct_volume):
    pairs = [_pair(tmp_path, i, small_ct_volume) for i in range(2)]
    out = tmp_path / "report"
    args = ["evaluate", *[str(h) for h, _ in pairs], "--out", str(out), "--quiet"]
    for _, low in pairs:
        args += ["--low-res", str(low)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "metrics.csv",
            "slices.csv",
            "summary.json",
            "report.md",
            "psnr_gain_boxplot.png",
            "montage_00_hr0.png",
            "montage_01_hr1.png",
        ]
    )
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 * len(METHODS) * 2  # volumes x methods x (whole, mask)
    assert {r["method"] for r in rows} == set(METHODS)
    summary = json.loads((out / "summary.json").read_text())
    bicubic = summary["methods"]["bicubic"]["gain_over_bicubic"]["psnr_volumes"]
    assert bicubic["mean_gain"] == 0.0 and bicubic["ci_low"] == 0.0 and bicubic["ci_high"] == 0.0
    nearest = summary["methods"]["nearest"]
    assert nearest["mean"]["psnr"] < summary["methods"]["bicubic"]["mean"]["psnr"]
    assert nearest["gain_over_bicubic"]["psnr_slices"]["n"] > 0
    report = (out / "report.md").read_text()
    assert "| bicubic |" in report and "srgan-med evaluate" in report
    with Image.open(out / "montage_00_hr0.png") as image:
        assert image.size == montage_size(len(METHODS))
    with Image.open(out / "psnr_gain_boxplot.png") as image:
        assert image.size == (int(BOX_PLOT_INCHES[0] * DPI), int(BOX_PLOT_INCHES[1] * DPI))
    # the same output again needs --overwrite, and the first result stays as it was
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_a_perfect_method_is_reported_without_crashing(tmp_path, small_ct_volume):
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    high_res, low_res = load_scan(high_path), load_scan(low_path)
    methods = {"bicubic": interpolation_method("bicubic"), "oracle": lambda *_: high_res[0].numpy()}
    # as computed: clamped to the low-res range, the reference would lose its own peaks
    result = evaluate_case(Case("v", high_res, low_res, 2, (2, 2)), methods, "auto", clip=False)
    oracle_rows = [r for r in result.rows if r["method"] == "oracle"]
    assert all(r["psnr"] == float("inf") and r["ssim"] == pytest.approx(1.0) for r in oracle_rows)
    summary = summarise([result], list(methods))
    assert summary["methods"]["oracle"]["mean"]["psnr"] == "inf"
    assert summary["methods"]["oracle"]["gain_over_bicubic"]["psnr_volumes"]["mean_gain"] == "inf"
    write_tables([result], summary, tmp_path, "test")
    json.loads((tmp_path / "summary.json").read_text())  # valid JSON despite the infinity
    high = high_res[0].numpy().astype(np.float64)
    plot_montage(result, high, tmp_path / "m.png")
    plot_gain_boxplot([result], list(methods), tmp_path / "b.png")
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_misaligned_pair_is_a_clear_error(tmp_path, small_ct_volume):
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    low = load_scan(low_path)
    shifted = low.clone()
    shifted.affine[0, 3] += 0.5
    moved = save_scan(shifted, tmp_path / "moved.nii.gz", reference=low)
    result = CliRunner().invoke(
        app, ["evaluate", str(high_path), "--low-res", str(moved), "-o", str(tmp_path / "x"), "-q"]
    )
    assert result.exit_code == 2 and "do not overlay" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_pair_of_one_shape_is_refused(tmp_path, small_ct_volume):
    """The scan given as its own low-res was scored at x1 (every method perfect): meaningless."""
    high_path, _ = _pair(tmp_path, 0, small_ct_volume)
    result = CliRunner().invoke(
        app, ["evaluate", str(high_path), "--low-res", str(high_path), "-o", str(tmp_path / "x"), "-q"]
    )
    assert result.exit_code == 2 and "there is nothing to upscale" in result.stderr
    assert not (tmp_path / "x").exists()


def test_unknown_method_and_missing_low_res(tmp_path, small_ct_volume):
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(high_path),
            "--low-res",
            str(low_path),
            "--methods",
            "bicubic,magic",
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 2 and "unknown method(s) magic; available: nearest, linear" in result.stderr
    assert "a shipped model (ct-x2, ct-x4, mr-x2, mr-x4), auto, or a .safetensors file" in result.stderr
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(high_path),
            "--low-res",
            str(low_path),
            "--low-res",
            str(low_path),
            "-o",
            str(tmp_path / "y"),
        ],
    )
    assert result.exit_code == 2 and "1 high-res inputs but 2 low-res inputs" in result.stderr


def test_synthesised_low_res_with_the_degradation_preset(tmp_path, small_ct_volume):
    high_path, _ = _pair(tmp_path, 0, small_ct_volume)
    out = tmp_path / "synth"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(high_path), "--scale", "3", "--methods", "bicubic,lanczos", "-o", str(out), "-q"],
    )
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["method"] for r in rows} == {"bicubic", "lanczos"}
    assert all(10 < float(r["psnr"]) < 80 for r in rows)
    assert "--scale 3" in (out / "report.md").read_text()
    again = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(high_path),
            "--scale",
            "3",
            "--methods",
            "bicubic,lanczos",
            "-o",
            str(tmp_path / "synth2"),
            "-q",
        ],
    )
    assert again.exit_code == 0
    assert (tmp_path / "synth2" / "metrics.csv").read_text() == (out / "metrics.csv").read_text()  # seeded


def test_images_smaller_than_the_ssim_window_get_no_ssim_but_the_other_metrics(tmp_path):
    """pydicom's JPEGLSNearLossless_08.dcm is one 10x45 image: 7 pixels or more, but less than SSIM's
    11x11 Gaussian window (sigma 1.5), which scikit-image refuses; that was an internal error."""
    from conftest import pydicom_test_files

    source = pydicom_test_files() / "JPEGLSNearLossless_08.dcm"
    out = tmp_path / "small"
    result = CliRunner().invoke(app, ["evaluate", str(source), "--scale", "2", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and all(r["ssim"] == "nan" and np.isfinite(float(r["psnr"])) for r in rows)
    with pytest.raises(ValueError, match=r"too small for SSIM \(11x11 at least\)"):
        metrics.ssim(np.zeros((10, 45)), np.ones((10, 45)), 1.0)
    assert metrics.ssim(np.zeros((11, 45)), np.zeros((11, 45)), 1.0) == pytest.approx(1.0)


def test_models_sharing_a_file_name_each_get_a_row_and_auto_follows_each_volumes_modality(tmp_path):
    """Two checkpoints called ``ct-x2.safetensors`` used to collapse into one row; ``auto`` picks per scan."""
    import shutil

    from srgan_med.models.bundle import shipped_models

    copy = tmp_path / "run" / "ct-x2.safetensors"  # another run's export, named like the shipped model
    copy.parent.mkdir()
    shutil.copy(shipped_models()["ct-x2"], copy)
    out = tmp_path / "report"
    models = ["ct-x2", str(copy), "ct-x2", "mr-x2"]  # and auto in --methods, which takes models too
    args = ["evaluate", "example:ct-small", "example:mr-small", "--scale", "2", "--methods", "bicubic,auto"]
    result = CliRunner().invoke(
        app, [*args, *[w for m in models for w in ("--model", m)], "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["bicubic", "ct-x2", str(copy), "mr-x2", "auto"]  # both as given
    assert summary["auto_models"] == {"00_CT_small": "ct-x2", "01_MR_small": "mr-x2"}
    assert (
        "`auto` is the shipped model of each volume's modality and scale" in (out / "report.md").read_text()
    )
    with open(out / "metrics.csv") as handle:
        psnr = {
            (row["volume"], row["method"], row["region"]): float(row["psnr"])
            for row in csv.DictReader(handle)
        }
    for region in ("whole", "mask"):
        assert psnr["00_CT_small", "auto", region] == psnr["00_CT_small", "ct-x2", region]
        assert psnr["01_MR_small", "auto", region] == psnr["01_MR_small", "mr-x2", region]
        assert psnr["00_CT_small", str(copy), region] == psnr["00_CT_small", "ct-x2", region]
    assert psnr["01_MR_small", "auto", "whole"] != psnr["01_MR_small", "ct-x2", "whole"]


def test_auto_model_without_a_shipped_model_for_the_scale_is_one_line(tmp_path):
    out = tmp_path / "report"
    args = ["evaluate", "example:ct-small", "--scale", "3", "--model", "auto", "-o", str(out), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: 00_CT_small: no shipped model for CT scans at x3")
    assert result.stderr.count("\n") == 1 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_mask_file_must_be_on_the_reference_grid_is_cropped_with_it_and_not_empty(
    tmp_path, small_ct_volume
):
    volume, affine = small_ct_volume
    volume = volume[:39, :31, :4]  # not whole x4 blocks: the reference is cropped to 36 x 28
    source = write_nifti(tmp_path / "ct.nii.gz", volume, affine)
    inside = np.zeros(volume.shape, np.uint8)
    inside[4:30, 4:24, :] = 1
    good = write_nifti(tmp_path / "mask.nii.gz", inside, affine)
    args = ["evaluate", str(source), "--scale", "4", "--methods", "bicubic", "-q"]
    result = CliRunner().invoke(app, [*args, "--mask", str(good), "-o", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.stderr  # was: mask shape (39, 31, 4) differs from (36, 28, 4)
    flipped_affine = affine @ np.array(
        [[-1, 0, 0, volume.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]
    )
    flipped = write_nifti(
        tmp_path / "flipped.nii.gz", inside[::-1].copy(), flipped_affine
    )  # same voxels, other order
    empty = write_nifti(tmp_path / "empty.nii.gz", np.zeros(volume.shape, np.uint8), affine)
    for mask, message in (
        (flipped, "flipped.nii.gz: the mask is not on 00_ct's grid (affines differ by"),
        (empty, "empty.nii.gz: the mask is empty inside 00_ct (no nonzero voxel)"),  # was an internal error
    ):
        refused = CliRunner().invoke(app, [*args, "--mask", str(mask), "-o", str(tmp_path / "x")])
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and not (tmp_path / "x").exists()


def test_an_exact_slice_is_left_out_of_the_gain_not_made_infinite(tmp_path, small_ct_volume):
    """One slice a method gets exactly right used to make its slice gain "inf"."""
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    high_res, low_res = load_scan(high_path), load_scan(low_path)
    bicubic = interpolation_method("bicubic")

    def exact_on_slice_0(*args):
        reconstructed = bicubic(*args)
        reconstructed[..., 0] = high_res[0, ..., 0].numpy()
        return reconstructed

    methods = {"bicubic": bicubic, "patched": exact_on_slice_0}
    result = evaluate_case(Case("v", high_res, low_res, 2, (2, 2)), methods, "none", clip=False)
    summary = summarise([result], list(methods))
    gain = summary["methods"]["patched"]["gain_over_bicubic"]["psnr_slices"]
    assert gain["mean_gain"] == 0.0 and gain["excluded"] == 1
    assert gain["n"] == high_res.shape[-1] - 1
    write_tables([result], summary, tmp_path, "test")
    assert (
        f"| patched | psnr_slices | {gain['n']} (1 exact left out) |" in (tmp_path / "report.md").read_text()
    )


def test_a_flat_reference_slice_is_left_out_of_the_slice_scores(tmp_path, small_ct_volume):
    """A slice of one value (padding, air) scored ~170 dB, the round-off of the float32 round trip,
    and its differences between methods entered the slice gains as dB (+2.9 dB on a real CT crop)."""
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    high_res, low_res = load_scan(high_path), load_scan(low_path)
    high_res[0, :, :, 0], low_res[0, :, :, 0] = 40.0, 40.0 + 1e-5  # flat, but not exactly recovered
    methods = {name: interpolation_method(name) for name in ("bicubic", "lanczos")}
    result = evaluate_case(Case("v", high_res, low_res, 2, (2, 2)), methods, "none")
    assert result.flat_slices == 1
    assert all(np.isnan(r["psnr"]) for r in result.slice_rows if r["slice"] == 0)
    summary = summarise([result], list(methods))
    gain = summary["methods"]["lanczos"]["gain_over_bicubic"]["psnr_slices"]
    assert gain["unscored"] == 1 and gain["n"] == high_res.shape[-1] - 1
    assert summary["flat_reference_slices"] == {"v": 1}
    write_tables([result], summary, tmp_path, "test")
    report = (tmp_path / "report.md").read_text()
    assert "Reference slices of one value (padding, all air; v: 1) are left out" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "64"], "00_MR_small: --scale 64 leaves fewer than 2 low-res voxels of its 64 in-plane"),
        (["--low-res", ""], "an input path is empty"),  # was "output would overwrite the input" (the cwd)
    ],
)
def test_impossible_pairs_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["evaluate", "example:mr-small", *args, "-o", str(tmp_path / "x"), "-q"])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_constant_reference_is_refused_not_scored(tmp_path):
    """PSNR of a constant MR-like volume was -96 dB (a data range forced to 1e-6), NRMSE inf, exit 0."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((16, 16, 3), 5.0, np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "flat.nii.gz"), "--scale", "2", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and not (tmp_path / "x").exists()
    assert "00_flat: the reference has no intensity range" in result.stderr


def test_two_trained_models_of_one_file_name_both_keep_their_paths(tmp_path):
    import shutil

    from srgan_med.evaluate.run import resolve_methods
    from srgan_med.models.bundle import shipped_models

    given = []
    for run in ("run_a", "run_b"):
        (tmp_path / run).mkdir()
        given.append(
            str(shutil.copy(shipped_models()["ct-x2"], tmp_path / run / "ct-x2-srresnet.safetensors"))
        )
    methods, _ = resolve_methods(["bicubic"], given)
    assert list(methods) == ["bicubic", *given]  # the first used to be the bare "ct-x2-srresnet"


def test_degrade_output_of_an_odd_sized_scan_pairs_with_its_source(tmp_path, small_ct_volume):
    """degrade drops an incomplete last block; evaluate --low-res crops the reference the same way."""
    volume, affine = small_ct_volume
    source = write_nifti(tmp_path / "ct.nii.gz", volume[:39, :31, :4], affine)
    degraded = CliRunner().invoke(
        app, ["degrade", str(source), "-o", str(tmp_path / "lr.nii.gz"), "--scale", "4"]
    )
    assert degraded.exit_code == 0, degraded.stderr
    assert load_scan(tmp_path / "lr.nii.gz").shape[1:] == (9, 7, 4)
    args = ["evaluate", str(source), "--low-res", str(tmp_path / "lr.nii.gz"), "--methods", "bicubic", "-q"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.stderr  # was: (39, 31, 4) is not an integer multiple of (9, 7, 4)
    shifted = load_scan(tmp_path / "lr.nii.gz")
    shifted.affine[0, 3] += 1.0  # a millimetre off: the grids no longer overlay
    from srgan_med.io import save_scan

    save_scan(shifted, tmp_path / "off.nii.gz")
    off = CliRunner().invoke(
        app, [*args[:3], str(tmp_path / "off.nii.gz"), *args[4:], "-o", str(tmp_path / "x")]
    )
    assert off.exit_code == 2 and "grids do not overlay" in off.stderr


def test_summary_aggregates_the_whole_volume_beside_the_mask(tmp_path, small_ct_volume):
    pairs = [_pair(tmp_path, i, small_ct_volume) for i in range(2)]
    results = [
        evaluate_case(
            Case(f"v{i}", load_scan(h), load_scan(lr), 2, (2, 2)),
            {"bicubic": interpolation_method("bicubic")},
        )
        for i, (h, lr) in enumerate(pairs)
    ]
    summary = summarise(results, ["bicubic"])
    whole = [row["psnr"] for r in results for row in r.rows if row["region"] == "whole"]
    masked = [row["psnr"] for r in results for row in r.rows if row["region"] == "mask"]
    entry = summary["methods"]["bicubic"]
    assert entry["mean_whole_volume"]["psnr"] == pytest.approx(np.mean(whole))
    assert entry["mean"]["psnr"] == pytest.approx(np.mean(masked)) and summary["region"] == "mask"
    write_tables(results, summary, tmp_path, "test")
    assert "Over the whole volume:" in (tmp_path / "report.md").read_text()


def test_reconstructions_are_clamped_as_enhance_writes_them(tmp_path, small_ct_volume):
    """Bicubic overshoots at edges: by default each method is scored clamped as ``enhance`` clamps
    (here, a float scan: at the low-res minimum only) and the report says how much was clamped;
    ``--no-clip`` scores the values as computed."""
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    high_res, low_res = load_scan(high_path), load_scan(low_path)
    case = Case("v", high_res, low_res, 2, (2, 2))
    bicubic = interpolation_method("bicubic")
    raw = evaluate_case(case, {"bicubic": bicubic}, "none", clip=False).reconstructions["bicubic"]
    floor = float(low_res.min())
    outside = np.count_nonzero(raw < floor)
    assert outside > 0
    brighter = lambda *args: 1.5 * bicubic(*args)  # noqa: E731 - above the low-res maximum too
    clamped = evaluate_case(case, {"bicubic": bicubic, "brighter": brighter}, "none")
    np.testing.assert_array_equal(clamped.reconstructions["bicubic"], np.maximum(raw, floor))
    assert clamped.reconstructions["brighter"].max() == pytest.approx(1.5 * raw.max())  # no ceiling
    assert clamped.clipped["bicubic"] == pytest.approx(outside / raw.size)

    runs = {}
    for flag in ("--clip", "--no-clip"):
        out = tmp_path / flag
        args = ["evaluate", str(high_path), "--low-res", str(low_path), "--methods", "bicubic,lanczos"]
        result = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet", flag])
        assert result.exit_code == 0, result.stderr
        runs[flag] = json.loads((out / "summary.json").read_text())
        assert ("--no-clip" in runs[flag]["command"]) == (flag == "--no-clip")
    assert runs["--clip"]["clip"] and not runs["--no-clip"]["clip"]
    assert runs["--clip"]["methods"]["bicubic"]["clipped_fraction"] == pytest.approx(outside / raw.size)
    assert "clipped_fraction" not in runs["--no-clip"]["methods"]["bicubic"]
    psnr = {flag: run["methods"]["bicubic"]["mean_whole_volume"]["psnr"] for flag, run in runs.items()}
    assert psnr["--clip"] != psnr["--no-clip"]
    assert "Voxels clamped" in (tmp_path / "--clip" / "report.md").read_text()


def test_one_volume_without_ssim_does_not_blank_the_others(tmp_path):
    """A volume too small for SSIM (NaN) made the SSIM mean n/a for every method, while the gain
    table counted it for bicubic only; the per-volume table printed "nan"."""
    from conftest import pydicom_test_files

    small = pydicom_test_files() / "JPEGLSNearLossless_08.dcm"  # 10x45: no SSIM (see the test above)
    out = tmp_path / "two"
    result = CliRunner().invoke(
        app, ["evaluate", str(small), "example:ct-small", "--scale", "2", "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    scored = [float(r["ssim"]) for r in rows if r["method"] == "lanczos" and r["region"] == "mask"]
    assert np.isnan(scored[0]) and np.isfinite(scored[1])
    summary = json.loads((out / "summary.json").read_text())
    for method, entry in summary["methods"].items():
        assert entry["mean"]["ssim"] is not None, method
        assert entry["unscored_volumes"] == {"ssim": 1}
        assert entry["gain_over_bicubic"]["ssim_volumes"]["n"] == 1
        assert entry["gain_over_bicubic"]["ssim_volumes"]["unscored"] == 1
    lanczos = summary["methods"]["lanczos"]["mean"]["ssim"]
    assert lanczos == pytest.approx(scored[1])
    report = (out / "report.md").read_text()
    assert "left out of the means and gains: SSIM of 1 of 2 volume(s)" in report
    assert "| lanczos | ssim_volumes | 1 (1 unscored left out) |" in report
    assert "nan" not in report


def test_a_scan_gets_the_same_simulated_input_wherever_it_stands_and_the_draws_are_reported(
    tmp_path, small_ct_volume
):
    """The seed was ``seed + position``: the same scan listed second got another PSF and noise level
    (bicubic's PSNR 34.82 -> 35.40 dB on a real CT crop), and no output said which."""
    first, _ = _pair(tmp_path, 0, small_ct_volume)
    second, _ = _pair(tmp_path, 1, small_ct_volume)
    scores = {}
    for order in ((first, second), (second, first)):
        out = tmp_path / f"out_{order[0].name.split('.')[0]}"
        args = [
            "evaluate",
            *map(str, order),
            "--scale",
            "2",
            "--modality",
            "CT",
            "--methods",
            "bicubic",
            "-o",
            str(out),
            "-q",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
        rows = list(csv.DictReader(open(out / "metrics.csv")))
        scores[order] = {(r["volume"][3:], r["region"]): r["psnr"] for r in rows}  # name without "NN_"
        summary = json.loads((out / "summary.json").read_text())
        draws = summary["degradations"]
        assert sorted(draws) == sorted(summary["volumes"]) and all("noise" in d for d in draws.values())
        report = (out / "report.md").read_text()
        assert "## Simulated low-res inputs" in report and "std_hu" in report
    assert scores[(first, second)] == scores[(second, first)]


def test_why_a_metric_was_not_computed_is_the_right_reason(tmp_path):
    """report.md said "SSIM needs slices of at least 7x7 voxels" (the window is 11x11), also where
    HFEN was the metric left out."""
    from srgan_med.evaluate.report import _markdown

    summary = {
        "region": "whole",
        "volumes": ["00_a"],
        "clip": False,
        "methods": {"bicubic": {"mean": {}, "unscored_volumes": {"ssim": 1}}},
    }
    summary["methods"]["bicubic"]["mean"] = {
        name: 1.0 for name in ("psnr", "ssim", "nrmse", "hfen", "gmsd", "mae")
    }
    text = _markdown(summary, "cmd", {})
    assert "SSIM needs slices of at least 11x11 voxels" in text and "HFEN" not in text.split("|")[-1]
    summary["methods"]["bicubic"]["unscored_volumes"] = {"hfen": 1}
    text = _markdown(summary, "cmd", {})
    assert "HFEN is undefined on a flat reference" in text and "SSIM needs" not in text


def test_a_volume_without_foreground_keeps_a_mask_row_and_the_report_says_so(tmp_path, small_ct_volume):
    """The automatic mask of an all-air volume was dropped: the "mask region" means then left that
    volume out without a word."""
    high_path, low_path = _pair(tmp_path, 0, small_ct_volume)
    high_res, low_res = load_scan(high_path, modality="CT"), load_scan(low_path, modality="CT")
    rng = np.random.default_rng(0)
    high_res[0] = torch.as_tensor(-1000 + rng.normal(0, 20, high_res.shape[1:]).astype(np.float32))
    low_res[0] = torch.as_tensor(-1000 + rng.normal(0, 20, low_res.shape[1:]).astype(np.float32))
    methods = {name: interpolation_method(name) for name in ("bicubic", "lanczos")}
    result = evaluate_case(Case("air", high_res, low_res, 2, (2, 2)), methods, "auto")
    assert not result.mask_found and {r["region"] for r in result.rows} == {"whole", "mask"}
    whole, masked = ([r for r in result.rows if r["region"] == region] for region in ("whole", "mask"))
    assert [r["ssim"] for r in whole] == pytest.approx([r["ssim"] for r in masked], rel=1e-12)
    summary = summarise([result], list(methods))
    write_tables([result], summary, tmp_path, "test")
    assert summary["mask_not_found"] == ["air"]
    assert (
        "found no foreground in air: its mask region is the whole volume"
        in (tmp_path / "report.md").read_text()
    )


def test_bicubics_own_row_has_no_gain_or_interval_where_nothing_is_scored():
    """With one pair bicubic's row showed the interval [0, 0], and with none a gain of 0, where every
    other method showed n/a."""
    from srgan_med.evaluate.report import _baseline_gain

    assert _baseline_gain([float("nan")])["mean_gain"] is None
    one = _baseline_gain([31.0])
    assert one["mean_gain"] == 0.0 and one["ci_low"] is None and one["ci_high"] is None
    assert _baseline_gain([31.0, 32.0])["ci_low"] == 0.0


def test_overwrite_replaces_only_an_evaluation_and_never_an_input(tmp_path, small_ct_volume):
    """--overwrite deleted a folder of a user's CSV files and pictures (the names evaluate writes)
    and, with -o naming it, the --mask series that was being read."""
    high, _ = _pair(tmp_path, 0, small_ct_volume)
    base = ["evaluate", str(high), "--scale", "2", "--methods", "bicubic", "-q"]
    out = tmp_path / "report"
    assert CliRunner().invoke(app, [*base, "-o", str(out)]).exit_code == 0
    again = CliRunner().invoke(app, [*base, "-o", str(out), "--overwrite"])
    assert again.exit_code == 0, again.stderr  # its own output: replaced
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "patients.csv").write_text("id,age\n")
    (mine / "photo.png").write_bytes(b"\x89PNG")
    refused = CliRunner().invoke(app, [*base, "-o", str(mine), "--overwrite"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (
        f"error: {mine}: not an evaluation srgan-med wrote (no summary.json of one); --overwrite would "
        "delete it: choose another output or remove it first"
    )
    assert sorted(p.name for p in mine.iterdir()) == ["patients.csv", "photo.png"]
    scan = load_scan(high)
    mask = save_scan(
        MetaTensor((scan.as_tensor() > -500).float(), affine=scan.affine, meta=dict(scan.meta)),
        tmp_path / "mask",
    )
    before = sorted(p.name for p in mask.iterdir())
    refused = CliRunner().invoke(app, [*base, "--mask", str(mask), "-o", str(mask), "--overwrite"])
    assert refused.exit_code == 2 and "output would overwrite the input" in refused.stderr
    assert sorted(p.name for p in mask.iterdir()) == before


def test_one_scan_given_twice_is_refused_not_counted_as_two(tmp_path, small_ct_volume):
    """The same scan twice gave a zero-width 95% interval and a slice p-value 60x smaller."""
    high, low = _pair(tmp_path, 0, small_ct_volume)
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes(high.read_bytes())
    base = ["--scale", "2", "--methods", "bicubic", "-q", "-o", str(tmp_path / "out")]
    cases = [
        (
            [str(high), str(tmp_path / "." / high.name)],
            f"error: {tmp_path / '.' / high.name}: the same scan is given twice",
        ),
        ([str(high), str(copy)], f"error: {copy}: the same voxels and grid as {high}"),
        (
            [str(high), str(high), "--low-res", str(low), "--low-res", str(low)],
            f"error: {high}: the same pair (with --low-res {low}) is given twice",
        ),
    ]
    for args, says in cases:
        result = CliRunner().invoke(app, ["evaluate", *args, *base])
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith(says) and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "out").exists()


def test_a_pair_is_scored_and_modelled_as_one_modality(tmp_path):
    """NIfTI modality is guessed per file: 2x2 averaging removed the one-voxel gas bubbles of a soft
    tissue CT, its low-res scan was guessed MR, and ``--model auto`` ran mr-x2 on a CT pair."""
    rng = np.random.default_rng(1)
    volume = rng.integers(-100, 300, (48, 48, 6)).astype(np.int16)
    volume[rng.random(volume.shape) < 0.01] = -1000  # gas: what makes the reference look like CT
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    high = write_nifti(tmp_path / "hr.nii.gz", volume, affine)
    low_values = volume.reshape(24, 2, 24, 2, 6).mean(axis=(1, 3)).astype(np.float32)
    low = write_nifti(tmp_path / "lr.nii.gz", low_values, rescaled_affine(affine, (0.5, 0.5, 1)))
    assert (load_scan(high).meta["modality"], load_scan(low).meta["modality"]) == ("CT", "MR")
    out = tmp_path / "out"
    args = ["evaluate", str(high), "--low-res", str(low), "--methods", "bicubic", "--model", "auto"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["auto_models"] == {"00_hr": "ct-x2"}


@pytest.mark.parametrize(
    ("codes", "slice_axis", "plane"),
    [
        ("LPS", 2, "axial"),  # a chest CT stored LPS: drawn in voxel order, the spine was at the top
        ("RAS", 2, "axial"),
        ("LAS", 2, "axial"),  # left and right swapped between scans
        ("RSA", 2, "coronal"),  # stored with its slice axis along A
        ("ASL", 0, "axial"),  # permuted voxel axes
    ],
)
def test_montage_slices_are_shown_as_radiologists_read_them(codes, slice_axis, plane):
    """Slices drawn from the affine: the patient's right on the viewer's left, anterior (axial) or
    superior (coronal) up, and the pixel aspect in mm."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff

    from srgan_med.evaluate.display import slice_view

    shape, zooms = (6, 8, 10), np.array([0.8, 1.2, 2.4])
    affine = inv_ornt_aff(axcodes2ornt(codes), shape)
    affine[:3, :3] = affine[:3, :3] * zooms
    world = np.einsum("ij,jklm->iklm", affine[:3, :3], np.indices(shape, dtype=float))  # RAS mm
    view = slice_view(affine, slice_axis)
    assert view.plane == plane
    picture_x = view.orient(np.take(world[0], 2, axis=slice_axis))  # R-L coordinate of each pixel
    assert (np.diff(picture_x, axis=1) < 0).all()  # to the viewer's right: towards the patient's left
    vertical = view.orient(np.take(world[1 if plane == "axial" else 2], 2, axis=slice_axis))
    assert (np.diff(vertical, axis=0) < 0).all()  # down: posterior (axial), inferior (coronal)
    column_mm = abs(float(np.diff(picture_x, axis=1)[0, 0]))
    row_mm = abs(float(np.diff(vertical, axis=0)[0, 0]))
    assert view.aspect == pytest.approx(row_mm / column_mm)
    assert view.edges[:2] == ("R", "L")


def test_the_error_maps_share_a_scale_set_by_the_errors_not_a_fixed_share_of_the_range():
    """At 5% of the data range, more than half of an MR head's pixels sat at the top of the scale
    even for bicubic, and the methods' maps looked alike."""
    from srgan_med.evaluate.figures import error_scale

    rng = np.random.default_rng(0)
    small, large = rng.uniform(0, 10, (40, 40)), rng.uniform(0, 40, (40, 40))
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    top = error_scale([small, large], mask, fallback=5.0)
    assert top == pytest.approx(np.percentile(np.maximum(small, large)[mask], 99))
    assert 35 < top < 40  # the larger error decides: the better method shows darker
    assert error_scale([np.zeros((4, 4))], None, fallback=5.0) == 5.0  # a perfect method
