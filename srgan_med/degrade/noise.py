"""Acquisition noise matched to the modality: Gaussian in HU for CT, Rician for magnitude MR.

MONAI's ``RandGaussianNoised`` / ``RandRicianNoised`` draw the std in ``[0, std]`` from a NumPy
generator and the realisation cannot be reproduced from a recorded value. Here the level is a
``[low, high]`` range in physical units (HU for CT), the realisation comes from a torch generator
seeded by a per-item ``noise_seed`` that is drawn and recorded, so the batched GPU path
(:mod:`srgan_med.degrade.batch`) reproduces it exactly on CPU tensors.

Rician noise: Gudbjartsson & Patz, "The Rician distribution of noisy MRI data", MRM 34(6), 1995,
https://doi.org/10.1002/mrm.1910340618
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from monai.transforms import MapTransform, RandomizableTransform

from srgan_med.degrade._common import record, uniform, with_array
from srgan_med.degrade.config import NoiseConfig, NormaliseConfig
from srgan_med.degrade.normalise import image_magnitude_zero


def noise_fields(shape: Sequence[int], seed: int, device, dtype) -> torch.Tensor:
    """Two standard-normal fields ``(2, *shape)`` from a generator seeded with ``seed``."""
    generator = torch.Generator(device=device).manual_seed(int(seed))
    return torch.randn((2, *shape), generator=generator, device=device, dtype=dtype)


def add_noise(
    image: torch.Tensor,
    kind: str,
    std: float,
    seed: int,
    signal_dependence: float = 0.0,
    window_hu: tuple[float, float] = (-1000.0, 2000.0),
    zero: float = 0.0,
) -> torch.Tensor:
    """Add noise of standard deviation ``std`` (in the image's normalised units).

    Args:
        image: tensor of any shape (normalised intensities).
        kind: ``"gaussian"``, ``"rician"`` or ``"none"``.
        std: noise standard deviation in normalised units.
        seed: seed of the realisation.
        signal_dependence: CT only, see :class:`NoiseConfig`; needs ``window_hu`` to find HU.
        window_hu: the normalisation window, to turn intensities back into HU.
        zero: Rician only: where a magnitude of 0 lies in normalised units
            (:func:`~srgan_med.degrade.normalise.magnitude_zero`).

    Returns:
        The noisy tensor, same shape. Rician: ``z + sqrt((x - z + n1)^2 + n2^2)``, ``z = zero``.
    """
    if kind == "none" or std == 0:
        return image.clone()
    fields = noise_fields(image.shape, seed, image.device, image.dtype)
    if kind == "rician":
        return rician(image, std * fields[0], std * fields[1], zero)
    local_std = noise_std_map(image, std, signal_dependence, window_hu)
    return image + local_std * fields[0]


def rician(signal: torch.Tensor, real, imaginary, zero=0.0) -> torch.Tensor:
    """The magnitude of ``signal`` with complex noise ``real + i imaginary`` added, taken about
    ``zero`` (where no signal lies: :func:`~srgan_med.degrade.normalise.magnitude_zero`):
    ``zero + sqrt((signal - zero + real)^2 + imaginary^2)``."""
    return torch.sqrt((signal - zero + real) ** 2 + imaginary**2) + zero


def noise_std_map(image: torch.Tensor, std, signal_dependence: float, window_hu: tuple[float, float]):
    """Local std: ``std * max(0, 1 + signal_dependence * (HU + 1000) / 1000)`` (``std`` if 0)."""
    if signal_dependence == 0:
        return std
    low, high = window_hu
    hounsfield = image * (high - low) + low
    return std * torch.clamp(1.0 + signal_dependence * (hounsfield + 1000.0) / 1000.0, min=0.0)


def normalised_std(noise: NoiseConfig, normalise: NormaliseConfig, value: float) -> float:
    """A drawn level in config units (HU or relative) as a std in normalised intensity units."""
    if noise.std_hu is not None:
        low, high = normalise.window_hu
        return value / (high - low)
    return value


class RandNoised(RandomizableTransform, MapTransform):
    """Add modality-matched noise to ``keys`` with one level and one seed drawn per item.

    Args:
        keys: keys to corrupt, all with the same draw. Default ``("low_res",)``.
        noise: kind and ``[low, high]`` level (``std_hu`` for CT, ``std_relative`` for MR).
        normalise: the normalisation the item went through (to convert HU to intensities).

    The draw is ``self.level`` (config units) and ``self.noise_seed``; both are recorded in
    ``meta["degradation"]["noise"]``.

    Example:
        >>> noise = RandNoised(noise=NoiseConfig("gaussian", std_hu=(10.0, 10.0))).set_random_state(0)
        >>> item = noise({"low_res": torch.zeros(1, 16, 16)})
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("low_res",),
        noise: NoiseConfig | None = None,
        normalise: NormaliseConfig | None = None,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.noise = noise if noise is not None else NoiseConfig(std_hu=(10.0, 10.0))
        self.normalise = normalise if normalise is not None else NormaliseConfig()
        self.level = 0.0
        self.noise_seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        bounds = self.noise.std_hu if self.noise.std_hu is not None else self.noise.std_relative
        self.level = uniform(self.R, bounds) if bounds is not None else 0.0
        self.noise_seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data, randomize: bool = True):
        item = dict(data)
        if randomize:
            self.randomize()
        if self.noise.kind == "none":
            return item
        std = normalised_std(self.noise, self.normalise, self.level)
        for key in self.key_iterator(item):
            image = item[key]
            raw = image.as_tensor() if hasattr(image, "as_tensor") else image
            noisy = add_noise(
                raw,
                self.noise.kind,
                std,
                self.noise_seed,
                self.noise.signal_dependence,
                self.normalise.window_hu,
                zero=image_magnitude_zero(image),
            )
            noisy = with_array(image, noisy)
            unit = "std_hu" if self.noise.std_hu is not None else "std_relative"
            record(noisy, "noise", {"kind": self.noise.kind, unit: self.level, "std_normalised": std,
                                    "noise_seed": self.noise_seed})  # fmt: skip
            item[key] = noisy
        return item
