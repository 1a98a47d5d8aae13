"""Example scans that install with the dependencies (pydicom's own test data), usable as
``example:NAME`` wherever a command takes an input path.
"""

from __future__ import annotations

from pathlib import Path

from srgan_med.errors import InputError

PREFIX = "example:"

# name -> (file in pydicom's test_files folder, description)
EXAMPLES: dict[str, tuple[str, str]] = {
    "ct-small": ("CT_small.dcm", "CT slice, 128x128, 0.66 mm pixels, HU (pydicom test data)"),
    "mr-small": ("MR_small.dcm", "MR slice, 64x64, 0.31 mm pixels (pydicom test data)"),
}


def example_path(name: str) -> Path:
    """Path of the installed example ``name`` (looked up on disk: nothing is downloaded)."""
    import pydicom.data

    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    path = Path(pydicom.data.__file__).parent / "test_files" / EXAMPLES[name][0]
    if not path.is_file():
        raise InputError(f"example {name!r} is missing from the pydicom installation ({path})")
    return path


def resolve_input(text: str | Path) -> Path:
    """Turn ``example:NAME`` into the example's path; other values are plain paths."""
    text = str(text)
    return example_path(text[len(PREFIX) :]) if text.startswith(PREFIX) else Path(text)
