"""LR/HR pair synthesis: a physical degradation model as MONAI dictionary transforms and a batched
GPU implementation of the same steps.

PSF families: Gaussian, box (voxel averaging) and anti-aliased bicubic (:mod:`.bicubic`), or a
mixture drawn per item. Per item (CPU): :func:`degradation_pipeline` or the single transforms. Whole
batches on the device: :class:`BatchDegradation`. Geometry helpers shared with I/O and ``enhance``:
:func:`downsampled_affine`, :func:`upsampled_affine`.
"""

from srgan_med.degrade.batch import BatchDegradation, DegradationParams
from srgan_med.degrade.bicubic import antialiased_bicubic_taps, bicubic_psf_kernel
from srgan_med.degrade.blur import RandPSFBlurd, box_kernel, gaussian_kernel
from srgan_med.degrade.config import (
    PSF_PROFILES,
    BlurConfig,
    DegradationConfig,
    KSpaceConfig,
    NoiseConfig,
    NormaliseConfig,
    QuantiseConfig,
    ThroughPlaneConfig,
    config_from_dict,
    load_degradation_preset,
)
from srgan_med.degrade.downsample import Downsampled, block_average, thick_slice_weights
from srgan_med.degrade.geometry import downsampled_affine, strided_affine, upsampled_affine
from srgan_med.degrade.kspace import RandKSpaceTruncated, truncate_kspace
from srgan_med.degrade.noise import RandNoised, add_noise
from srgan_med.degrade.normalise import NormaliseIntensityd, denormalise, normalise
from srgan_med.degrade.pipeline import CopyToLowResd, degradation_pipeline, simulate_low_res
from srgan_med.degrade.quantise import RandQuantised, jpeg_quantise_2d
from srgan_med.degrade.slices import RandAlignedPatchd, RandSliced, extract_slice, slice_affine

__all__ = [
    "simulate_low_res",
    "BatchDegradation", "DegradationParams", "RandPSFBlurd", "box_kernel", "gaussian_kernel",
    "antialiased_bicubic_taps", "bicubic_psf_kernel", "PSF_PROFILES",
    "BlurConfig", "DegradationConfig", "KSpaceConfig", "NoiseConfig", "NormaliseConfig", "QuantiseConfig",
    "ThroughPlaneConfig", "config_from_dict", "load_degradation_preset", "Downsampled", "block_average",
    "thick_slice_weights", "downsampled_affine", "strided_affine", "upsampled_affine",
    "RandKSpaceTruncated", "truncate_kspace", "RandNoised", "add_noise", "NormaliseIntensityd",
    "denormalise", "normalise", "CopyToLowResd", "degradation_pipeline", "RandQuantised",
    "jpeg_quantise_2d", "RandAlignedPatchd", "RandSliced", "extract_slice", "slice_affine",
]  # fmt: skip
