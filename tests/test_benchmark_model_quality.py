"""``benchmarks/model_quality.py`` with a randomly initialised tiny SRResNet on the public CT scans.

The weights are random, so the model must fail the bar, and the benchmark must say so (exit 1, FAIL
rows) with the numbers ``srgan-med evaluate`` gives for the same command.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path

import pytest
import torch
from conftest import SHARED_SCANS, load_benchmark
from typer.testing import CliRunner

from srgan_med.degrade.config import NormaliseConfig
from srgan_med.models.bundle import save_bundle
from srgan_med.nets import SRResNet

REPO = Path(__file__).resolve().parents[1]
CT_SCANS = sorted(p.name for p in SHARED_SCANS.glob("ct_*.nii.gz") if "8bit" not in p.name)
needs_shared = pytest.mark.skipif(
    not SHARED_SCANS.is_dir(), reason=f"public scans not available at {SHARED_SCANS} (team workspace only)"
)


def tiny_bundle(folder: Path, modality: str = "CT") -> Path:
    torch.manual_seed(0)
    generator = SRResNet(scale=2, blocks=2, width=8)
    normalisation = NormaliseConfig("window") if modality == "CT" else NormaliseConfig("percentile")
    return save_bundle(
        folder / f"tiny_{modality.lower()}_x2.safetensors",
        generator,
        architecture={"name": "srresnet", "kwargs": {"scale": 2, "blocks": 2, "width": 8}},
        scale=2,
        modality=modality,
        normalisation=normalisation,
        card={"summary": "random-init test model (NOT trained)", "weights": "random"},
    )


def run_benchmark(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = load_benchmark("model_quality").main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    model = tiny_bundle(folder)
    out = folder / "out"
    args = ("--model", str(model), "--out", str(out), "--max-slices", "2", "--scans", str(SHARED_SCANS))
    code, stdout, stderr = run_benchmark(*args)
    return code, stdout, stderr, out


@needs_shared
def test_random_model_fails_the_bar_and_says_so(ct_run):
    code, stdout, stderr, out = ct_run
    assert code == 1, stderr
    report = json.loads((out / "model_quality.json").read_text())
    rows = report["rows"]
    assert {(r["scan"], r["family"]) for r in rows} == {
        (scan, family) for scan in CT_SCANS for family in ("box", "gaussian", "bicubic")
    }
    for row in rows:
        assert row["passed"] is False and row["psnr_gain"] < 0
        assert row["psnr_gain"] == pytest.approx(row["psnr_model"] - row["psnr_bicubic"])
        assert 20 < row["psnr_bicubic"] < 60  # bicubic on a real CT: a sane number, not a parsing slip
    assert report["verdicts"]["tiny_ct_x2"].startswith("FAIL (9 of 9")
    table = (out / "model_quality.md").read_text()
    assert table.count("| FAIL |") == 9 and "| pass |" not in table
    for key in ("date", "device", "command"):
        assert f"- {key}: " in table and report[key] in stdout
    assert "--max-slices 2" in report["command"]
    # The 8-bit display-windowed CT has no HU: left out, with the reason printed.
    assert any("ct_head_pitch_8bit" in reason and "read as MR" in reason for reason in report["skipped"])
    assert "ct_head_pitch_8bit" in stdout


@needs_shared
def test_numbers_are_those_of_srgan_med_evaluate(ct_run):
    from srgan_med.cli import app

    _, _, _, out = ct_run
    report = json.loads((out / "model_quality.json").read_text())
    command = next(c for c in report["commands"] if "ct-bicubic.yaml" in c)
    words = shlex.split(command)
    assert words[:2] == ["srgan-med", "evaluate"]
    benchmark_metrics = (out / "runs" / "tiny_ct_x2" / "bicubic" / "metrics.csv").read_text()
    again = out.parent / "again"
    words[words.index("--out") + 1] = str(again)
    result = CliRunner().invoke(app, [*words[1:], "--quiet"])
    assert result.exit_code == 0, result.output
    assert (again / "metrics.csv").read_text() == benchmark_metrics


def test_no_shipped_models_exits_2_with_one_line(monkeypatch, tmp_path):
    from srgan_med.models import bundle

    monkeypatch.setattr(bundle, "shipped_models", lambda: {})
    code, stdout, stderr = run_benchmark("--out", str(tmp_path / "out"))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: no shipped models")


def test_bad_model_and_family_exit_2(tmp_path):
    code, _, stderr = run_benchmark("--model", str(tmp_path / "missing.safetensors"))
    assert code == 2 and stderr.startswith("error: model") and stderr.count("\n") == 1
    model = tiny_bundle(tmp_path)
    code, _, stderr = run_benchmark("--model", str(model), "--families", "box,lanczos")
    assert code == 2 and "lanczos" in stderr


def test_no_data_is_not_a_pass(tmp_path):
    model = tiny_bundle(tmp_path)
    code, stdout, _ = run_benchmark(
        "--model", str(model), "--scans", str(tmp_path / "absent"), "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert "not found" in stdout and "NO DATA" in (tmp_path / "out" / "model_quality.md").read_text()


@needs_shared
def test_mr_sources_and_reasons():
    module = load_benchmark("model_quality")
    found, skipped = module.find_scans("MR", SHARED_SCANS)
    names = [p.name for p in found]
    assert {n for n in names if n.startswith("mr_")} == {p.name for p in SHARED_SCANS.glob("mr_*.nii.gz")}
    assert not any(n.startswith("ct_") for n in names)
    try:
        import nilearn  # noqa: F401
    except ImportError:
        assert any("MNI152" in reason and "nilearn" in reason for reason in skipped)
    else:
        assert any("mni_icbm152" in n for n in names) or any("MNI152" in r for r in skipped)


def test_the_clamping_mode_is_in_every_command_and_the_report():
    """``--no-clip`` reaches the printed ``srgan-med evaluate`` commands and the report's header."""
    bench = load_benchmark("model_quality")
    args = ([Path("a.nii.gz")], 2, 0, "c.yaml", Path("o"), "auto", "ct-x2")
    assert "--no-clip" in shlex.split(bench.evaluate_command(*args, clip=False))
    assert "--no-clip" not in shlex.split(bench.evaluate_command(*args))
    header = {"date": "d", "device": "cpu", "command": "c", "region_note": "r"}
    assert "scored as computed" in bench.markdown([], {}, {**header, "clip": False}, [], [])
    assert "clamped before scoring" in bench.markdown([], {}, {**header, "clip": True}, [], [])
    assert bench.parse_args(["--no-clip"]).no_clip and not bench.parse_args([]).no_clip
