"""Example scans that install from the package index, usable as ``example:NAME`` wherever a command
takes an input path: pydicom's own test data (a dependency), and the MNI152 T1 template when the
optional ``nilearn`` package is installed.
"""

from __future__ import annotations

from pathlib import Path

from srgan_med.errors import InputError

PREFIX = "example:"

# name -> (package, file inside the installed package, description)
EXAMPLES: dict[str, tuple[str, str, str]] = {
    "ct-small": (
        "pydicom",
        "data/test_files/CT_small.dcm",
        "CT slice, 128x128, 0.66 mm pixels, HU (pydicom test data)",
    ),
    "mr-small": (
        "pydicom",
        "data/test_files/MR_small.dcm",
        "MR slice, 64x64, 0.31 mm pixels (pydicom test data)",
    ),
    "mni152": (
        "nilearn",
        "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "MNI152 2009 T1 template, 197x233x189, 1 mm (needs: pip install nilearn)",
    ),
}


def example_path(name: str) -> Path:
    """Path of the installed example ``name`` (looked up on disk: nothing is downloaded)."""
    import importlib.util

    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    package, relative, _ = EXAMPLES[name]
    # Found without importing the package (importing nilearn takes seconds).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"example {name!r} needs the {package} package: pip install {package}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise InputError(f"example {name!r} is missing from the {package} installation ({path})")
    return path


def resolve_input(text: str | Path) -> Path:
    """Turn ``example:NAME`` into the example's path; other values are plain paths."""
    text = str(text)
    if not text.strip():  # Path("") is the current folder: an empty argument would name it
        raise InputError("an input path is empty")
    return example_path(text[len(PREFIX) :]) if text.startswith(PREFIX) else Path(text)
