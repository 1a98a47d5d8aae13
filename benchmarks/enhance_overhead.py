"""What ``srgan-med enhance`` costs besides the network (issue #7's "< 3 s end to end on the GPU").

On a GPU the x4 network upscales a 128x128x300 CT in about 0.16 s (bf16), so the rest of the
command -- reading the input, copying each batch to and from the device, placing the slices into the
output volume, the consistency error, converting to the input's dtype and writing the file -- decides
the end-to-end time. This script times those stages with a network of (almost) no cost, bilinear
upscaling on the device, through the real ``load_scan`` -> ``enhance_volume`` -> ``save_scan`` path,
so the host-side work can be measured (and improved) on any machine. Bilinear, not nearest
neighbour: its output varies from voxel to voxel like a network's, so a ``.nii.gz`` compresses about
as a real output does (blocks of equal voxels compress several times faster).

Stages (median of ``--repeats`` runs, in one process, after one warm-up run):

- ``load``: ``load_scan`` of the int16 NIfTI;
- ``engine``: ``enhance_volume`` with the bilinear "network", and ``upscaler`` the part of
  it spent inside that network (synchronised on CUDA), so ``engine - upscaler`` is the engine's own
  host/device traffic and bookkeeping;
  With ``--clip input`` (the default) the output is clamped as ``enhance`` clamps it
  (:func:`srgan_med.enhance.run.clamp_range`; bilinear never overshoots, so on the CPU only the
  min/max pass runs); ``--clip forced`` raises the floor 1 HU above the input's minimum so that every
  batch is also counted and clamped (the cost where a network overshoots in every batch);
  ``--clip none`` does not clamp;
- ``save``: ``save_scan`` to ``.nii`` (dtype check, rounding to int16, NIfTI write); with
  ``--format nifti-gz`` from ``.nii.gz`` to ``.nii.gz``, with ``--format dicom`` from a DICOM series
  to a DICOM series (one file per slice).

Usage:
    python benchmarks/enhance_overhead.py --out bench_out/                 # 128x128x300, x4, CPU
    python benchmarks/enhance_overhead.py --out bench_out/ --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import (  # noqa: E402
    device_label,
    environment,
    environment_lines,
    markdown_table,
    save_report,
    synthetic_ct,
    write_synthetic_ct,
)

STAGES = ("load", "engine", "upscaler", "engine_own", "save", "total")


class BilinearUpscaler:
    """Bilinear x``scale`` on the input's device: a stand-in network of negligible cost.

    Accumulates the seconds spent inside it (synchronised on CUDA) in ``seconds``.
    """

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.seconds = 0.0

    def __call__(self, low_res: torch.Tensor) -> torch.Tensor:
        cuda = low_res.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        high_res = F.interpolate(low_res, scale_factor=self.scale, mode="bilinear", align_corners=False)
        if cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - started
        return high_res


def one_run(
    source: Path, target: Path, scale: int, device: torch.device, batch_size: int, clip: str = "input"
) -> dict[str, float]:
    """The three stages once; returns seconds per stage."""
    from srgan_med.degrade.config import NormaliseConfig
    from srgan_med.enhance.engine import enhance_volume
    from srgan_med.enhance.run import clamp_range, engine_settings
    from srgan_med.io import load_scan, save_scan
    from srgan_med.models.bundle import intensity_maps

    upscaler = BilinearUpscaler(scale)
    if target.is_dir():
        shutil.rmtree(target)
    target.unlink(missing_ok=True)
    started = time.perf_counter()
    scan = load_scan(source)
    loaded = time.perf_counter()
    # The intensity maps `srgan-med enhance` uses for a CT model (window -1000..2000 HU).
    normalise, denormalise = intensity_maps(scan[0], NormaliseConfig("window", (-1000.0, 2000.0)))
    value_range = None if clip == "none" else clamp_range(scan)
    if clip == "forced":
        value_range = (value_range[0] + 1.0, value_range[1])
    result = enhance_volume(
        scan,
        upscaler,
        scale,
        normalise=normalise,
        denormalise=denormalise,
        slice_axis=2,
        device=device,
        batch_size=batch_size,
        halo=0,
        value_range=value_range,
        **engine_settings(device),
    )
    upscaled = time.perf_counter()
    save_scan(result.image, target, reference=scan, inputs=[source])
    saved = time.perf_counter()
    return {
        "load": loaded - started,
        "engine": upscaled - loaded,
        "upscaler": upscaler.seconds,
        "engine_own": upscaled - loaded - upscaler.seconds,
        "save": saved - upscaled,
        "total": saved - started,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for enhance_overhead.json/.md")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 300], help="input voxels (I J K)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: enhance's for the device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--format", choices=("nifti", "nifti-gz", "dicom"), default="nifti", help="input and output format"
    )
    parser.add_argument(
        "--clip",
        choices=("input", "forced", "none"),
        default="input",
        help="clamp as enhance does (input), count and clamp every batch (forced), or not (none)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    from srgan_med.enhance.run import CPU_BATCH, CUDA_BATCH

    device = torch.device(args.device)
    batch_size = args.batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)
    env = environment()
    runs = []
    with tempfile.TemporaryDirectory(prefix="srgan_med_overhead_") as work:
        if args.format in ("nifti", "nifti-gz"):
            suffix = ".nii" if args.format == "nifti" else ".nii.gz"
            source = write_synthetic_ct(Path(work) / f"ct{suffix}", tuple(args.shape))
            target = Path(work) / f"ct_sr{suffix}"
        else:  # a DICOM series in, a DICOM series out, as enhance does by default
            from srgan_med.io.dicom_write import write_dicom_series

            source, target = Path(work) / "ct", Path(work) / "ct_sr"
            write_dicom_series(
                synthetic_ct(tuple(args.shape)), np.diag([0.7, 0.7, 2.5, 1.0]), source, modality="CT"
            )
        settings = (source, target, args.scale, device, batch_size, args.clip)
        one_run(*settings)  # warm-up: page cache, allocator, kernels
        for _ in range(args.repeats):
            runs.append(one_run(*settings))
        written_bytes = sum(p.stat().st_size for p in ([target] if target.is_file() else target.iterdir()))
    medians = {stage: round(statistics.median(run[stage] for run in runs), 4) for stage in STAGES}
    report = {
        "benchmark": "enhance_overhead",
        "environment": env,
        "device": device_label(device, env),
        "shape": args.shape,
        "scale": args.scale,
        "batch_size": batch_size,
        "written_bytes": written_bytes,
        "format": args.format,
        "clip": args.clip,
        "runs": runs,
        "median_seconds": medians,
    }
    write_report(report, args.out)
    return report


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/enhance_overhead.json`` and ``.md`` (also used by ``render_reports.py``)."""
    shape, scale = report["shape"], report["scale"]
    output_shape = [shape[0] * scale, shape[1] * scale, shape[2]]
    rows = [{"stage": stage, "seconds (median)": report["median_seconds"][stage]} for stage in STAGES]
    lines = [
        "# enhance overhead (everything but the network)",
        "",
        *environment_lines(report["environment"]),
        f"- device: {report['device']}; batch {report['batch_size']}; output clamping: "
        f"{report.get('clip', 'none (before clamping existed)')}",
        f"- volume: {shape} int16 {report.get('format', 'nifti')} (synthetic CT) -> {output_shape} int16 "
        f"{report.get('format', 'nifti')} "
        f"({report['written_bytes'] / 2**20:.1f} MiB); network: bilinear x{scale} "
        "(a stand-in of ~no cost)",
        f"- median of {len(report['runs'])} runs after one warm-up",
        "",
        markdown_table(rows, ["stage", "seconds (median)"]),
        "",
    ]
    return save_report(report, out, "enhance_overhead", lines)


if __name__ == "__main__":
    main()
