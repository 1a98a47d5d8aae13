"""Slices shown as radiologists read them: from the scan's affine, not in voxel order.

Voxel order is whatever the file stores: an LPS-stored chest CT drawn as stored shows the spine at
the top, and left and right swap from scan to scan. :func:`slice_view` turns a slice into the
radiological convention (axial and coronal: the patient's right on the viewer's left; axial:
anterior up; coronal and sagittal: superior up; sagittal: anterior on the left) and gives the pixel
aspect in mm, so non-square pixels (a coronal plane of 2.4 mm slices) are not drawn squashed.
matplotlib draws; what no library does for a bare array is this reading of the affine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# For each plane, the RAS+ direction that runs to the viewer's right and the one that runs down
_SCREEN = {
    "axial": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}
# The patient's side at each edge of the picture: left, right, top, bottom
_EDGES = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


@dataclass(frozen=True)
class SliceView:
    """How to draw slices across one voxel axis of one grid.

    Attributes:
        orient: a slice ``(n_a, n_b)`` (the two other voxel axes, in order) -> the picture's array,
            rows top to bottom, columns left to right.
        aspect: a pixel's height over its width in mm (matplotlib's ``aspect``).
        edges: the patient's side at the picture's left, right, top and bottom edges.
        plane: ``axial``, ``coronal`` or ``sagittal``.
    """

    orient: Callable[[np.ndarray], np.ndarray]
    aspect: float
    edges: tuple[str, str, str, str]
    plane: str


def slice_view(affine, slice_axis: int) -> SliceView:
    """The :class:`SliceView` of slices across ``slice_axis`` of the grid ``affine`` (RAS+)."""
    from srgan_med.enhance.engine import plane_of_axis

    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    in_plane = [a for a in range(3) if a != slice_axis]
    directions = matrix[:, in_plane] / spacing[in_plane]
    plane = plane_of_axis(affine, slice_axis)
    right, down = (np.array(v) for v in _SCREEN[plane])
    column = int(np.argmax(np.abs(directions.T @ right)))  # the in-plane axis nearer the screen's x
    row = 1 - column
    flip_columns = bool(directions[:, column] @ right < 0)
    flip_rows = bool(directions[:, row] @ down < 0)

    def orient(image: np.ndarray) -> np.ndarray:
        picture = image if (row, column) == (0, 1) else image.T
        if flip_columns:
            picture = picture[:, ::-1]
        if flip_rows:
            picture = picture[::-1, :]
        return picture

    aspect = float(spacing[in_plane[row]] / spacing[in_plane[column]])
    return SliceView(orient, aspect, _EDGES[plane], plane)


def label_edges(axis, view: SliceView, fontsize: float = 7, color: str = "yellow") -> None:
    """Write the patient's sides at the middle of each edge of a matplotlib ``axis``."""
    left, right, top, bottom = view.edges
    style = {"color": color, "fontsize": fontsize, "transform": axis.transAxes, "fontweight": "bold"}
    axis.text(0.02, 0.5, left, ha="left", va="center", **style)
    axis.text(0.98, 0.5, right, ha="right", va="center", **style)
    axis.text(0.5, 0.98, top, ha="center", va="top", **style)
    axis.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
