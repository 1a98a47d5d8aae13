"""The notebooks run top to bottom on CPU with small settings, so they cannot rot."""

from __future__ import annotations

import pytest
from conftest import REPO, SHARED_SCANS

nbformat = pytest.importorskip("nbformat", reason="nbformat (test extra) not installed")
nbclient = pytest.importorskip("nbclient", reason="nbclient (test extra) not installed")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NEEDS_SHARED = {"02_research_comparison.ipynb"}


def test_notebooks_are_stored_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch, tmp_path):
    if path.name in NEEDS_SHARED and not SHARED_SCANS.is_dir():
        pytest.skip(f"{path.name} reads the public scans, not available at {SHARED_SCANS}")
    monkeypatch.setenv("SRGAN_MED_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SRGAN_MED_SHARED", str(SHARED_SCANS))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' work folders go with the test's
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert any(tmp_path.glob("srgan_med_nb*")), "the notebook's work folder is not in the test's folder"
