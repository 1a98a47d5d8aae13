"""The degradation on whole batches of 2-D slices, on the batch's device (GPU in training).

Same steps and order as :func:`srgan_med.degrade.pipeline.degradation_pipeline` for a ``(1, H, W)``
slice: PSF blur -> k-space truncation -> block averaging -> noise. Per-item parameters (one draw per
item, the PSF family of a mixture included) differ across the batch, so the blur is a grouped
convolution with one kernel per item (MONAI's ``separable_filtering`` takes one kernel for the whole
batch). Kernels and noise realisations equal the per-item path's (the kernels built for the whole
batch at once by :func:`~srgan_med.degrade.blur.psf_kernels`), so on CPU both give the same result to
float tolerance.

On a GPU, a training step's small per-item tensors (kernels, noise levels, k-space fractions) travel
in one asynchronous host-to-device copy, and nothing here waits for the device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srgan_med.degrade.blur import psf_kernels
from srgan_med.degrade.config import DegradationConfig
from srgan_med.degrade.kspace import kspace_mask
from srgan_med.degrade.noise import noise_std_map, normalised_std, rician
from srgan_med.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass
class DegradationParams:
    """Per-item draws for a batch of ``B`` items (CPU tensors).

    Attributes:
        fwhm_mm: ``(B, 2)`` PSF width per in-plane axis (mm).
        profile: PSF family of each item (``B`` names), drawn when ``blur.profile`` is a mixture;
            ``None`` means the config's single family for every item.
        keep_fraction: ``(B,)`` kept k-space fraction (1 when k-space truncation is off).
        noise_level: ``(B,)`` noise std in config units (HU or relative).
        noise_std: ``(B,)`` noise std in normalised intensity units.
        noise_seed: ``(B,)`` int64 seed of each item's noise realisation.
    """

    fwhm_mm: torch.Tensor
    keep_fraction: torch.Tensor
    noise_level: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: torch.Tensor
    profile: tuple[str, ...] | None = None

    def profiles(self, config: DegradationConfig) -> tuple[str, ...]:
        """Each item's PSF family (``B`` names)."""
        if self.profile is not None:
            return tuple(self.profile)
        return (config.blur.profiles[0],) * len(self)

    def __len__(self) -> int:
        return int(self.noise_seed.shape[0])


def _uniform(bounds, size: int, generator: torch.Generator | None) -> torch.Tensor:
    low, high = float(bounds[0]), float(bounds[1])
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _grouped_conv_axis(x: torch.Tensor, weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Convolve item ``b`` of ``x (B, 1, H, W)`` with ``weight[b]`` along spatial ``axis`` (replicate).

    ``weight`` is ``(B, 2 R + 1)`` on ``x``'s device and dtype, each item's taps centred in it.
    """
    radius = weight.shape[1] // 2
    if radius == 0:
        return x
    batch = x.shape[0]
    if axis == 0:
        padded = F.pad(x.transpose(0, 1), (0, 0, radius, radius), mode="replicate")
        out = F.conv2d(padded, weight[:, None, :, None], groups=batch)
    else:
        padded = F.pad(x.transpose(0, 1), (radius, radius, 0, 0), mode="replicate")
        out = F.conv2d(padded, weight[:, None, None, :], groups=batch)
    return out.transpose(0, 1)


def _to_device(tensors: dict, device: torch.device) -> dict:
    """The same float64 tensors on ``device``, in one host-to-device copy (asynchronous on CUDA)."""
    if device.type == "cpu" or not tensors:
        return {key: value.to(torch.float64) for key, value in tensors.items()}
    host = torch.cat([value.to(torch.float64).reshape(-1) for value in tensors.values()])
    if device.type == "cuda":
        host = host.pin_memory()  # page-locked, so the copy neither blocks nor waits for the device
    flat = host.to(device, non_blocking=True)
    out, start = {}, 0
    for key, value in tensors.items():
        out[key] = flat[start : start + value.numel()].reshape(value.shape)
        start += value.numel()
    return out


def _noise_fields(shape, noise_seed: torch.Tensor, device, dtype) -> torch.Tensor:
    """Item ``b``'s two standard-normal fields from seed ``noise_seed[b]``: ``(B, 2, *shape[1:])``.

    Each item's fields are exactly :func:`srgan_med.degrade.noise.noise_fields` of its seed (same
    generator type, reseeded, same draw), written in place into one tensor; one generator serves all.
    """
    fields = torch.empty((shape[0], 2, *shape[1:]), device=device, dtype=dtype)
    generator = torch.Generator(device=device)
    for index, seed in enumerate(noise_seed.tolist()):
        generator.manual_seed(int(seed))
        torch.randn(fields.shape[1:], generator=generator, out=fields[index])
    return fields


class BatchDegradation(nn.Module):
    """Degrade a batch of normalised HR slices into LR slices on their own device.

    Args:
        config: the degradation model (noise levels in HU are converted with ``config.normalise``).
        scale: integer in-plane factor.
        spacing_mm: in-plane pixel spacing of the HR slices (mm), to turn the PSF width into pixels.
        per_item_noise: each item's noise realisation from its own seed, exactly as the per-item
            pipeline draws it (default). ``False``: one draw for the whole batch from the first
            item's seed (same distribution, still seeded; the trainer's choice on CUDA, where B
            seeded draws are B kernel launches per step).

    Call: ``(B, 1, H, W) -> (B, 1, H // scale, W // scale)``; per-item parameters come from
    ``generator`` (CPU ``torch.Generator``), one draw per item.

    Example:
        >>> from srgan_med.degrade import load_degradation_preset
        >>> degrader = BatchDegradation(load_degradation_preset("ct"), scale=4)
        >>> degrader(torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        config: DegradationConfig,
        scale: int,
        spacing_mm: tuple[float, float] = (1.0, 1.0),
        per_item_noise: bool = True,
    ):
        super().__init__()
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ConfigError(f"scale: must be a positive integer, got {scale!r}")
        if len(spacing_mm) != 2 or min(spacing_mm) <= 0:
            raise ConfigError(f"spacing_mm: must be two positive numbers, got {spacing_mm!r}")
        if config.quantise.enabled:
            raise ConfigError(
                "quantise.enabled: JPEG-like quantisation has no batched version; use the per-item pipeline"
            )
        if config.through_plane.slice_thickness_mm is not None:
            log.warning("through_plane is ignored on 2-D batches: simulate thick slices on the volumes")
        self.config = config
        self.scale = int(scale)
        self.spacing_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
        self.per_item_noise = bool(per_item_noise)

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None) -> DegradationParams:
        """Draw one set of parameters per item (on CPU, from ``generator``)."""
        config = self.config
        first = _uniform(config.blur.fwhm_mm, batch_size, generator)
        second = _uniform(config.blur.fwhm_mm, batch_size, generator) if config.blur.anisotropic else first
        keep = (
            _uniform(config.kspace.keep_fraction, batch_size, generator)
            if config.kspace.enabled
            else torch.ones(batch_size, dtype=torch.float64)
        )
        bounds = config.noise.std_hu if config.noise.std_hu is not None else config.noise.std_relative
        level = (
            _uniform(bounds, batch_size, generator)
            if bounds
            else torch.zeros(batch_size, dtype=torch.float64)
        )
        # Through float32, as the per-item list of Python floats this replaced did.
        std = normalised_std(config.noise, config.normalise, level).float()
        seeds = torch.randint(0, 2**31 - 1, (batch_size,), generator=generator, dtype=torch.int64)
        families = config.blur.profiles
        profile = None
        if len(families) > 1:
            # Drawn last, and only for a mixture, so single-family configs keep their earlier draws.
            index = torch.randint(0, len(families), (batch_size,), generator=generator)
            profile = tuple(families[i] for i in index.tolist())
        return DegradationParams(
            torch.stack([first, second], dim=1), keep, level, std.double(), seeds, profile
        )

    def _item_spacing(self, batch: int, spacing_mm) -> torch.Tensor:
        if spacing_mm is None:
            return torch.tensor(self.spacing_mm, dtype=torch.float64).expand(batch, 2)
        # The kernels are built on the host, so the spacings are needed there.
        spacing = torch.as_tensor(spacing_mm, dtype=torch.float64, device="cpu").reshape(-1, 2)
        if spacing.shape[0] != batch or bool((spacing <= 0).any()):
            raise InputError(
                f"spacing_mm must be {batch} positive (row, column) pairs, got {spacing.tolist()}"
            )
        return spacing

    def apply(
        self, high_res: torch.Tensor, params: DegradationParams, spacing_mm=None, zero=None
    ) -> torch.Tensor:
        """Degrade ``high_res (B, 1, H, W)`` with given ``params``; returns ``(B, 1, H//s, W//s)``.

        ``spacing_mm`` (``(B, 2)``, optional) gives each item's own pixel spacing, for batches mixing
        scans of different resolution; by default every item has the spacing given at construction.
        ``zero`` (``(B,)``, optional) says where each item's no signal lies in its normalised
        units (:func:`~srgan_med.degrade.normalise.magnitude_zero`: stored 0 for MR, -1000 HU for
        CT); the k-space magnitude and Rician noise are taken about it. Default: 0.
        """
        if high_res.ndim != 4 or high_res.shape[1] != 1:
            raise InputError(f"high_res must be (B, 1, H, W), got shape {tuple(high_res.shape)}")
        if len(params) != high_res.shape[0]:
            raise InputError(f"{len(params)} parameter sets for a batch of {high_res.shape[0]}")
        spacing = self._item_spacing(high_res.shape[0], spacing_mm)
        config = self.config
        x = high_res
        profiles = params.profiles(config)
        if len(profiles) != high_res.shape[0]:
            raise InputError(f"{len(profiles)} PSF families for a batch of {high_res.shape[0]}")
        small = {}  # the step's small host tensors, float64, sent to the device together
        if any(profile != "none" for profile in profiles):
            for axis in (0, 1):
                small[axis] = psf_kernels(profiles, params.fwhm_mm[:, axis], spacing[:, axis], self.scale)
        if config.kspace.enabled:
            small["keep_fraction"] = params.keep_fraction
        if config.noise.kind != "none":
            small["noise_std"] = params.noise_std
        if zero is not None and (config.kspace.enabled or config.noise.kind == "rician"):
            small["zero"] = torch.as_tensor(zero, dtype=torch.float64, device="cpu").reshape(-1)
            if small["zero"].shape[0] != high_res.shape[0]:
                count, batch = small["zero"].shape[0], high_res.shape[0]
                raise InputError(f"{count} magnitude zeros for a batch of {batch}")
        small = _to_device(small, x.device)
        zero_map = small["zero"].to(x.dtype).reshape(-1, 1, 1, 1) if "zero" in small else None
        for axis in (0, 1):
            if axis in small:
                x = _grouped_conv_axis(x, small[axis].to(x.dtype), axis)
        if config.kspace.enabled:
            height, width = x.shape[-2:]
            rows = kspace_mask(height, small["keep_fraction"], x.device)[:, None, :, None]
            cols = kspace_mask(width, small["keep_fraction"], x.device)[:, None, None, :]
            centred = x if zero_map is None else x - zero_map
            spectrum = torch.fft.fftn(centred.to(torch.complex64), dim=(-2, -1)) * rows * cols
            x = torch.fft.ifftn(spectrum, dim=(-2, -1)).abs().to(high_res.dtype)
            x = x if zero_map is None else x + zero_map
        x = F.avg_pool2d(x, self.scale) if self.scale > 1 else x
        if config.noise.kind != "none":
            x = self._add_noise(x, small["noise_std"], params.noise_seed, zero_map)
        return x

    def _add_noise(
        self, x: torch.Tensor, noise_std: torch.Tensor, noise_seed: torch.Tensor, zero=None
    ) -> torch.Tensor:
        if self.per_item_noise:
            fields = _noise_fields(x.shape, noise_seed, x.device, x.dtype)  # (B, 2, 1, h, w)
        else:  # one draw for the whole batch: one launch instead of B (GPU training)
            generator = torch.Generator(device=x.device).manual_seed(int(noise_seed[0]))
            fields = torch.randn(
                (x.shape[0], 2, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype
            )
        std = noise_std.to(x.dtype).reshape(-1, 1, 1, 1)
        if self.config.noise.kind == "rician":
            return rician(x, std * fields[:, 0], std * fields[:, 1], 0.0 if zero is None else zero)
        local = noise_std_map(x, std, self.config.noise.signal_dependence, self.config.normalise.window_hu)
        return x + local * fields[:, 0]

    def forward(
        self, high_res: torch.Tensor, generator: torch.Generator | None = None, spacing_mm=None, zero=None
    ) -> torch.Tensor:
        """Draw per-item parameters and degrade: ``(B, 1, H, W) -> (B, 1, H // scale, W // scale)``."""
        return self.apply(high_res, self.sample_params(high_res.shape[0], generator), spacing_mm, zero)
