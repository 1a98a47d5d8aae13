"""Scan I/O: NIfTI and DICOM in, NIfTI and DICOM series out, with exact geometry.

See :mod:`srgan_med.io.scan` for the conventions (``(1, I, J, K)`` MetaTensor, RAS+ mm affine).
"""

from srgan_med.io.geometry import orientation_code, rescaled_affine, spacing_from_affine
from srgan_med.io.scan import load_scan, save_scan

__all__ = ["load_scan", "save_scan", "orientation_code", "rescaled_affine", "spacing_from_affine"]
