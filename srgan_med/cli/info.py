"""``srgan-med info`` and ``srgan-med examples``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from srgan_med.cli._common import ModalityOption, handle_errors


def _real_world_values(scan) -> list[dict[str, Any]]:
    """The DICOM real-world value mappings the scan carries (``meta["real_world_mappings"]``), each as
    its label, units and map of the loaded values: real = slope * value + intercept."""
    from pydicom.dataset import Dataset

    described = []
    for mapping in scan.meta.get("real_world_mappings") or []:
        item = Dataset.from_json(mapping["item"])
        units = item.get("MeasurementUnitsCodeSequence") or []
        described.append(
            {
                "label": str(item.get("LUTLabel", "") or ""),
                "units": str(units[0].get("CodeValue", "")) if units else "",
                "slope": float(mapping["slope"]),
                "intercept": float(mapping["intercept"]),
            }
        )
    return described


def describe_scan(scan) -> dict[str, Any]:
    """The facts ``info`` reports, as plain JSON-ready values."""
    from srgan_med.io import orientation_code, spacing_from_affine

    affine = scan.affine.numpy()
    values = scan[0]
    return {
        "path": str(scan.meta.get("filename_or_obj", "")),
        "format": scan.meta.get("source_format"),
        "modality": scan.meta.get("modality"),
        "modality_guessed": bool(scan.meta.get("modality_guessed", False)),
        "units": scan.meta.get("units", ""),
        "shape": [int(v) for v in values.shape],
        "spacing": [round(v, 6) for v in spacing_from_affine(affine)],
        "orientation": orientation_code(affine),
        "dtype": scan.meta.get("original_dtype"),
        "min": float(values.min()),
        "max": float(values.max()),
        "affine": [[round(float(v), 6) for v in row] for row in affine],
        "real_world_values": _real_world_values(scan),  # DICOM: ADC, blood flow... (empty: none)
    }


@handle_errors
def info(
    path: Annotated[
        str, typer.Argument(help="NIfTI file, DICOM file, DICOM series folder, or example:NAME.")
    ],
    series: Annotated[
        str | None,
        typer.Option("--series", help="SeriesInstanceUID (or a start of it), when a folder holds several."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    modality: ModalityOption = None,
) -> None:
    """Show modality, shape, voxel spacing (mm), orientation, value range and affine of a scan."""
    from srgan_med.examples import resolve_input
    from srgan_med.io import load_scan

    facts = describe_scan(load_scan(resolve_input(path), series=series, modality=modality))
    if as_json:
        print(json.dumps(facts))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    unit = f" {facts['units']}" if facts["units"] else ""
    guessed = " (guessed from values)" if facts["modality_guessed"] else ""
    rows = [
        ("path", facts["path"]),
        ("format", facts["format"]),
        ("modality", f"{facts['modality']}{guessed}"),
        ("shape", " x ".join(map(str, facts["shape"]))),
        ("spacing (mm)", " x ".join(f"{v:g}" for v in facts["spacing"])),
        ("orientation", facts["orientation"]),
        ("dtype", facts["dtype"]),
        ("value range", f"{facts['min']:g} .. {facts['max']:g}{unit}"),
        ("affine (RAS+ mm)", "\n".join("  ".join(f"{v:10.4f}" for v in row) for row in facts["affine"])),
    ]
    for mapping in facts["real_world_values"]:
        name = " ".join(
            part for part in (mapping["label"], f"({mapping['units']})" if mapping["units"] else "") if part
        )
        rows.append(
            (
                "real-world values",
                f"{name or 'real'} = {mapping['slope']:g} x value + {mapping['intercept']:g}",
            )
        )
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", str(value))
    Console().print(table)


@handle_errors
def examples() -> None:
    """List the example scans installed with the dependencies (use them as example:NAME)."""
    from srgan_med.errors import InputError
    from srgan_med.examples import EXAMPLES, example_path

    for name, (_, _, text) in EXAMPLES.items():
        try:
            where = str(example_path(name))
        except InputError as error:
            where = f"(not installed: {error})"
        print(f"example:{name}\t{text}\t{where}")
