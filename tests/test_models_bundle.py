"""Model bundle metadata, intensity presets and output naming (no network needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from srgan_med.enhance.run import default_output
from srgan_med.errors import InputError, WeightsNotFoundError
from srgan_med.models.bundle import normalisation_from_dict, read_metadata, resolve_model


def test_normalisation_metadata_round_trip_and_errors():
    config = normalisation_from_dict({"kind": "window", "window_hu": [-1000, 2000]})
    assert config.kind == "window" and config.window_hu == (-1000.0, 2000.0)
    with pytest.raises(InputError, match="window or percentile"):
        normalisation_from_dict({"kind": "zscore"})


def test_unknown_model_says_what_exists(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope' not found: not a file"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(WeightsNotFoundError, match="not a shipped model"):
        resolve_model("nope")


def test_files_that_are_not_bundles_are_refused(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a safetensors model file"):
        read_metadata(text)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(InputError, match="without srgan-med model metadata"):
        read_metadata(plain)


@pytest.mark.parametrize(
    ("source", "source_format", "fmt", "expected"),
    [
        ("/d/scan.nii.gz", "nifti", None, "/d/scan_sr.nii.gz"),
        ("/d/scan.nii", "nifti", None, "/d/scan_sr.nii"),  # compression kept (SPM reads only .nii)
        ("/d/CT_small.dcm", "dicom", None, "/d/CT_small_sr"),
        ("/d/series", "dicom", None, "/d/series_sr"),
        ("/d/series", "dicom", "nifti", "/d/series_sr.nii.gz"),
        ("/d/CT_small.dcm", "dicom", "nifti", "/d/CT_small_sr.nii.gz"),
        ("/d/T1.NII", "nifti", None, "/d/T1_sr.nii"),
        ("/d/MR_small.IMA", "dicom", None, "/d/MR_small_sr"),
        ("/d/1.2.840.113619.2.55", "dicom", None, "/d/1.2.840.113619.2.55_sr"),
        ("/d/scan.nii.gz", "nifti", "dicom", "/d/scan_sr"),
    ],
)
def test_default_output_names(source, source_format, fmt, expected):
    assert default_output(Path(source), source_format, fmt) == Path(expected)


def _edited_model(tmp_path, edit) -> Path:
    """The shipped ct-x2 model with its srgan-med metadata edited (a hand-made or damaged file)."""
    import json

    from safetensors import safe_open

    from srgan_med.models.bundle import METADATA_KEY

    source = resolve_model("ct-x2")
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        metadata = handle.metadata()
    record = json.loads(metadata[METADATA_KEY])
    metadata[METADATA_KEY] = json.dumps(edit(record)) if callable(edit) else edit
    path = tmp_path / "edited.safetensors"
    save_file(
        tensors,
        str(path),
        metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
    )
    return path


def _with(record, **changes):
    record.update(changes)
    return record


def _kwargs(record, **changes):
    architecture = record["architecture"]
    return _with(record, architecture={**architecture, "kwargs": {**architecture["kwargs"], **changes}})


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ("{not json", "metadata is not valid JSON"),
        (lambda r: _with(r, scale="two"), "scale must be a positive integer, got 'two'"),
        (lambda r: _with(r, scale=4), "model metadata says scale 4, its architecture scale 2"),
        (lambda r: _kwargs(r, bogus=1), "cannot build its srresnet network"),
        (lambda r: _kwargs(r, width=16), "weights do not fit the srresnet architecture"),
        (lambda r: _with(r, normalisation={"kind": "window", "window_hu": 1}), "normalisation is not usable"),
    ],
)  # fmt: skip
def test_damaged_model_metadata_is_one_line_exit_2(tmp_path, edit, says):
    """Each was an internal error (exit 1), or, for a declared scale that the network does not
    have, a crash in the middle of the run; a state-dict mismatch printed 3,000 characters."""
    from typer.testing import CliRunner

    from srgan_med.cli import app

    model = _edited_model(tmp_path, edit)
    result = CliRunner().invoke(
        app, ["enhance", "example:ct-small", "--model", str(model), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, (result.output, result.exception)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {model}: ") and says in line and len(line) < 600, line
    assert not (tmp_path / "o").exists()
