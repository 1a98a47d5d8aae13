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
from srgan_med.cli._common import version_callback

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
    """Console-script entry point."""
    app(prog_name="srgan-med")
