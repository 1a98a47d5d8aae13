"""``benchmarks/clip_effect.py``: the shipped CT x2 model on a small CT, scored three ways."""

from __future__ import annotations

import json
import math

import numpy as np
from conftest import load_benchmark, write_nifti


def test_every_family_is_scored_as_computed_clamped_and_at_the_input_maximum(tmp_path):
    rng = np.random.default_rng(0)  # a body in air, so that load_scan reads it as CT
    volume = np.full((40, 32, 6), -1000, np.int16)
    volume[5:35, 4:28, :] = rng.integers(-100, 300, size=(30, 24, 6))
    scans = tmp_path / "scans"
    scans.mkdir()
    write_nifti(scans / "ct_crop.nii.gz", volume, np.diag([1.5, 1.5, 1.5, 1.0]))
    out = tmp_path / "out"
    assert (
        load_benchmark("clip_effect").main(["--model", "ct-x2", "--scans", str(scans), "--out", str(out)])
        == 0
    )
    report = json.loads((out / "clip_effect.json").read_text())
    assert "benchmarks/clip_effect.py --model ct-x2" in report["command"] and report["device"]
    rows = report["rows"]
    assert [row["family"] for row in rows] == ["box", "gaussian", "bicubic"]
    for row in rows:
        assert row["model"] == "ct-x2" and row["modality"] == "CT" and row["scan"] == "ct_crop"
        assert 0 <= row["clamped_model"] < 1 and 0 <= row["clamped_bicubic"] < 1
        for way in ("raw", "clamped", "input_range"):
            assert math.isfinite(row[f"psnr_model_{way}"]) and math.isfinite(row[f"ssim_bicubic_{way}"])
    for row in rows:  # where the voxels below the floor lie: the air around the body is background
        assert 0 < row["background_fraction"] < 1
        assert row["background_mean_reference"] < 0 and row["background_std_model"] >= 0
        share = row["below_in_background_model"]
        assert share is None or 0 <= share <= 1
    text = (out / "clip_effect.md").read_text()
    assert text.count("| ct-x2 | ct_crop |") == 6  # a row in each table
    assert "over 3 scan x family pairs" in text and "- CT: voxels clamped" in text
    assert (
        "## Where the voxels below the floor lie" in text and "of the model's voxels below the floor" in text
    )
    (out / "clip_effect.md").unlink()  # written again from the JSON, the same
    assert load_benchmark("clip_effect").main(["--out", str(out), "--report-only"]) == 0
    assert (out / "clip_effect.md").read_text() == text


def test_nothing_to_measure_exits_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "none"
    empty.mkdir()
    code = load_benchmark("clip_effect").main(
        ["--model", "ct-x2", "--scans", str(empty), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert not (tmp_path / "o" / "clip_effect.md").exists()
