"""JPEG-like quantisation of 8-bit inputs: 8x8 block DCT quantised with the scaled JPEG table.

For scans that went through a lossy 8-bit export (screenshots, teaching files). MONAI has no
compression artefact transform, so this is written here, on CPU with SciPy (no GPU version: it is
off in both presets). Wallace, "The JPEG still picture compression standard", IEEE TCE 38(1), 1992,
https://doi.org/10.1109/30.125072
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from srgan_med.degrade._common import in_plane_axes_of, record, uniform, with_array
from srgan_med.degrade.config import QuantiseConfig

# ITU-T T.81 Annex K, table K.1 (luminance).
JPEG_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)


def quantisation_table(quality: float) -> np.ndarray:
    """The IJG scaling of the luminance table for ``quality`` in 1..100."""
    quality = float(np.clip(quality, 1, 100))
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((JPEG_LUMINANCE * scale + 50.0) / 100.0), 1, 255)


def jpeg_quantise_2d(plane: np.ndarray, quality: float) -> np.ndarray:
    """Quantise a ``(H, W)`` plane of intensities in ``[0, 1]`` as an 8-bit JPEG would.

    Returns the ``(H, W)`` decoded plane in ``[0, 1]``, on the 8-bit levels.
    """
    from scipy.fft import dctn, idctn

    levels = np.round(np.clip(plane, 0.0, 1.0) * 255.0) - 128.0
    height, width = levels.shape
    padded = np.pad(levels, ((0, -height % 8), (0, -width % 8)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // 8, 8, padded.shape[1] // 8, 8).transpose(0, 2, 1, 3)
    table = quantisation_table(quality)
    coefficients = np.round(dctn(blocks, axes=(2, 3), norm="ortho") / table) * table
    decoded = idctn(coefficients, axes=(2, 3), norm="ortho").transpose(0, 2, 1, 3).reshape(padded.shape)
    return np.clip(np.round(decoded[:height, :width] + 128.0), 0, 255) / 255.0


class RandQuantised(RandomizableTransform, MapTransform):
    """JPEG-like quantisation of every in-plane slice of ``keys``, one quality drawn per item.

    Args:
        keys: keys to quantise (normalised to ``[0, 1]``). Default ``("low_res",)``.
        config: ``enabled`` and ``[low, high]`` quality.
        in_plane_axes: in-plane spatial axes of ``(1, I, J, K)`` volumes (slices use both axes).

    Example:
        >>> quantise = RandQuantised(config=QuantiseConfig(True, (50.0, 50.0)))
        >>> item = quantise({"low_res": torch.rand(1, 16, 16)})
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("low_res",),
        config: QuantiseConfig | None = None,
        in_plane_axes: tuple[int, int] = (0, 1),
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.config = config if config is not None else QuantiseConfig(enabled=True)
        self.in_plane_axes = in_plane_axes
        self.quality = self.config.quality[1]

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.quality = uniform(self.R, self.config.quality)

    def __call__(self, data, randomize: bool = True):
        item = dict(data)
        if randomize:
            self.randomize()
        if not self.config.enabled:
            return item
        for key in self.key_iterator(item):
            image = item[key]
            axes = in_plane_axes_of(image, self.in_plane_axes)
            array = np.asarray(image.detach().cpu(), dtype=np.float64)
            # Move the in-plane axes last so every remaining index is one 2-D plane.
            planes = np.moveaxis(array, [1 + axes[0], 1 + axes[1]], [-2, -1])
            flat = planes.reshape(-1, *planes.shape[-2:])
            quantised = np.stack([jpeg_quantise_2d(p, self.quality) for p in flat]).reshape(planes.shape)
            restored = np.moveaxis(quantised, [-2, -1], [1 + axes[0], 1 + axes[1]])
            out = with_array(image, torch.as_tensor(restored, dtype=image.dtype, device=image.device))
            record(out, "quantise", {"quality": self.quality})
            item[key] = out
        return item
