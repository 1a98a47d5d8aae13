"""Data lists (folders, globs, CSV, examples) and the seeded HR patch sampler."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from conftest import write_nifti

from srgan_med.data import PatchSampler, Volume, expand_data_list
from srgan_med.errors import ConfigError
from srgan_med.examples import example_path


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
    patches, _ = PatchSampler([_volume(data)], patch_size=16, seed=0).sample(64)
    spans = patches.amax(dim=(1, 2, 3)) - patches.amin(dim=(1, 2, 3))
    # Without the redraw most 16x16 crops of this volume would be flat zeros; with it about 89% are
    # textured (64 items, so one seed's count stays clear of the bound).
    assert (spans > 0.02).float().mean() > 0.8
    with pytest.raises(ConfigError, match="no training slice is at least 96x96"):
        PatchSampler([_volume(data)], patch_size=96)
    sampler = PatchSampler([_volume(torch.rand(20, 64, 64)), _volume(data)], patch_size=32, slice_axes=(0, 2))
    # Left out: axis 2 of the first volume (20x64 slices) and axis 0 of the second (64x4).
    assert sampler.candidates == [(0, 0), (1, 2)]


def _crop(data: torch.Tensor, axis: int, index: int, top: int, left: int, size: int) -> torch.Tensor:
    return data.select(axis, index)[top : top + size, left : left + size]


def test_every_patch_is_the_crop_it_names_across_axes_and_volume_shapes():
    generator = torch.Generator().manual_seed(2)
    originals = [torch.rand(20, 24, 18, generator=generator), torch.rand(16, 30, 22, generator=generator)]
    volumes = [
        Volume("a", originals[0].clone(), (0.5, 0.6, 2.0), 0.0, 1.0, "CT"),
        Volume("b", originals[1].clone(), (0.8, 0.9, 3.0), 0.0, 1.0, "MR"),
    ]
    sampler = PatchSampler(volumes, patch_size=12, slice_axes=(0, 1, 2), seed=5)
    drawn = sampler.sample_with_origins(96)
    assert drawn.high_res.shape == (96, 1, 12, 12) and drawn.high_res.is_contiguous()
    assert drawn.spacing_mm.dtype == torch.float64
    # Both volumes and every slice axis occur, so the test covers each memory layout.
    assert set(zip(drawn.volume.tolist(), drawn.axis.tolist(), strict=True)) == {
        (v, a) for v in (0, 1) for a in (0, 1, 2)
    }
    for b in range(96):
        volume, axis = int(drawn.volume[b]), int(drawn.axis[b])
        where = (axis, int(drawn.slice_index[b]), int(drawn.top[b]), int(drawn.left[b]), 12)
        assert torch.equal(drawn.high_res[b, 0], _crop(originals[volume], *where))
        assert torch.equal(drawn.high_res[b, 0], _crop(volumes[volume].data, *where))
        rows, cols = (a for a in (0, 1, 2) if a != axis)
        spacing = volumes[volume].spacing_mm
        assert drawn.spacing_mm[b].tolist() == [spacing[rows], spacing[cols]]
    # The volumes now view the sampler's one buffer, with their shape and values unchanged.
    for volume, original in zip(volumes, originals, strict=True):
        assert volume.data.shape == original.shape and torch.equal(volume.data, original)
        assert volume.data.untyped_storage().data_ptr() == sampler._flat.untyped_storage().data_ptr()


def test_background_items_alone_are_redrawn(monkeypatch):
    from srgan_med.data import volumes as volumes_module

    data = torch.zeros(64, 64, 4)
    data[40:, 40:, :] = torch.rand(24, 24, 4, generator=torch.Generator().manual_seed(1))

    def draw(draws: int):
        monkeypatch.setattr(volumes_module, "PATCH_DRAWS", draws)
        return PatchSampler([_volume(data.clone())], patch_size=16, seed=0).sample_with_origins(64)

    def textured(patches: torch.Tensor) -> torch.Tensor:
        return patches.amax(dim=(1, 2, 3)) - patches.amin(dim=(1, 2, 3)) >= volumes_module.MIN_PATCH_SPAN

    draws = volumes_module.PATCH_DRAWS
    first, redrawn = draw(1), draw(draws)
    kept = textured(first.high_res)
    # About a quarter of single draws overlap the textured corner; redraws find it for most items.
    assert 0.1 < kept.float().mean() < 0.5 and textured(redrawn.high_res).float().mean() > 0.8
    # Items that were textured at the first draw are untouched; only the flat ones were drawn again.
    assert torch.equal(redrawn.high_res[kept], first.high_res[kept])
    assert torch.equal(redrawn.top[kept], first.top[kept]) and torch.equal(
        redrawn.left[kept], first.left[kept]
    )
    assert not torch.equal(redrawn.top[~kept], first.top[~kept])
    # A volume with no texture at all still fills the batch (each item keeps its last draw).
    patches, spacing = PatchSampler([_volume(torch.zeros(32, 32, 3))], patch_size=16).sample(8)
    assert patches.shape == (8, 1, 16, 16) and spacing.shape == (8, 2) and not patches.any()
    # Between a flat volume and a textured one, the redraws land on the textured one.
    volumes = [_volume(torch.zeros(64, 64, 4)), _volume(torch.rand(64, 64, 4))]
    drawn = PatchSampler(volumes, patch_size=16, seed=1).sample_with_origins(64)
    assert drawn.volume.float().mean() > 0.95 and textured(drawn.high_res[drawn.volume == 1]).all()


def test_same_seed_same_batches_and_state_replays_them():
    data = torch.zeros(48, 40, 10)
    data[:, 20:, :] = torch.rand(48, 20, 10, generator=torch.Generator().manual_seed(3))
    volumes = [_volume(data), _volume(torch.rand(30, 30, 12, generator=torch.Generator().manual_seed(4)))]
    one = PatchSampler(volumes, patch_size=16, slice_axes=(0, 2), seed=11)
    two = PatchSampler(volumes, patch_size=16, slice_axes=(0, 2), seed=11)
    for _ in range(3):
        first, second = one.sample_with_origins(32), two.sample_with_origins(32)
        assert torch.equal(first.high_res, second.high_res) and torch.equal(first.volume, second.volume)
        assert torch.equal(first.spacing_mm, second.spacing_mm)
    state = one.get_state()
    expected = [one.sample(32) for _ in range(2)]
    one.set_state(state)
    for patches, spacing in expected:
        again, again_spacing = one.sample(32)
        assert torch.equal(patches, again) and torch.equal(spacing, again_spacing)


def test_disk_cache_is_read_back_and_missed_when_the_scan_or_normalisation_changes(tmp_path, monkeypatch):
    from srgan_med.data import volumes as volumes_module
    from srgan_med.degrade.config import load_degradation_preset
    from srgan_med.io.transforms import LoadScand

    loads = []
    original = LoadScand.__call__
    monkeypatch.setattr(LoadScand, "__call__", lambda self, data: loads.append(1) or original(self, data))
    scan = tmp_path / "ct.dcm"
    scan.write_bytes(Path(example_path("ct-small")).read_bytes())
    cache = tmp_path / "cache"
    ct, mr = load_degradation_preset("ct"), load_degradation_preset("mr")

    def load(config):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # MONAI warns and recomputes when it cannot read a cache file
            (volume,) = volumes_module.load_volumes([scan], config, cache="disk", cache_dir=cache)
        return volume

    first = load(ct)
    again = load(ct)
    assert len(loads) == 1, "the second load decoded the scan instead of reading the cache"
    assert torch.equal(first.data, again.data)
    assert (again.low, again.high, again.spacing_mm, again.modality) == (
        -1000.0,
        2000.0,
        first.spacing_mm,
        "CT",
    )

    load(mr)  # another normalisation: a miss, and its own cache file
    assert len(loads) == 2
    dataset = pydicom.dcmread(scan)  # a rewritten scan: a miss
    pixels = dataset.pixel_array.copy()
    pixels[0, 0] += 100
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(scan)
    os.utime(scan, ns=(1, 1))
    changed = load(ct)
    assert len(loads) == 3 and not torch.equal(changed.data, first.data)
    assert len(list(cache.glob("*.pt"))) == 3
    # rewritten with its old size and time (cp -p, rsync -a): was served from the cache
    status = scan.stat()
    pixels[0, 0] += 100
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(scan)
    os.utime(scan, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert scan.stat().st_size == status.st_size
    rewritten = load(ct)
    assert len(loads) == 4 and not torch.equal(rewritten.data, changed.data)


def test_mr_volumes_are_normalised_as_enhance_normalises_their_low_res_input(tmp_path):
    """MR training normalised by the high-res scan's percentiles, enhance by its low-res input's own,
    which blur and noise narrow: the MR models met brighter inputs at inference than in training."""
    import nibabel as nib

    from srgan_med.data.volumes import LOW_RES_DRAWS, load_volumes
    from srgan_med.degrade import load_degradation_preset, simulate_low_res
    from srgan_med.degrade.normalise import normalisation_range
    from srgan_med.io import load_scan

    rng = np.random.default_rng(0)
    head = np.zeros((48, 48, 6), np.float32)
    head[8:40, 8:40] = rng.gamma(4.0, 200.0, (32, 32, 6))  # bright, textured "tissue" in dark air
    path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(head, np.eye(4)), path)
    preset = load_degradation_preset("mr")
    (plain,) = load_volumes([path], preset, modality="MR")
    (matched,) = load_volumes([path], preset, modality="MR", scale=2)
    scan = load_scan(path, modality="MR")
    ranges = [
        normalisation_range(simulate_low_res(scan, preset, 2, seed=seed)[0], preset.normalise)
        for seed in range(LOW_RES_DRAWS)
    ]
    assert (matched.low, matched.high) == pytest.approx(
        tuple(np.mean(ranges, axis=0)), rel=1e-5
    )  # float32 trip
    assert (plain.low, plain.high) == pytest.approx(normalisation_range(scan, preset.normalise))
    assert matched.high < plain.high  # blur lowers the top percentile
    # the same physical voxels on either map
    torch.testing.assert_close(
        matched.data * (matched.high - matched.low) + matched.low,
        plain.data * (plain.high - plain.low) + plain.low,
        rtol=0,
        atol=1e-2,
    )
    ct = load_degradation_preset("ct")
    (windowed,) = load_volumes([path], ct, modality="CT", scale=2)  # CT: the fixed window, as before
    assert (windowed.low, windowed.high) == (-1000.0, 2000.0)


def test_a_file_is_read_for_its_fingerprint_once_while_unchanged(tmp_path, monkeypatch):
    """Training start-up fingerprints each file twice (resume check, disk cache key): one read, for
    a file unchanged in the last 2 s; one changed since (or just now: a coarse clock may not show a
    same-size rewrite) is read again."""
    import builtins

    from srgan_med.data.lists import fingerprint

    series = tmp_path / "series"
    series.mkdir()
    for index in range(3):
        (series / f"IM{index}.dcm").write_bytes(bytes([index]) * 5000)
    time.sleep(2.1)  # older than the 2 s a coarse clock may hide a rewrite in
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    first = fingerprint(series)
    assert fingerprint(series) == first and sorted(opened) == ["IM0.dcm", "IM1.dcm", "IM2.dcm"]
    status = (series / "IM1.dcm").stat()
    (series / "IM1.dcm").write_bytes(b"\x07" * 5000)  # same size and times: its ctime tells
    os.utime(series / "IM1.dcm", ns=(status.st_atime_ns, status.st_mtime_ns))
    assert fingerprint(series) != first and opened.count("IM1.dcm") == 2 and len(opened) == 4
    fingerprint(series)  # changed just now: not kept, read again
    assert opened.count("IM1.dcm") == 3 and len(opened) == 5


def test_mr_validation_inputs_take_magnitudes_about_the_scans_zero():
    """An MR scan whose low-res percentiles put zero signal at -0.25 in its normalised units: the
    validation inputs' Rician noise and k-space magnitude lie about -0.25, as training's batches do,
    not mirrored about 0 (0.25 brighter)."""
    from srgan_med.data.volumes import validation_set
    from srgan_med.degrade import load_degradation_preset

    head = torch.full((48, 48, 4), -0.25)  # air: stored 0 with low 200, high 1000
    head[20:44, 20:44] = 0.5  # tissue at 600
    volume = Volume("mr", head, (1.0, 1.0, 2.0), 200.0, 1000.0, "MR")
    low_res = validation_set(volume, load_degradation_preset("mr"), 2, 4).low_res
    air = low_res[:, :, :6, :6]  # away from the tissue's edge and its ringing
    assert float(air.min()) >= -0.25 - 1e-5 and float(air.mean()) < -0.15
