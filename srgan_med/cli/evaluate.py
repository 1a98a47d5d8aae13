"""``srgan-med evaluate``: compare super-resolution methods against bicubic on LR/HR pairs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from srgan_med.cli._common import ClipOption, ModalityOption, handle_errors


def _command_line(
    high_res: list[str],
    low_res: list[str],
    out: Path,
    methods: str,
    mask: str,
    scale: int,
    degradation: str | None,
    seed: int,
    models: list[str] | None = None,
    modality: str | None = None,
    clip: bool = True,
) -> str:
    """The exact command that reproduces this evaluation (recorded in report.md)."""
    words = ["srgan-med", "evaluate", *high_res]
    for path in low_res:
        words += ["--low-res", path]
    if not low_res:
        words += ["--scale", str(scale), "--seed", str(seed)] + (
            ["--degradation", degradation] if degradation else []
        )
    for name in models or []:
        words += ["--model", name]
    words += ["--out", str(out), "--methods", methods, "--mask", mask]
    if modality:
        words += ["--modality", modality]
    if not clip:
        words.append("--no-clip")
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
    scale: Annotated[
        int, typer.Option("--scale", min=2, help="In-plane factor of the simulated low-res scans.")
    ] = 4,
    degradation: Annotated[
        str | None,
        typer.Option("--degradation", help="Degradation preset (ct, mr) or YAML file; default by modality."),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            min=0,
            max=2**32 - 1,
            help="Seed of the simulated degradations, mixed with each scan's voxels and grid: a scan "
            "gets the same draws wherever it stands in the list (report.md lists them).",
        ),
    ] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for tables and figures.")] = Path(
        "evaluation"
    ),
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model to evaluate: a shipped name, a .safetensors file, or auto (the shipped model of "
            "each volume's modality and scale); repeatable.",
        ),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated: nearest,linear,bicubic,bspline,lanczos, and models as --model takes them.",
        ),
    ] = "nearest,linear,bicubic,bspline,lanczos",
    mask: Annotated[
        str,
        typer.Option("--mask", help="auto (body/head mask), none, or a mask scan on the reference's grid."),
    ] = "auto",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing output folder (only if it holds nothing but an evaluation's files).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    modality: ModalityOption = None,
    clip: ClipOption = True,
) -> None:
    """Score each method against the high-resolution scans: PSNR, SSIM, NRMSE, HFEN, GMSD, MAE,
    with bootstrap CIs and Wilcoxon tests of the gain over bicubic; writes CSV, JSON, Markdown and PNGs.

    Without --low-res, the low-resolution inputs are simulated from the references with the
    degradation model (the same transforms as training).
    """
    from srgan_med.evaluate.run import run_evaluation
    from srgan_med.examples import resolve_input

    written = run_evaluation(
        [resolve_input(p) for p in high_res],
        [resolve_input(p) for p in low_res] if low_res else None,
        out,
        scale=scale,
        degradation=degradation,
        seed=seed,
        methods=methods.split(","),
        models=model or [],
        mask=mask,
        modality=modality,
        overwrite=overwrite,
        clip=clip,
        command=_command_line(
            high_res, low_res or [], out, methods, mask, scale, degradation, seed, model, modality, clip
        ),
        show_progress=not quiet,
    )
    if not quiet:
        print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written))
