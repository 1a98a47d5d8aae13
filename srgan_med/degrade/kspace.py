"""MR k-space truncation: how MR actually loses resolution (a sinc PSF with Gibbs ringing).

MONAI's ``RandKSpaceSpikeNoise`` / ``GibbsNoise`` exist, but ``GibbsNoise`` keeps a centred *radial*
disc of k-space while an acquisition with fewer phase/frequency encodes keeps a *rectangle*, one
extent per in-plane axis; so the rectangle is written here. The magnitude image is returned, as a
scanner would reconstruct it. See Bernstein, King & Zhou, "Handbook of MRI Pulse Sequences", 2004.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from monai.transforms import MapTransform, RandomizableTransform

from srgan_med.degrade._common import in_plane_axes_of, record, uniform, with_array
from srgan_med.degrade.config import KSpaceConfig
from srgan_med.degrade.normalise import image_magnitude_zero


def kspace_mask(size: int, keep_fraction, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 where ``|fftfreq(size)| <= keep_fraction / 2``, else 0; ``keep_fraction`` may be ``(B,)``.

    Returns ``(size,)`` for a scalar fraction, ``(B, size)`` for a tensor of fractions.
    """
    frequencies = torch.fft.fftfreq(size, device=device, dtype=torch.float64)
    keep = torch.as_tensor(keep_fraction, dtype=torch.float64, device=device)
    mask = frequencies.abs() <= keep[..., None] / 2.0 + 1e-12
    return mask.to(dtype)


def truncate_kspace(
    image: torch.Tensor, keep_fraction: float, axes: Sequence[int], zero: float = 0.0
) -> torch.Tensor:
    """Keep the central ``keep_fraction`` of k-space along each of ``axes``; magnitude image out.

    Args:
        image: ``(C, *spatial)`` real tensor.
        keep_fraction: fraction of the k-space extent kept per axis (1 keeps all).
        axes: spatial axes (0-based, without the channel) to truncate.
        zero: where a magnitude of 0 lies in ``image``'s units
            (:func:`~srgan_med.degrade.normalise.magnitude_zero`): the magnitude is taken about it.
    """
    dims = [1 + a for a in axes]
    spectrum = torch.fft.fftn((image - zero).to(torch.complex64), dim=dims)
    for dim in dims:
        shape = [1] * image.ndim
        shape[dim] = image.shape[dim]
        spectrum = spectrum * kspace_mask(image.shape[dim], keep_fraction, image.device).reshape(shape)
    return (torch.fft.ifftn(spectrum, dim=dims).abs() + zero).to(image.dtype)


class RandKSpaceTruncated(RandomizableTransform, MapTransform):
    """Truncate in-plane k-space of ``keys`` to one fraction drawn per item.

    Args:
        keys: keys to truncate, all with the same draw. Default ``("low_res",)``.
        config: ``enabled`` and ``[low, high]`` kept fraction.
        in_plane_axes: in-plane spatial axes of ``(1, I, J, K)`` volumes (slices use both axes).

    Example:
        >>> truncate = RandKSpaceTruncated(config=KSpaceConfig(True, (0.5, 0.5)))
        >>> item = truncate({"low_res": torch.rand(1, 16, 16)})
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("low_res",),
        config: KSpaceConfig | None = None,
        in_plane_axes: tuple[int, int] = (0, 1),
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.config = config if config is not None else KSpaceConfig(enabled=True)
        self.in_plane_axes = in_plane_axes
        self.keep_fraction = self.config.keep_fraction[1]

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.keep_fraction = uniform(self.R, self.config.keep_fraction)

    def __call__(self, data, randomize: bool = True):
        item = dict(data)
        if randomize:
            self.randomize()
        if not self.config.enabled:
            return item
        for key in self.key_iterator(item):
            image = item[key]
            raw = image.as_tensor() if hasattr(image, "as_tensor") else image
            axes, zero = in_plane_axes_of(image, self.in_plane_axes), image_magnitude_zero(image)
            out = with_array(image, truncate_kspace(raw, self.keep_fraction, axes, zero))
            record(out, "kspace", {"keep_fraction": self.keep_fraction})
            item[key] = out
        return item
