"""The storage type a volume's values came in, for writing its upscaled version back the same way."""

from __future__ import annotations

import numpy as np

from srgan_med.io.layout import slabs


def integer_dtype(integral: bool, low: float, high: float, prefer: str | None = None) -> str:
    """An integer type that holds integer values in ``[low, high]``, else ``"float32"``.

    ``prefer`` (the file's stored type) is taken when it holds the range; otherwise the smallest of
    int16 / uint16 / int32 that does. CT in whole HU comes back as int16.

    Example:
        >>> integer_dtype(True, -1024.0, 3071.0), integer_dtype(False, 0.0, 0.004)
        ('int16', 'float32')
        >>> integer_dtype(True, 0.0, 255.0, prefer="uint8")
        'uint8'
    """
    if integral:
        candidates = ("int16", "uint16", "int32")
        if prefer is not None and np.dtype(prefer).kind in "iu":
            candidates = (prefer, *candidates)
        for name in candidates:
            info = np.iinfo(name)
            if info.min <= low and high <= info.max:
                return name
    return "float32"


def value_summary(volume: np.ndarray) -> tuple[bool, float, float]:
    """``(all values whole numbers, min, max)``, computed slab by slab (no whole-volume temporary)."""
    integral, low, high = volume.size > 0, np.inf, -np.inf
    for index in slabs(volume.shape, volume.strides):
        block = volume[index]
        if block.size == 0:
            continue
        integral = integral and bool(np.array_equal(block, np.rint(block)))
        low, high = min(low, float(block.min())), max(high, float(block.max()))
    return integral, low, high
