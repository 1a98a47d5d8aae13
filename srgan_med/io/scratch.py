"""Whole-volume arrays that can live on disk: outputs larger than the memory there is.

``enhance`` of a large scan builds a float32 output volume (x2: 4 times the input's voxels, x4: 16
times) and, for an integer NIfTI, its rounded copy. Inside :func:`disk_backed`, :func:`array`
returns such an array as a ``numpy.memmap`` in a hidden file of the output's folder whenever it is
larger than the budget, so the process holds only the input and one batch however large the output
is; the operating system pages the file in and out. The files are removed when the block ends, by
an error or Ctrl-C too. MONAI and nibabel have no such allocator; ``numpy.memmap`` is the mechanism.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUDGET_VARIABLE = "SRGAN_MED_MAX_ARRAY_MB"


@dataclass
class _Scratch:
    folder: Path
    budget_bytes: int
    files: list[Path] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_Scratch | None] = contextvars.ContextVar("srgan_med_scratch", default=None)


def memory_budget_bytes() -> int:
    """The largest whole-volume array kept in memory: ``$SRGAN_MED_MAX_ARRAY_MB`` MiB, else a quarter
    of the memory available now (Linux ``MemAvailable``; the output and its rounded copy, the input
    and the network share the rest), else no limit."""
    if os.environ.get(BUDGET_VARIABLE):
        return int(float(os.environ[BUDGET_VARIABLE]) * 2**20)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except OSError:
        pass
    return 2**62


@contextlib.contextmanager
def disk_backed(folder: Path, budget_bytes: int | None = None) -> Iterator[None]:
    """Inside: :func:`array` puts arrays over ``budget_bytes`` in files in ``folder``, removed at the end."""
    scratch = _Scratch(Path(folder), memory_budget_bytes() if budget_bytes is None else budget_bytes)
    token = _ACTIVE.set(scratch)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        for path in scratch.files:
            path.unlink(missing_ok=True)


def _on_disk(nbytes: int) -> _Scratch | None:
    """The active scratch folder when an array of ``nbytes`` is over its budget, else ``None``."""
    scratch = _ACTIVE.get()
    return scratch if scratch is not None and nbytes > scratch.budget_bytes else None


def array(shape: tuple[int, ...], dtype, order: str = "C") -> np.ndarray:
    """An uninitialised array: in memory, or on disk inside :func:`disk_backed` when over its budget."""
    scratch = _on_disk(math.prod(shape) * np.dtype(dtype).itemsize)
    if scratch is None:
        return np.empty(shape, dtype=dtype, order=order)
    path = scratch.folder / f".srgan_med-{uuid.uuid4().hex[:8]}.scratch"
    scratch.files.append(path)
    try:
        return np.memmap(path, dtype=dtype, mode="w+", shape=shape, order=order)
    except OSError as error:  # sizing the file (a full disk, a file size limit) names no file
        from srgan_med.io.atomic import output_write_error

        raise output_write_error(
            scratch.folder,
            error,
            f"a {math.prod(shape) * np.dtype(dtype).itemsize / 2**20:,.1f} MiB scratch file for the output",
            "nothing was written",
        ) from error


def array_like(data: np.ndarray, dtype) -> np.ndarray:
    """:func:`array` of ``data``'s shape; in memory it keeps ``data``'s layout (``numpy.empty_like``)."""
    if _on_disk(data.size * np.dtype(dtype).itemsize) is None:
        return np.empty_like(data, dtype=dtype)
    return array(
        data.shape, dtype, order="F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
    )
