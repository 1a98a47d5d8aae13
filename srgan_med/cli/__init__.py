"""The ``srgan-med`` command line (Typer).

Each command lives in its own module and imports torch / MONAI / pydicom inside the command body,
so ``srgan-med --help`` answers without loading them.
"""

from __future__ import annotations

import typer

from srgan_med.cli import degrade as _degrade
from srgan_med.cli import enhance as _enhance
from srgan_med.cli import evaluate as _evaluate
from srgan_med.cli import info as _info
from srgan_med.cli import train as _train
from srgan_med.cli._common import fail, version_callback

app = typer.Typer(
    name="srgan-med",
    help="Super-resolution of medical scans (CT, MR): enhance, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Super-resolution of medical scans (CT, MR) with SRResNet / SRGAN."""


app.command("train")(_train.train)
app.command("enhance")(_enhance.enhance)
app.command("models")(_enhance.models)
app.command("info")(_info.info)
app.command("examples")(_info.examples)
app.command("evaluate")(_evaluate.evaluate)
app.command("degrade")(_degrade.degrade)


def main() -> None:
    """Console-script entry point.

    Runs the app outside Typer's standalone mode, so that a usage error (an unknown option, a value
    out of range, a missing argument) is one ``error: ...`` line on stderr with exit code 2, like
    every other error of the command line, instead of a framed block of several lines.
    """
    import os
    import signal
    import sys

    signals: list[int] = []  # those received, in order: the first decides the exit code

    def _stop(signum, frame) -> None:
        # SIGTERM (kill, a scheduler's time limit) takes the path of Ctrl-C: the temporary and
        # scratch files of the work are removed and it is said; it left a hidden output-sized
        # scratch file and no message. Exit 143 (128 + SIGTERM), not Ctrl-C's 130. The first signal
        # stops the work; a second is ignored, as raised inside that clean-up it left a partial
        # output; a third ends the process at once, should the clean-up hang.
        signals.append(signum)
        if len(signals) == 1:
            raise KeyboardInterrupt
        if len(signals) >= 3:
            os._exit(128 + signum)

    for number in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(number) is not signal.SIG_IGN:  # a background job's ignored Ctrl-C stays so
            signal.signal(number, _stop)
    try:
        try:
            code = app(prog_name="srgan-med", standalone_mode=False)
        except typer.Abort:  # end of input at a prompt
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:  # outside a command's own handling (start-up, Typer's parsing)
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        except Exception as error:
            # Typer's usage errors are its vendored click's ``ClickException``s, not public names:
            # recognised by their interface.
            if not (hasattr(error, "format_message") and isinstance(getattr(error, "exit_code", None), int)):
                raise
            context = getattr(error, "ctx", None)
            if type(error).__name__ == "NoArgsIsHelpError":  # a bare ``srgan-med``: its help
                # Typer's rich help is printed while the error is made; plain click's is the message.
                if error.format_message().strip():
                    print(error.format_message())
                sys.exit(error.exit_code)
            hint = f"; see '{context.command_path} --help'" if context is not None else ""
            fail(f"{error.format_message().rstrip('.')}{hint}")
            sys.exit(error.exit_code)
        sys.exit(code if isinstance(code, int) else 0)
    except SystemExit as leaving:
        if signals and signals[0] == signal.SIGTERM and leaving.code == 130:
            sys.exit(128 + signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The work is done and said (or stopped and said): a Ctrl-C now would only print tracebacks
        # from the interpreter's shutdown (atexit callbacks of torch and others), so it is ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
