"""The whole degradation as one MONAI ``Compose`` of dictionary transforms (CPU, per item).

Order, as an acquisition would produce it: normalise ``high_res`` (invertibly) -> copy to ``low_res``
-> in-plane PSF (one family per item when ``blur.profile`` is a mixture) -> k-space truncation (MR)
-> block averaging / thick slices -> noise -> 8-bit quantisation. Every PSF family ends in the same
block averaging, so all families share one low-res grid (see :mod:`srgan_med.degrade.bicubic`).
:class:`srgan_med.degrade.batch.BatchDegradation` runs the same steps on whole batches.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from monai.transforms import Compose, MapTransform

from srgan_med.degrade.blur import RandPSFBlurd
from srgan_med.degrade.config import DegradationConfig
from srgan_med.degrade.downsample import Downsampled
from srgan_med.degrade.kspace import RandKSpaceTruncated
from srgan_med.degrade.noise import RandNoised
from srgan_med.degrade.normalise import NormaliseIntensityd
from srgan_med.degrade.quantise import RandQuantised
from srgan_med.errors import InputError, wrapped_user_error


class CopyToLowResd(MapTransform):
    """Start ``low_res`` as a copy of ``high_res`` (meta included, so the records travel with it)."""

    def __init__(self, source: Hashable = "high_res", target: Hashable = "low_res") -> None:
        super().__init__([source])
        self.source, self.target = source, target

    def __call__(self, data):
        item = dict(data)
        image = item[self.source]
        copy = image.clone()
        if hasattr(image, "meta"):
            copy.meta = dict(image.meta)
        item[self.target] = copy
        return item


class DegradationPipeline(Compose):
    """A ``Compose`` that lets user-facing errors out as themselves.

    MONAI wraps every exception raised inside a transform in a ``RuntimeError``; a
    :class:`~srgan_med.errors.SrganMedError` (bad config value, too small a scan) is unwrapped so the
    CLI reports it as one line instead of an internal error.
    """

    def __call__(self, data, *args, **kwargs):
        try:
            return super().__call__(data, *args, **kwargs)
        except RuntimeError as error:
            cause = wrapped_user_error(error)
            if cause is None:
                raise
            raise cause from None


def degradation_pipeline(
    config: DegradationConfig, scale: int, seed: int | None = 0, normalise: bool = True
) -> DegradationPipeline:
    """A seeded ``Compose`` that turns ``{"high_res": (1, I, J, K) or (1, H, W)}`` into an LR/HR pair.

    Args:
        config: the degradation model.
        scale: integer in-plane factor.
        seed: seeds the random transforms (``None`` leaves them unseeded).
        normalise: normalise ``high_res`` first (skip when it already is).

    Returns:
        ``Compose``; each item gets one draw per step, recorded in ``meta["degradation"]``.

    In a ``DataLoader`` with workers, as for MONAI's own random transforms: each worker holds a
    copy of the generators, so torch's ``DataLoader`` gives every worker the same draws unless its
    ``worker_init_fn`` reseeds them (``monai.data.utils.worker_init_fn`` does), and MONAI's
    ``DataLoader`` reseeds them from torch's seed, which then decides the draws instead of ``seed``.

    Example:
        >>> from srgan_med.degrade import load_degradation_preset
        >>> pipeline = degradation_pipeline(load_degradation_preset("ct"), scale=2)
    """
    axes = config.in_plane_axes
    steps = [NormaliseIntensityd(config=config.normalise)] if normalise else []
    steps += [
        CopyToLowResd(),
        RandPSFBlurd(config=config.blur, in_plane_axes=axes, scale=scale),
        RandKSpaceTruncated(config=config.kspace, in_plane_axes=axes),
        Downsampled(scale=scale, in_plane_axes=axes, through_plane=config.through_plane),
        RandNoised(noise=config.noise, normalise=config.normalise),
        RandQuantised(config=config.quantise, in_plane_axes=axes),
    ]
    pipeline = DegradationPipeline(steps)
    if seed is not None:
        # One generator per step, derived from one seed, so adding a step does not shift the others.
        for index, step in enumerate(steps):
            if hasattr(step, "set_random_state"):
                step.set_random_state(state=_step_state(seed, index))
    return pipeline


def _step_state(seed: int, index: int) -> np.random.RandomState:
    """The generator of step ``index`` under ``seed``: ``seed * 1000 + index`` modulo 2**32, numpy's
    seed range. Seeds equal modulo 2**29 (1000 = 8 * 125) therefore share their streams; the degrade
    command takes seeds below 2**29, and evaluate's per-scan seeds (``volume_seed``) are 32-bit
    digests, which meet that way with odds of 8 in 2**32. Kept, not mixed by a ``SeedSequence``:
    every documented result was drawn from these streams."""
    return np.random.RandomState((int(seed) * 1000 + index) % 2**32)


def simulate_low_res(scan, config: DegradationConfig, scale: int, seed: int | None = 0):
    """The low-resolution scan a worse acquisition would have produced, in the scan's units.

    Args:
        scan: ``MetaTensor`` ``(1, I, J, K)`` in physical units (HU for CT).
        config: the degradation model.
        scale: integer in-plane factor.
        seed: seed of the draws (same seed, same output).

    Returns:
        ``(low_res, item)``: the LR ``MetaTensor`` in physical units on its voxel-centre-correct grid
        (draws in ``meta["degradation"]``), and the pipeline's normalised ``item`` (for previews).
    """
    from monai.data import MetaTensor

    from srgan_med.degrade.normalise import denormalise

    if scan.ndim != 4 or scan.shape[0] != 1:  # an (I, J, K) tensor was degraded as a (C, H, W) slice
        raise InputError(
            f"expected a scan (1, I, J, K) as load_scan gives it, got shape {tuple(scan.shape)} "
            "(add the channel axis: scan[None])"
        )
    item = degradation_pipeline(config, scale, seed=seed)({"high_res": scan})
    low_res = item["low_res"]
    values = denormalise(low_res.as_tensor(), low_res.meta["normalisation"])
    meta = {k: v for k, v in low_res.meta.items() if k != "affine"}
    return MetaTensor(values, affine=low_res.affine, meta=meta), item
