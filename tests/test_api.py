"""The Python API's answers to reasonable misuse: one-line SrganMedError subclasses, not bare
exceptions or silently wrong results (found by an audit of the API, each case as it was)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import write_nifti
from monai.data import MetaTensor

from srgan_med import metrics
from srgan_med.errors import ConfigError, InputError, OutputExistsError
from srgan_med.io import load_scan, save_scan


def test_save_scan_never_overwrites_an_input_loaded_by_a_relative_path(tmp_path, monkeypatch):
    """The input was known by the relative path it was loaded with: after a change of working
    directory, save_scan(overwrite=True) to its absolute path overwrote it."""
    source = write_nifti(tmp_path / "scan.nii.gz", np.zeros((8, 8, 4), np.int16), np.eye(4))
    monkeypatch.chdir(tmp_path)
    scan = load_scan("scan.nii.gz")
    (tmp_path / "sub").mkdir()
    os.chdir(tmp_path / "sub")
    before = source.read_bytes()
    with pytest.raises(OutputExistsError, match="output would overwrite the input"):
        save_scan(scan + 1, source, overwrite=True)
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (MetaTensor(torch.zeros(2, 8, 8, 4)), "an image of 2 channels"),  # channel 1 was dropped
        (torch.zeros(1, 8, 8, 4), "a Tensor has no affine"),  # AttributeError
        (np.zeros((1, 8, 8, 4)), "a ndarray has no affine"),
        (MetaTensor(torch.zeros(1, 0, 8, 4)), "the image has no voxels"),  # written, then unreadable
        (MetaTensor(torch.zeros(1, 8, 8, 4), affine=torch.zeros(4, 4)), "the affine places no voxel"),
    ],
)
def test_save_scan_refuses_what_it_cannot_write_faithfully(tmp_path, image, says):
    with pytest.raises(InputError, match=says):
        save_scan(image, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_one_path_is_one_input_not_its_characters(tmp_path):
    """enhance_files("a.nii.gz") took "/" (its first character) as a folder and searched the disk."""
    from srgan_med.data.lists import expand_data_list
    from srgan_med.enhance.run import expand_inputs

    source = write_nifti(tmp_path / "a.nii.gz", np.zeros((8, 8, 4), np.int16), np.eye(4))
    assert expand_inputs(str(source)) == [source]
    assert expand_inputs(source) == [source]
    assert expand_data_list(str(source)) == [source.resolve()]


def test_metrics_take_a_scan_layout_and_say_what_is_wrong():
    """GMSD of a (1, I, J, K) scan was 6x that of its (I, J, K) voxels (3-D slices), silently."""
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 100, (32, 32, 4))
    test = reference + rng.normal(0, 10, reference.shape)
    for name in ("psnr", "ssim", "gmsd"):
        function = getattr(metrics, name)
        assert function(reference[None], test[None], 400.0) == function(reference, test, 400.0)
    for bad, says in [
        ((reference, test[:-1]), "shapes differ"),
        ((reference[..., 0, 0], test[..., 0, 0]), r"expected an image \(H, W\) or a volume"),
    ]:
        with pytest.raises(InputError, match=says):
            metrics.gmsd(*bad, 400.0)
    with pytest.raises(InputError, match="data_range must be positive"):
        metrics.psnr(reference, test, 0.0)
    with pytest.raises(InputError, match="mask is empty"):
        metrics.mae(reference, test, mask=np.zeros(reference.shape, bool))


def test_devices_are_checked_and_taken_as_text_or_torch_devices():
    from srgan_med.enhance.run import PreparedModel
    from srgan_med.models.bundle import load_bundle

    if not torch.cuda.is_available():  # it was an AssertionError from torch
        with pytest.raises(InputError, match="'cuda' asked for, but no CUDA device is available"):
            load_bundle("ct-x2", device="cuda")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        load_bundle("ct-x2", device="gpu0")
    scan = MetaTensor(torch.full((1, 16, 16, 2), -500.0), affine=torch.eye(4, dtype=torch.float64))
    for device in ("cpu", torch.device("cpu")):  # "cpu" as text failed in engine_settings
        upscaled = PreparedModel.load("ct-x2", device).upscale(scan, 2)
        assert tuple(upscaled.image.shape) == (1, 32, 32, 2)


def test_a_bundle_load_bundle_would_refuse_is_not_written(tmp_path):
    from srgan_med.degrade.config import NormaliseConfig
    from srgan_med.models.bundle import save_bundle
    from srgan_med.nets import SRResNet

    generator = SRResNet(scale=2, blocks=1, width=8)
    common = dict(architecture={"name": "srresnet", "kwargs": {"scale": 2, "blocks": 1, "width": 8}},
                  modality="CT", card={})  # fmt: skip
    with pytest.raises(InputError, match="scale 4, but the architecture upsamples x2"):
        save_bundle(tmp_path / "m.safetensors", generator, scale=4, normalisation=NormaliseConfig(), **common)
    with pytest.raises(InputError, match="normalisation must be a NormaliseConfig, got a dict"):
        save_bundle(
            tmp_path / "m.safetensors", generator, scale=2, normalisation={"kind": "window"}, **common
        )
    assert list(tmp_path.iterdir()) == []


def test_simulate_low_res_needs_the_channel_axis():
    """An (I, J, K) tensor was degraded as a (C, H, W) slice: (64, 64, 8) came back (64, 32, 4)."""
    from srgan_med.degrade import load_degradation_preset, simulate_low_res

    volume = MetaTensor(torch.zeros(64, 64, 8), affine=torch.eye(4, dtype=torch.float64))
    with pytest.raises(InputError, match=r"expected a scan \(1, I, J, K\).*got shape \(64, 64, 8\)"):
        simulate_low_res(volume, load_degradation_preset("ct"), 2)


def test_load_volumes_refuses_an_unknown_cache_and_load_scan_a_non_path():
    from srgan_med.data import load_volumes
    from srgan_med.degrade import load_degradation_preset

    with pytest.raises(ConfigError, match="data.cache: must be one of memory, disk, none, got 'ram'"):
        load_volumes([], load_degradation_preset("ct"), cache="ram")  # ran with no cache
    for wrong in (None, 3):
        with pytest.raises(InputError, match="load_scan takes a path"):
            load_scan(wrong)
