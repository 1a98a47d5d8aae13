"""Walking a large volume in slabs that are contiguous in memory, whatever its layout."""

from __future__ import annotations

from collections.abc import Iterator


def slabs(shape: tuple[int, ...], strides: tuple[int, ...], size: int = 16) -> Iterator[tuple[slice, ...]]:
    """Index tuples of consecutive ``size``-thick slabs along the axis slowest in memory.

    Whole-volume temporaries (a boolean mask, a rounded copy) of an upscaled CT can be gigabytes;
    slab by slab they stay small. Slabs along the slowest axis are contiguous blocks for C- and
    Fortran-ordered arrays alike (``enhance`` writes Fortran-ordered volumes), so each pass reads
    memory in order.

    Example:
        >>> [s[0] for s in slabs((40, 8, 8), (512, 64, 8), size=16)]
        [slice(0, 16, None), slice(16, 32, None), slice(32, 48, None)]
    """
    if not shape:
        yield ()
        return
    axis = max(range(len(shape)), key=lambda a: abs(strides[a]))
    for start in range(0, max(shape[axis], 1), size):
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, start + size)
        yield tuple(index)
