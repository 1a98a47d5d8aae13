"""The console script as a user meets it: fast help, module entry point, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from srgan_med import __version__
from srgan_med.cli import app


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "srgan_med", *args], capture_output=True, text=True, timeout=120
    )


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t = time.perf_counter(); from srgan_med.cli import app; "
        "print(time.perf_counter() - t, 'torch' in sys.modules, 'monai' in sys.modules)"
    )
    seconds, torch_loaded, monai_loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert torch_loaded == "False" and monai_loaded == "False"
    start = time.perf_counter()
    result = _run("--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "info" in result.stdout
    assert elapsed < 2.0, f"--help took {elapsed:.2f} s (import {seconds} s)"


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_info_json_on_the_example_scan():
    result = _run("info", "example:ct-small", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert set(facts) >= {"shape", "spacing", "affine", "modality", "dtype", "min", "max"}
    assert facts["modality"] == "CT" and facts["shape"] == [128, 128, 1] and facts["dtype"] == "int16"
    assert facts["spacing"][:2] == [0.661468, 0.661468]
    assert -1100 < facts["min"] < facts["max"] < 3000  # HU, rescale applied


def test_info_table_mentions_units_and_orientation():
    result = CliRunner().invoke(app, ["info", "example:ct-small"])
    assert result.exit_code == 0
    assert "HU" in result.stdout and "LAS" in result.stdout and "spacing (mm)" in result.stdout


def test_bad_input_through_the_real_console_script(tmp_path):
    bogus = tmp_path / "scan.nii.gz"
    bogus.write_text("not an image")
    result = _run("info", str(bogus))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert str(bogus) in result.stderr


def test_unknown_example_is_a_clear_error():
    result = CliRunner().invoke(app, ["info", "example:nope"])
    assert result.exit_code == 2 and "unknown example 'nope'" in result.stderr


def test_examples_lists_installed_files():
    result = CliRunner().invoke(app, ["examples"])
    assert result.exit_code == 0 and "example:ct-small" in result.stdout and "CT_small.dcm" in result.stdout


def test_operating_system_errors_are_user_errors_naming_the_file(tmp_path, capsys):
    import typer

    from srgan_med.cli._common import handle_errors

    blocker = tmp_path / "a-file"
    blocker.write_text("")

    @handle_errors
    def writes_under_a_file():
        open(blocker / "log.txt", "w")  # a real ENOTDIR from the operating system

    with pytest.raises(typer.Exit) as exited:
        writes_under_a_file()
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err == f"error: {blocker / 'log.txt'}: Not a directory (ENOTDIR)\n"


def test_output_under_a_regular_file_is_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["enhance", "example:ct-small", "-o", str(blocker / "o.nii"), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {blocker / 'o.nii'}: cannot write it: File exists (EEXIST); it was left as it was"
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["enhance", "x.nii", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["enhance", "x.nii", "--scale", "0"], "Invalid value for '--scale'"),  # was "needs a x0 model"
        (["enhance", "x.nii", "--bogus"], "No such option: --bogus; see 'srgan-med enhance --help'"),
        (["enhance"], "Missing argument 'inputs'; see 'srgan-med enhance --help'"),
        (["nocmd"], "No such command 'nocmd'; see 'srgan-med --help'"),
        (["degrade", "x.nii", "-o", "y.nii", "--seed", "-1"], "Invalid value for '--seed'"),  # numpy's error
        (["evaluate", "x.nii", "--seed", "4294967296"], "Invalid value for '--seed'"),
    ],
)
def test_usage_errors_are_one_line_through_the_real_console_script(args, expected):
    result = _run(*args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_bare_command_still_shows_help_and_help_exits_zero():
    bare, helped = _run(), _run("--help")
    assert bare.returncode == 2 and "Commands" in bare.stdout and bare.stderr == ""
    assert helped.returncode == 0 and "enhance" in helped.stdout


def test_modality_override_for_a_ct_crop_without_air(tmp_path):
    """A CT crop inside the body has no air: its NIfTI is guessed MR; --modality CT says what it is."""
    import csv

    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    soft_tissue = rng.normal(40, 30, (32, 32, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(soft_tissue, np.diag([0.7, 0.7, 2.0, 1.0])), tmp_path / "liver.nii.gz")
    source = str(tmp_path / "liver.nii.gz")
    runner = CliRunner()
    guessed = json.loads(runner.invoke(app, ["info", source, "--json"]).stdout)
    told = json.loads(runner.invoke(app, ["info", source, "--json", "--modality", "ct"]).stdout)
    assert (guessed["modality"], told["modality"]) == ("MR", "CT")
    enhanced = runner.invoke(
        app, ["enhance", source, "--modality", "CT", "-o", str(tmp_path / "sr.nii.gz"), "-q"]
    )
    assert enhanced.exit_code == 0, enhanced.stderr
    assert json.loads((tmp_path / "sr.nii.gz.json").read_text())["model"] == "ct-x2"  # --model auto: CT's
    args = ["evaluate", source, "--scale", "2", "--methods", "bicubic", "--modality", "CT", "-q"]
    evaluated = runner.invoke(app, [*args, "-o", str(tmp_path / "report")])
    assert evaluated.exit_code == 0, evaluated.stderr
    rows = list(csv.DictReader(open(tmp_path / "report" / "metrics.csv")))
    assert {float(row["data_range"]) for row in rows} == {3000.0}  # the CT window, not a robust MR range
    assert "--modality CT" in (tmp_path / "report" / "report.md").read_text()
    degraded = runner.invoke(app, ["degrade", source, "-o", str(tmp_path / "lr.nii.gz"), "--modality", "CT"])
    assert degraded.exit_code == 0 and "'kind': 'gaussian', 'std_hu'" in degraded.stderr  # CT's noise, in HU
    wrong = runner.invoke(app, ["info", source, "--modality", "PET"])
    assert wrong.exit_code == 2 and "--modality must be CT or MR, got 'PET'" in wrong.stderr


_SIGNALLED_MAIN = """
import os, signal, sys
import srgan_med.cli as cli

seen = {"ignored_at_start": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}

def command(*args, **kwargs):
    seen["still_ignored"] = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if sys.argv[1] == "inherited":
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C meant for the script's foreground job
        return 0
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt:
        os.kill(os.getpid(), signal.SIGTERM)  # a second one, inside the clean-up: ignored
        print("cleaned up", flush=True)
        return 130

cli.app = command
try:
    cli.main()
except SystemExit as leaving:
    print(seen, leaving.code, flush=True)
"""


@pytest.mark.parametrize(("case", "expected"), [("inherited", "True} 0"), ("twice", "False} 143")])
def test_signals_stop_the_work_once_and_an_ignored_ctrl_c_stays_ignored(case, expected):
    """A second SIGTERM raised inside the clean-up of the first left a partial output; and main()
    made a background job's inherited SIG_IGN for Ctrl-C into an interrupt."""
    import signal
    import subprocess
    import sys

    def set_ctrl_c():  # ignored as a background job's, or the default (whatever ran the tests)
        signal.signal(signal.SIGINT, signal.SIG_IGN if case == "inherited" else signal.default_int_handler)

    run = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_MAIN, case], capture_output=True, text=True, timeout=120,
        preexec_fn=set_ctrl_c,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    assert lines and lines[-1].endswith(expected), (run.stdout, run.stderr[-2000:])
    if case == "twice":
        assert lines[0] == "cleaned up" and "'still_ignored': False" in lines[-1]
    else:
        assert "'still_ignored': True" in lines[-1]


def test_info_shows_the_real_world_values_a_dicom_carries():
    """An enhanced CT blood-flow map: info names its real-world quantity and units (JSON and table)."""
    from conftest import pydicom_data_files

    source = str(pydicom_data_files() / "eCT_Supplemental.dcm")
    runner = CliRunner()
    facts = json.loads(runner.invoke(app, ["info", source, "--json"]).stdout)
    assert facts["real_world_values"] == [
        {"label": "RCBF", "units": "ml/100ml/s", "slope": 1.0, "intercept": 0.0}
    ]
    table = runner.invoke(app, ["info", source])
    assert table.exit_code == 0 and "RCBF (ml/100ml/s) = 1 x value + 0" in table.stdout
    plain = json.loads(runner.invoke(app, ["info", "example:ct-small", "--json"]).stdout)
    assert plain["real_world_values"] == []
