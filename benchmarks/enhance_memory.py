"""Peak memory of ``srgan-med enhance`` on a large CT on CPU (issue #5: "a 512x512x600 CT at x2 on a
24 GiB machine without GPU must finish, not crash").

Runs the real ``enhance_files`` path in-process (load, upscale, consistency, write NIfTI + JSON) on a
synthetic int16 NIfTI of ``--shape`` with a random-init x2 SRResNet (16 blocks, 64 channels). The full
volume is always loaded, upscaled into the full output array and written; ``--slices N`` only limits
how many slices go through the real network (the others are upscaled by nearest neighbour, which
allocates the same arrays), because the network takes seconds per 512x512 slice on a small CPU. The
network's own activation memory is the same for every batch, so the peak covers it once a batch has
run. The time per real slice gives an estimate for the full volume.

The input file is written by a child process, so this process's peak RSS (``ru_maxrss``) is that of
enhance alone (plus Python, torch and the libraries, reported as ``rss_before``).

Usage:
    python benchmarks/enhance_memory.py --out bench_out/ --slices 2           # 512x512x600, x2
    python benchmarks/enhance_memory.py --out bench_out/ --shape 128 128 60   # small and quick
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import (  # noqa: E402
    environment,
    environment_lines,
    markdown_table,
    random_bundle,
    save_report,
    write_synthetic_ct,
)

GIB = 2**30


class LimitedGenerator(nn.Module):
    """``generator`` on the first ``real_slices`` slices it sees, nearest neighbour on the rest.

    Records the seconds spent in the real network (``real_seconds``) and the slices it ran.
    """

    def __init__(self, generator: nn.Module, scale: int, real_slices: int) -> None:
        super().__init__()
        self.generator = generator
        self.scale = scale
        self.remaining = real_slices
        self.real_done = 0
        self.real_seconds = 0.0

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        count = min(self.remaining, low_res.shape[0])
        parts = []
        if count:
            started = time.perf_counter()
            parts.append(self.generator(low_res[:count]))
            self.real_seconds += time.perf_counter() - started
            self.remaining -= count
            self.real_done += count
        if count < low_res.shape[0]:
            parts.append(F.interpolate(low_res[count:], scale_factor=self.scale, mode="nearest"))
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, _rss_bytes())


def _write_input(path: str, shape: tuple[int, int, int]) -> None:
    """The synthetic CT as int16 NIfTI, or as a DICOM series when ``path`` has no suffix."""
    if Path(path).suffix:
        write_synthetic_ct(Path(path), shape)
        return
    import numpy as np
    from enhance_common import synthetic_ct

    from srgan_med.io.dicom_write import write_dicom_series

    write_dicom_series(synthetic_ct(shape), np.diag([0.7, 0.7, 2.5, 1.0]), Path(path), modality="CT")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import srgan_med.models.bundle as bundle_module
    from srgan_med.enhance.run import enhance_files

    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        model = random_bundle(folder / "model.safetensors", args.scale, args.blocks, args.width)
        source = folder / ("ct.nii" if args.input_format == "nifti" else "ct")
        child = multiprocessing.get_context("spawn").Process(target=_write_input, args=(str(source), shape))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"writing the synthetic input failed (exit code {child.exitcode})")

        limited: list[LimitedGenerator] = []
        original_load = bundle_module.load_bundle

        def load_limited(name_or_path, device="cpu"):
            bundle = original_load(name_or_path, device=device)
            real = shape[2] if args.slices is None else args.slices
            bundle.generator = LimitedGenerator(bundle.generator, bundle.scale, real).eval()
            return bundle

        bundle_module.load_bundle = load_limited
        original_prepare = None
        try:
            import srgan_med.enhance.inference as inference

            original_prepare = inference.prepare_for_inference

            def prepare_and_keep(generator, device="cpu", **kwargs):
                prepared = original_prepare(generator, device, **kwargs)
                limited.append(prepared.network)  # the copy that actually runs
                return prepared

            inference.prepare_for_inference = prepare_and_keep
            rss_before = _rss_bytes()
            sampler = RssSampler()
            sampler.start()
            started = time.perf_counter()
            target = folder / ("ct_sr.nii" if args.format == "nifti" else "ct_sr")
            enhance_files(
                [str(source)],
                output=target,
                model=str(model),
                device="cpu",
                batch_size=args.batch_size,
                quiet=True,
            )
            seconds = time.perf_counter() - started
            sampled_peak = sampler.stop()
        finally:
            bundle_module.load_bundle = original_load
            if original_prepare is not None:
                inference.prepare_for_inference = original_prepare
        files = [target] if target.is_file() else sorted(target.iterdir())
        output_file_bytes = sum(path.stat().st_size for path in files)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, sampled_peak)
    runner = limited[0]
    voxels_out = shape[0] * args.scale * shape[1] * args.scale * shape[2]
    output_float32 = voxels_out * 4
    per_slice = runner.real_seconds / max(runner.real_done, 1)
    rows = [
        {
            "figure": "input volume",
            "value": f"{shape[0]}x{shape[1]}x{shape[2]} int16 {args.input_format}",
            "unit": "",
        },
        {
            "figure": "output volume",
            "value": f"{voxels_out / shape[2]:.0f} voxels/slice x{shape[2]}",
            "unit": "",
        },
        {"figure": "slices through the real network", "value": runner.real_done, "unit": "slices"},
        {
            "figure": "loaded input (float32)",
            "value": round(shape[0] * shape[1] * shape[2] * 4 / GIB, 3),
            "unit": "GiB",
        },
        {"figure": "output array (float32)", "value": round(output_float32 / GIB, 3), "unit": "GiB"},
        {
            "figure": "output file (int16 NIfTI)"
            if args.format == "nifti"
            else f"output files ({len(files)} DICOM)",
            "value": round(output_file_bytes / GIB, 3),
            "unit": "GiB",
        },
        {
            "figure": "RSS before enhance (Python, torch, libraries)",
            "value": round(rss_before / GIB, 3),
            "unit": "GiB",
        },
        {"figure": "peak RSS of the process", "value": round(peak / GIB, 3), "unit": "GiB"},
        {"figure": "peak RSS / float32 output", "value": round(peak / output_float32, 2), "unit": "x"},
        {
            "figure": "(peak RSS - RSS before) / float32 output",
            "value": round((peak - rss_before) / output_float32, 2),
            "unit": "x",
        },
        {"figure": "fits in 24 GiB", "value": "yes" if peak < 24 * GIB else "NO", "unit": ""},
        {
            "figure": "wall time (with nearest-neighbour for the other slices)",
            "value": round(seconds, 1),
            "unit": "s",
        },
        {"figure": "network time per real slice", "value": round(per_slice, 2), "unit": "s"},
        {
            "figure": "estimated network time for every slice",
            "value": round(per_slice * shape[2] / 60, 1),
            "unit": "min",
        },
    ]
    return {
        "benchmark": "enhance_memory",
        "environment": env | {"load_average_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": {
            "shape": list(shape),
            "scale": args.scale,
            "model": f"SRResNet x{args.scale}, {args.blocks} blocks, {args.width} channels (random init)",
            "batch_size": args.batch_size,
            "real_slices": runner.real_done,
            "format": args.format,
            "input_format": args.input_format,
        },
        "peak_rss_bytes": peak,
        "rss_before_bytes": rss_before,
        "output_float32_bytes": output_float32,
        "output_file_bytes": output_file_bytes,
        "seconds": seconds,
        "seconds_per_real_slice": per_slice,
        "rows": rows,
    }


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    env, settings = report["environment"], report["settings"]
    lines = [
        "# enhance memory (CPU)",
        "",
        *environment_lines(env),
        f"- model: {settings['model']}; batch size {settings['batch_size']}",
        f"- weights: {env['weights']}",
        f"- load average at start / end: {env['load_average_start']} / {env['load_average_end']}",
        "",
        markdown_table(report["rows"], ["figure", "value", "unit"]),
        "",
    ]
    return save_report(report, out, "enhance_memory", lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for enhance_memory.json / .md")
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 600], metavar=("I", "J", "K"))
    parser.add_argument("--slices", type=int, default=None, help="slices through the real network (all)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="as srgan-med enhance --batch-size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary files")
    parser.add_argument("--format", choices=("nifti", "dicom"), default="nifti", help="output format")
    parser.add_argument("--input-format", choices=("nifti", "dicom"), default="nifti", help="input format")
    args = parser.parse_args(argv)
    if min(args.shape) < 2 or (args.slices is not None and args.slices < 0):
        parser.error("--shape needs sizes >= 2 and --slices >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
