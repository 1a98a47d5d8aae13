"""Data lists (folders, globs, CSV, examples) and the seeded HR patch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_nifti

from srgan_med.data import PatchSampler, Volume, expand_data_list
from srgan_med.errors import ConfigError


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii", "c.nii.gz"):
        write_nifti(folder / name, np.zeros((8, 8, 4), np.int16), np.eye(4))
    (folder / "notes.txt").write_text("not a scan")
    return folder


def test_folder_glob_csv_and_example_entries(scans, tmp_path):
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(expand_data_list([str(scans)])) == ["a.nii.gz", "b.nii", "c.nii.gz"]
    assert names(expand_data_list(["scans/*.nii.gz"], tmp_path)) == ["a.nii.gz", "c.nii.gz"]
    (tmp_path / "list.csv").write_text("subject,path\n1,scans/b.nii\n2,scans/a.nii.gz\n")
    assert names(expand_data_list(["list.csv"], tmp_path)) == ["b.nii", "a.nii.gz"]
    (tmp_path / "bare.csv").write_text("scans/c.nii.gz\n")
    # Duplicates collapse, order of first appearance is kept.
    assert names(expand_data_list(["bare.csv", "scans/c.nii.gz", "scans/a.nii.gz"], tmp_path)) == [
        "c.nii.gz",
        "a.nii.gz",
    ]
    assert names(expand_data_list(["example:ct-small"])) == ["CT_small.dcm"]


def test_bad_entries_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.train\[0\]: .*missing\.nii\.gz does not exist"):
        expand_data_list(["missing.nii.gz"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.validation\[1\]: no file matches"):
        expand_data_list([".", "*.nothing"], tmp_path, key="data.validation")
    with pytest.raises(ConfigError, match="unknown example"):
        expand_data_list(["example:nope"])


def _volume(values: torch.Tensor) -> Volume:
    return Volume("v", values, (0.5, 0.7, 2.0), -1000.0, 2000.0, "CT")


def test_sampler_is_seeded_resumable_and_reports_spacing():
    data = torch.rand(40, 30, 6, generator=torch.Generator().manual_seed(0))
    sampler = PatchSampler([_volume(data)], patch_size=16, slice_axes=(2,), seed=3)
    state = sampler.get_state()
    first, spacing = sampler.sample(4)
    assert first.shape == (4, 1, 16, 16) and first.dtype == torch.float32
    assert spacing.tolist() == [[0.5, 0.7]] * 4
    sampler.set_state(state)
    again, _ = sampler.sample(4)
    assert torch.equal(first, again)
    other = PatchSampler([_volume(data)], patch_size=16, seed=4).sample(4)[0]
    assert not torch.equal(first, other)
    # Each patch is a real crop of a slice of the volume.
    patch = first[0, 0]
    found = any(
        torch.equal(data[i : i + 16, j : j + 16, k], patch)
        for k in range(6)
        for i in range(40 - 15)
        for j in range(30 - 15)
    )
    assert found


def test_sampler_skips_background_and_small_slices():
    data = torch.zeros(64, 64, 4)
    data[40:, 40:, :] = torch.rand(24, 24, 4, generator=torch.Generator().manual_seed(1))
    patches, _ = PatchSampler([_volume(data)], patch_size=16, seed=0).sample(16)
    spans = patches.amax(dim=(1, 2, 3)) - patches.amin(dim=(1, 2, 3))
    # Without the redraw most 16x16 crops of this volume would be flat zeros.
    assert (spans > 0.02).float().mean() > 0.8
    with pytest.raises(ConfigError, match="no training slice is at least 96x96"):
        PatchSampler([_volume(data)], patch_size=96)
    sampler = PatchSampler([_volume(torch.rand(20, 64, 64)), _volume(data)], patch_size=32, slice_axes=(0, 2))
    # Left out: axis 2 of the first volume (20x64 slices) and axis 0 of the second (64x4).
    assert sampler.candidates == [(0, 0), (1, 2)]
