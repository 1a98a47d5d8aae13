"""``srgan-med evaluate``: compare super-resolution methods against bicubic on LR/HR pairs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from srgan_med.cli._common import handle_errors


def _command_line(high_res: list[str], low_res: list[str], out: Path, methods: str, mask: str) -> str:
    """The exact command that reproduces this evaluation (recorded in report.md)."""
    words = ["srgan-med", "evaluate", *high_res]
    for path in low_res:
        words += ["--low-res", path]
    words += ["--out", str(out), "--methods", methods, "--mask", mask]
    return shlex.join(words)


@handle_errors
def evaluate(
    high_res: Annotated[
        list[str], typer.Argument(help="High-resolution reference scans (NIfTI, DICOM, example:NAME).")
    ],
    low_res: Annotated[
        list[str] | None,
        typer.Option("--low-res", help="Registered low-resolution scans, one per reference (paired mode)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for tables and figures.")] = Path(
        "evaluation"
    ),
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated: nearest,linear,bicubic,bspline,lanczos.")
    ] = "nearest,linear,bicubic,bspline,lanczos",
    mask: Annotated[
        str, typer.Option("--mask", help="auto (body/head mask), none, or a mask scan path.")
    ] = "auto",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score each method against the high-resolution scans: PSNR, SSIM, NRMSE, HFEN, GMSD, MAE,
    with bootstrap CIs and Wilcoxon tests of the gain over bicubic; writes CSV, JSON, Markdown and PNGs.

    Synthesising the low-resolution input from the reference (the degradation model) is not available
    yet: pass registered pairs with --low-res.
    """
    from srgan_med.errors import InputError
    from srgan_med.evaluate.run import run_evaluation
    from srgan_med.examples import resolve_input

    if not low_res:
        raise InputError(
            "pass the registered low-resolution scans with --low-res (synthesis is not available yet)"
        )
    written = run_evaluation(
        [resolve_input(p) for p in high_res],
        [resolve_input(p) for p in low_res],
        out,
        methods=methods.split(","),
        mask=mask,
        overwrite=overwrite,
        command=_command_line(high_res, low_res, out, methods, mask),
        show_progress=not quiet,
    )
    if not quiet:
        print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written))
