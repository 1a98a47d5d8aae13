"""``srgan-med enhance`` and ``srgan-med models``."""

from __future__ import annotations

from typing import Annotated

import typer

from srgan_med.cli._common import ClipOption, ModalityOption, OverwriteOption, handle_errors


@handle_errors
def enhance(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="NIfTI files, DICOM files, DICOM series folders, example:NAME; a folder of NIfTI files or "
            "of series subfolders stands for each of them."
        ),
    ],
    output: Annotated[
        str | None,  # not a Path: "out/" (the folder outputs go into) must keep its slash
        typer.Option(
            "--output",
            "-o",
            help="Output NIfTI file or DICOM series folder; for several inputs, a name ending in /, or a "
            "NIfTI output and an existing folder, the folder the outputs go into. Default: beside the input, "
            "scan.nii.gz -> scan_sr.nii.gz, scan.nii -> scan_sr.nii, DICOM -> <name>_sr/.",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="auto (the shipped model for the scan's modality and --scale: ct-x2, ct-x4, mr-x2, "
            "mr-x4), a shipped model name (srgan-med models), or a path to a .safetensors model.",
        ),
    ] = "auto",
    scale: Annotated[
        int | None,
        typer.Option("--scale", min=2, help="Expected upscaling factor (checked against the model)."),
    ] = None,
    plane: Annotated[str, typer.Option("--plane", help="auto, axial, coronal or sagittal.")] = "auto",
    through_plane: Annotated[
        bool,
        typer.Option(
            "--through-plane",
            help="Refine the slice axis instead (thick slices): 2-D model on the "
            "two orthogonal planes, fused.",
        ),
    ] = False,
    slice_spacing: Annotated[
        float | None,
        typer.Option(
            "--slice-spacing",
            help="With --through-plane: the output's slice spacing in mm (default: the input's divided by "
            "the scale); the model's output is resampled linearly along the slice axis to it.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Slices per forward pass (default: 8 on CPU, 32 on CUDA); lowered where large slices would "
            "need too much memory (the report gives the batch used).",
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="auto, fp32, tf32, bf16 or mixed (auto: bf16 on CUDA; mixed on a CPU with native "
            "bf16, else fp32; each within 0.01 dB PSNR of fp32, see docs/benchmarks.md).",
        ),
    ] = "auto",
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the model through torch.compile: compiling takes seconds to minutes once, then "
            "each pass is faster (x4 on an H100: about 2x); for many or large scans. Needs a C/C++ "
            "compiler.",
        ),
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="nifti or dicom (default: the input's).")
    ] = None,
    series: Annotated[
        str | None,
        typer.Option(
            "--series",
            help="SeriesInstanceUID (or a start of it), when the input folder holds several (one input).",
        ),
    ] = None,
    modality: ModalityOption = None,
    clip: ClipOption = True,
    overwrite: OverwriteOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary lines.")] = False,
) -> None:
    """Upscale scans slice by slice with a super-resolution model; writes the input's format with
    the right affine, spacing and units, and a JSON report beside each output."""
    from srgan_med.enhance.run import enhance_files

    enhance_files(
        inputs,
        output=output,
        model=model,
        scale=scale,
        plane=plane,
        through_plane=through_plane,
        slice_spacing=slice_spacing,
        device=device,
        batch_size=batch_size,
        precision=precision,
        compile_model=compile_model,
        fmt=fmt,
        series=series,
        modality=modality,
        clip=clip,
        overwrite=overwrite,
        quiet=quiet,
    )


@handle_errors
def models(
    name: Annotated[
        str | None,
        typer.Argument(help="A model (shipped name or .safetensors file): print its whole card."),
    ] = None,
) -> None:
    """List the models shipped in the package with their scale, modality and card summary; with a
    NAME, print that model's card (data, degradation, losses, steps, measurements, known limits)."""
    import json

    from srgan_med.models.bundle import read_metadata, resolve_model, shipped_models

    if name is not None:
        path = resolve_model(name)
        card = path.with_suffix(".md")  # the shipped cards sit beside their weights
        if name in shipped_models() and card.is_file():
            print(card.read_text(), end="")
        else:  # a trained model: the card its file carries
            print(json.dumps(read_metadata(path).get("card", {}), indent=2))
        return
    shipped = shipped_models()
    if not shipped:
        print(
            "no pretrained models are shipped in this version; "
            "pass --model PATH to a trained .safetensors file"
        )
        return
    for name, path in shipped.items():
        metadata = read_metadata(path)
        summary = metadata.get("card", {}).get("summary", "")
        print(f"{name}\tx{metadata['scale']}\t{metadata['modality']}\t{summary}")
