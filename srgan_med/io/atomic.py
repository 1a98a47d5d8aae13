"""Atomic, non-destructive output: write beside the target, then rename into place."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from srgan_med.errors import (
    OutputExistsError,
    OutputWriteError,
    SrganMedError,
    os_error_reason,
    root_os_error,
)

# What srgan-med writes into an output folder: a derived DICOM series, an evaluation's tables and figures.
_OUR_FOLDER_FILES = ("*.dcm", "*.csv", "summary.json", "report.md", "*.png")


def check_output(path: Path, *, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse to write over an input, or over an existing output without ``overwrite``.

    Raises:
        OutputExistsError: with a one-line reason.
    """
    target = Path(path).resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OutputExistsError(
                f"{path}: output would overwrite the input {source}; choose another output"
            )
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists already; pass --overwrite to replace it")
    if target.is_dir() and not Path(path).is_symlink():
        # --overwrite replaces the folder whole: only one that holds nothing but what srgan-med
        # writes into its folders (a derived DICOM series, an evaluation); it deleted a user's file.
        foreign = sorted(
            entry.name
            for entry in target.iterdir()
            if not entry.is_file() or not any(fnmatch.fnmatch(entry.name, p) for p in _OUR_FOLDER_FILES)
        )
        if foreign:
            listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputExistsError(
                f"{path}: a folder holding files srgan-med does not write ({listed}); --overwrite "
                "would delete them: choose another output or remove them first"
            )
        # Names alone let it delete a scanner's own series and a folder of a user's CSV files and
        # pictures: the files must also say srgan-med wrote them.
        not_ours = _not_written_by_us(target)
        if not_ours:
            raise OutputExistsError(
                f"{path}: {not_ours}; --overwrite would delete it: choose another output or remove it first"
            )


def _not_written_by_us(folder: Path) -> str | None:
    """Why the folder's files (already known to bear the names srgan-med writes) are not srgan-med's
    own output, or ``None`` when they are: every .dcm file carries our ContributingEquipment item,
    and the tables and figures lie beside an evaluation's ``summary.json``."""
    import json

    from srgan_med.io.dicom_write import written_by_srgan_med

    names = sorted(entry.name for entry in folder.iterdir())
    dicoms = [name for name in names if fnmatch.fnmatch(name, "*.dcm")]
    stranger = next((name for name in dicoms if not written_by_srgan_med(folder / name)), None)
    if stranger is not None:
        return f"a DICOM series srgan-med did not write ({stranger} names no srgan-med contribution)"
    if len(dicoms) < len(names):  # an evaluation's tables and figures
        try:
            versions = json.loads((folder / "summary.json").read_text())["versions"]
            ours = "srgan-med" in versions
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            return "not an evaluation srgan-med wrote (no summary.json of one)"
    return None


@contextlib.contextmanager
def atomic_output(path: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a temporary sibling path to write to; on success it replaces ``path`` in one rename.

    Works for a file or a folder. On any error (or Ctrl-C) the temporary is removed and ``path``
    is left as it was, so nothing partial is ever visible under the final name.
    """
    path = Path(path)
    check_output(path, overwrite=overwrite, inputs=inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_write_error(path, error) from error
    # Keep the file's suffixes (".nii.gz") on the temporary so writers pick the right format.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{''.join(path.suffixes)}")
    try:
        try:
            yield temporary
            if not temporary.exists():
                raise RuntimeError(f"nothing was written to {temporary}")
            if path.is_dir() and not path.is_symlink():
                # A folder cannot be replaced by rename in one step: move the old one aside first.
                retired = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
                os.replace(path, retired)
                os.replace(temporary, path)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(temporary, path)
        except OSError as error:
            # our own errors (a model not found, say) already say what is wrong, in their own words
            if not isinstance(error, SrganMedError) and _concerns_output(error, path, temporary):
                raise output_write_error(path, error) from error
            raise
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


def remove_output(path: Path) -> None:
    """Take back an output this run has just put in place (a file, or a DICOM series folder)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _concerns_output(error: OSError, path: Path, temporary: Path) -> bool:
    """Whether ``error`` came from writing the output: it names no file, or a file of the output's."""
    error = root_os_error(error)
    names = [Path(str(name)) for name in (error.filename, error.filename2) if name is not None]
    if not names:
        return True  # a write or flush on an open file object (disk full, file too large)
    ours = {path.resolve(), temporary.resolve()}
    return any(name.resolve() in ours or ours & set(name.resolve().parents) for name in names)


def output_write_error(
    path: Path, error: OSError, what: str = "it", outcome: str = "it was left as it was"
) -> OutputWriteError:
    """The one-line user error for an output that could not be written (by default one written
    through :func:`atomic_output`, so nothing partial is left)."""
    written = OutputWriteError(f"{path}: cannot write {what}: {os_error_reason(error)}; {outcome}")
    written.errno = error.errno
    return written


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with its I/O failures raised as the ``OSError`` they are.

    safetensors reports a failed write (disk full, file too large) as its own ``SafetensorError``
    whose message ends in ``(os error N)``; as an ``OSError`` it becomes the one-line output error of
    :func:`atomic_output` instead of an internal error. The file gets the mode the umask gives a new
    file (safetensors makes it 0600).
    """
    import re

    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as error:
        found = re.search(r"os error (\d+)\)", str(error))
        if type(error).__name__ != "SafetensorError" or found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from error
    # safetensors creates its file with mode 0600 whatever the umask: a model or checkpoint other
    # users could not read, beside JSON sidecars and scans that they can. Given the usual mode here.
    with contextlib.suppress(OSError):  # a file system without modes (some FUSE, CIFS mounts)
        os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
