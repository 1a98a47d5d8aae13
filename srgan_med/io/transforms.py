"""MONAI dictionary transform that loads scans with :func:`srgan_med.io.load_scan`.

MONAI's ``LoadImaged`` would use ``PydicomReader`` for DICOM series, whose slice ordering and spacing
are not reliable (see :mod:`srgan_med.io.dicom_read`); this transform gives MONAI pipelines
(``Compose``, ``CacheDataset``) the same checked loader the command line uses.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from srgan_med.io.scan import load_scan


class LoadScand(MapTransform):
    """Replace the path under each key by the loaded ``MetaTensor`` ``(1, I, J, K)``.

    Args:
        keys: keys whose values are paths (NIfTI file, DICOM file or series folder).
        series: SeriesInstanceUID to pick in folders holding several series.
        modality: modality override (NIfTI carries none).
        allow_missing_keys: as in MONAI.

    Example:
        >>> from monai.transforms import Compose
        >>> load = Compose([LoadScand(keys="high_res")])
        >>> item = load({"high_res": "ct.nii.gz"})  # doctest: +SKIP
        >>> item["high_res"].shape  # doctest: +SKIP
        torch.Size([1, 512, 512, 120])
    """

    def __init__(
        self,
        keys: KeysCollection,
        series: str | None = None,
        modality: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series = series
        self.modality = modality

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        for key in self.key_iterator(item):
            item[key] = load_scan(item[key], series=self.series, modality=self.modality)
        return item
