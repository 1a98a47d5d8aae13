"""Shared CLI plumbing: one-line errors, exit codes, version."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from srgan_med.errors import SrganMedError, describe_os_error

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the ``typer.Exit`` to raise."""
    print(f"error: {_one_line(message)}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn expected errors into one stderr line + exit 2, and anything else into one line + exit 1.

    Operating-system errors (disk full, permission denied) are expected too: one line naming the
    file and the reason, exit 2.

    Set ``SRGAN_MED_DEBUG=1`` to let unexpected exceptions propagate with their traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        configure_logging()
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except SrganMedError as error:
            raise fail(str(error)) from None
        except OSError as error:
            # The machine, not the program: a full disk, a missing permission, a vanished file.
            raise fail(describe_os_error(error)) from None
        except KeyboardInterrupt as interrupt:
            done = f" ({interrupt})" if str(interrupt) else ""  # e.g. the outputs completed before it
            raise fail(f"interrupted; nothing partial was written{done}", 130) from None
        except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
            if os.environ.get("SRGAN_MED_DEBUG"):
                raise
            raise fail(
                f"internal error ({type(error).__name__}: {error}); please report it "
                "(SRGAN_MED_DEBUG=1 shows the traceback)",
                EXIT_INTERNAL_ERROR,
            ) from None

    return wrapper  # type: ignore[return-value]


class _StderrHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` (which test runners swap per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {_one_line(record.getMessage())}", file=sys.stderr)


def configure_logging(level: int = logging.INFO) -> None:
    """Send srgan-med's log records to stderr as ``warning: ...`` / ``info: ...`` lines (once)."""
    logger = logging.getLogger("srgan_med")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(level)


def version_callback(value: bool) -> None:
    if value:
        from srgan_med import __version__

        print(f"srgan-med {__version__}")
        raise typer.Exit()


ClipOption = Annotated[
    bool,
    typer.Option(
        "--clip/--no-clip",
        help="Clamp the upscaled values at the input's minimum (overshoot such as MR values below 0 or CT "
        "below the air floor is not detail) and at its stored type's maximum (255 for uint8); "
        "--no-clip keeps them as computed.",
    ),
]

OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace existing outputs (a folder only if it holds nothing but what srgan-med writes).",
    ),
]

# NIfTI has no modality tag: ``load_scan`` guesses it from the values, which a crop without air
# (a CT of the head or of one organ) gets wrong. Every command that reads scans takes this override.
ModalityOption = Annotated[
    str | None,
    typer.Option(
        "--modality",
        help="CT or MR, for NIfTI input (no modality tag; default: guessed, CT when 0.1% of the voxels "
        "are at or below -500).",
    ),
]
