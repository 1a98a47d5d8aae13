"""Exceptions a user can act on.

Every failure that bad input, a missing file or a wrong option can cause is raised as a
:class:`SrganMedError` subclass with a message that names the file and the reason. The CLI prints
such an error as one line on stderr and exits with code 2; anything else is a bug.
"""

from __future__ import annotations


class SrganMedError(Exception):
    """Base class for expected, user-facing failures (printed as one line, exit code 2)."""


class InputError(SrganMedError, ValueError):
    """An input scan or file cannot be used (unreadable, unsupported, inconsistent geometry)."""


class OutputExistsError(SrganMedError, FileExistsError):
    """The output exists and ``--overwrite`` was not given, or it would overwrite an input."""


class OutputWriteError(SrganMedError, OSError):
    """An output could not be written (disk full, file too large, permission denied, read-only disk)."""


class ConfigError(SrganMedError, ValueError):
    """A configuration file or value is invalid; the message names the key's dotted path."""


class WeightsNotFoundError(SrganMedError, FileNotFoundError):
    """Model or VGG weights are not where they were looked for; the message says how to get them."""


class CompileError(SrganMedError, RuntimeError):
    """``torch.compile`` cannot build kernels here (no C/C++ compiler, an unsupported GPU); the same
    run works without compiling."""


class TrainingDivergedError(SrganMedError, RuntimeError):
    """Training produced non-finite losses again and again after restoring the last good state."""


def wrapped_user_error(
    error: BaseException, kind: type[SrganMedError] = SrganMedError
) -> SrganMedError | None:
    """The ``kind`` error that ``error`` wraps, if any.

    MONAI wraps every exception raised inside a transform (or a dataset's transform) in a
    ``RuntimeError``, sometimes twice; the user-facing error underneath should reach the CLI as itself,
    one line, not as an internal error.
    """
    cause = error.__cause__
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__
    return cause


def os_error_reason(error: OSError) -> str:
    """``"<reason> (<ERRNO NAME>)"`` of an operating-system error, e.g. ``File too large (EFBIG)``."""
    import errno

    error = root_os_error(error)
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in errno.errorcode:
        reason = f"{reason} ({errno.errorcode[error.errno]})"
    return reason


def describe_os_error(error: OSError) -> str:
    """``"<file>: <reason> (<ERRNO NAME>)"`` for an operating-system error, one line.

    The file is the one the error names (both, for a failed rename), when it names any.
    """
    root = root_os_error(error)
    names = [str(name) for name in (root.filename, root.filename2) if name is not None]
    reason = os_error_reason(root)
    return f"{' -> '.join(names)}: {reason}" if names else reason


def root_os_error(error: OSError) -> OSError:
    """The operating system's own error under re-raised copies that dropped its errno.

    pydicom re-raises an error met while writing an element as ``type(error)(message + traceback)``,
    a copy with no errno, chained to the original.
    """
    while error.errno is None and isinstance(error.__cause__, OSError):
        error = error.__cause__
    return error


def exception_summary(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line for an error line: cut at a word boundary past ``limit``
    characters and marked " ...", or its type's name when it has no message."""
    import textwrap

    text = " ".join(str(exc).split())
    if len(text) > limit:  # cut at a word boundary, and say so (one long word: cut inside it)
        text = (
            textwrap.shorten(text, limit, placeholder=" ...").removeprefix("...")
            or text[: limit - 4] + " ..."
        )
    return text or type(exc).__name__
