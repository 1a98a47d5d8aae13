"""Automatic foreground (body / head) masks, so metrics are not dominated by air."""

from __future__ import annotations

import numpy as np

# Soft tissue starts well above this; air and the couch padding are below it.
CT_BODY_THRESHOLD_HU = -500.0


def foreground_mask(volume: np.ndarray, modality: str) -> np.ndarray:
    """Largest connected foreground component with its holes filled.

    Thresholds: ``-500 HU`` for CT; Otsu's threshold (scikit-image) for other modalities.

    Args:
        volume: ``(I, J, K)`` in physical units.
        modality: ``"CT"`` or anything else.

    Returns:
        Boolean ``(I, J, K)`` mask; empty (all False) when no foreground is found: the caller
        decides what to score then (``evaluate`` scores the whole volume and says so).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    volume = np.asarray(volume, dtype=np.float32)
    if modality == "CT":
        threshold = CT_BODY_THRESHOLD_HU
    elif float(volume.max()) > float(volume.min()):
        # on the flattened values: the histogram is all it uses, and a (., ., 3) volume warned "RGB"
        threshold = float(threshold_otsu(volume.ravel()))
    else:
        return np.zeros(volume.shape, bool)
    labels, count = ndimage.label(volume > threshold)
    if count == 0:
        return np.zeros(volume.shape, bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    # fill holes slice by slice (lungs and sinuses are inside the body)
    filled = np.stack([ndimage.binary_fill_holes(largest[..., k]) for k in range(largest.shape[-1])], axis=-1)
    return filled
