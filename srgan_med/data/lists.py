"""Data lists: the ``data.train`` / ``data.validation`` entries of a training config, as scan paths.

An entry is a NIfTI or DICOM file, a folder (its NIfTI files; a folder without NIfTI files is one
DICOM series), a glob (``scans/ct_*.nii.gz``), a CSV file (column ``path``, else the first column;
relative paths are relative to the CSV) or ``example:NAME``. Relative entries are relative to
``base_dir`` (the config's folder).
"""

from __future__ import annotations

import csv
import glob
import time
from pathlib import Path

import numpy as np

from srgan_med.errors import ConfigError
from srgan_med.io.nifti import is_nifti_path


def _from_csv(path: Path, key: str) -> list[Path]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{key}: cannot read CSV {path} ({error})") from None
    if not rows:
        raise ConfigError(f"{key}: CSV {path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("path") if "path" in header else 0
    body = rows[1:] if "path" in header else rows
    paths = [Path(row[column].strip()) for row in body if len(row) > column and row[column].strip()]
    return [p if p.is_absolute() else path.parent / p for p in paths]


def _expand_one(entry: str, base_dir: Path, key: str) -> list[Path]:
    from srgan_med.examples import PREFIX, resolve_input

    if entry.startswith(PREFIX):
        from srgan_med.errors import InputError

        try:
            return [resolve_input(entry)]
        except InputError as error:
            raise ConfigError(f"{key}: {error}") from None
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if glob.has_magic(str(path)):
        matches = sorted(Path(p) for p in glob.glob(str(path)))
        if not matches:
            raise ConfigError(f"{key}: no file matches {path}")
        return [m for match in matches for m in _expand_one(str(match), base_dir, key)]
    if path.is_dir():
        niftis = sorted(p for p in path.iterdir() if p.is_file() and is_nifti_path(p))
        return niftis or [path]
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist")
    if path.suffix.lower() == ".csv":
        return [p for row in _from_csv(path, key) for p in _expand_one(str(row), base_dir, key)]
    return [path]


def expand_data_list(entries, base_dir: str | Path = ".", key: str = "data.train") -> list[Path]:
    """Scan paths named by ``entries``, in order, without duplicates.

    Raises:
        ConfigError: an entry that names nothing; the message names ``key`` and the entry.

    Example:
        >>> expand_data_list(["example:ct-small"])  # doctest: +ELLIPSIS
        [PosixPath('.../CT_small.dcm')]
    """
    if isinstance(entries, (str, Path)):  # one path, not its characters
        entries = [entries]
    seen: dict[Path, None] = {}
    for index, entry in enumerate(entries):
        for path in _expand_one(str(entry), Path(base_dir), f"{key}[{index}]"):
            seen.setdefault(path.resolve(), None)
    return list(seen)


_FINGERPRINTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime, ctime) -> fingerprint


def fingerprint(path: str | Path) -> str:
    """What identifies a scan's data wherever it lies: for a file, its size and a digest of its first
    and last MiB and of 16 blocks of 64 KiB between (the whole file up to 4 MiB; a ``.nii.gz``'s last
    bytes hold its CRC); for a folder (a DICOM series), the names and fingerprints of its files
    (hidden ones left out).

    A training run resumed from a copy of its data at another path (a job's node-local scratch, a
    moved project) has the same fingerprints; one whose names read other files has others, and so
    does a disk cache entry of a file rewritten with its old size and time. Cheap: at most 4 MiB read
    per file.
    """
    import hashlib

    path = Path(path)
    digest = hashlib.blake2b(digest_size=12)
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))  # .DS_Store
        for item in sorted(files):
            digest.update(f"{item.relative_to(path)}\0{fingerprint(item)}\n".encode())
        return f"folder:{digest.hexdigest()}"
    # Training start-up asks twice per file (the resume check, then the disk cache's key): the
    # second answer is the first one's while the file is the same inode, unchanged since. Its
    # change time is in the key because ``cp -p`` and ``rsync -a`` restore size and mtime, not ctime.
    status = path.stat()
    known = (str(path.resolve()), status.st_dev, status.st_ino, status.st_size)
    known += (status.st_mtime_ns, status.st_ctime_ns)
    if known in _FINGERPRINTS:
        return _FINGERPRINTS[known]
    size = status.st_size
    with open(path, "rb") as handle:
        if size <= 4 << 20:
            digest.update(handle.read())
        else:  # both ends and 16 blocks between: scans that share a header and empty edges differ there
            for start in [0, *np.linspace(1 << 20, size - (2 << 20), 16).astype(np.int64), size - (1 << 20)]:
                handle.seek(int(start))
                digest.update(handle.read(1 << 20 if start in (0, size - (1 << 20)) else 1 << 16))
    answer = f"{size}:{digest.hexdigest()}"
    # Not kept for a file changed in the last 2 s: a same-size rewrite within one tick of a coarse
    # clock (FAT: 2 s, some network file systems: 1 s) keeps every stat field (git's "racily clean")
    if time.time() - max(status.st_mtime, status.st_ctime) > 2.0:
        if len(_FINGERPRINTS) >= 1 << 16:  # bounded: a long-lived process sees many files
            _FINGERPRINTS.clear()
        _FINGERPRINTS[known] = answer
    return answer
