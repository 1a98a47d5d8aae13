"""Speed of ``srgan-med enhance`` against a naive baseline, in one process (issue #7).

Times, on a synthetic int16 CT NIfTI (default 128x128x300) and a random-init x4 SRResNet (16 blocks,
64 channels; speed does not depend on weight values):

- the naive baseline: the same generator, fp32, eager, one slice per forward pass, ``torch.no_grad``;
- the engine exactly as ``srgan-med enhance`` runs it (``prepare_for_inference`` + ``enhance_volume``
  with ``engine_settings``), checked to give the same voxels as the baseline;
- the same engine with the output convolution computed another way (``output_conv="shift-sum"``), in the
  same alternating rounds;
- ``enhance_files`` end to end (load, upscale, write NIfTI and its JSON report);
- bf16 autocast on CPU (not used by enhance), to show its error in HU;
- on CUDA only (``--skip-cpu`` leaves out the CPU rows): the naive baseline on the GPU; the engine
  in strict fp32, TF32 and bf16 + channels_last (its output convolution as a convolution), each
  checked against the GPU baseline's voxels; the engine as ``srgan-med enhance`` runs it (and, with
  ``--compile``, as ``enhance --compile`` runs it); ``srgan-med enhance`` end to end in this
  process (twice; with ``--compile`` also twice compiled) and as a fresh command.
  ``--gpu-rows-on-cpu`` runs that code on the CPU where there is no CUDA: a smoke run that the suite
  makes, not a figure.

Baseline and engine alternate for ``--repeats`` rounds, so a machine shared with other jobs slows
both alike; the ratio is the median of the per-round wall-time ratios, and the ratio of process CPU
time (less sensitive to other jobs' load) is reported beside it.

Usage:
    python benchmarks/enhance_speed.py --out bench_out/                 # full size
    python benchmarks/enhance_speed.py --slices 16 --repeats 3 --out bench_out/   # quick
    python benchmarks/enhance_speed.py --skip-cpu --out bench_out/      # GPU session: GPU rows only
    python benchmarks/enhance_speed.py --slices 5 --size 24 --blocks 1 --width 8 --scale 2 --skip-cpu \
        --gpu-rows-on-cpu --compile --cuda-batch-size 2 --out /tmp/b   # the GPU rows' code on the CPU (smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import (  # noqa: E402
    environment,
    environment_lines,
    markdown_table,
    random_bundle,
    save_report,
    write_synthetic_ct,
)


def flops_per_slice(generator: torch.nn.Module, height: int, width: int) -> int:
    """Floating-point operations of one forward pass on one ``height x width`` slice."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator(torch.zeros(1, 1, height, width))
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive_upscale(volume: np.ndarray, generator, scale: int, normalise, denormalise, device) -> np.ndarray:
    """The baseline: ``(H, W, N)`` physical units -> ``(H * s, W * s, N)``, one slice per pass."""
    height, width, count = volume.shape
    output = np.empty((height * scale, width * scale, count), dtype=np.float32)
    with torch.no_grad():
        for k in range(count):
            low_res = torch.from_numpy(normalise(volume[:, :, k]).astype(np.float32))[None, None]
            output[:, :, k] = denormalise(generator(low_res.to(device))[0, 0].cpu().numpy())
    return output


def _timed(function: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, value


def _row(figure, seconds, count, flops, device_name, ratio=None, **extra) -> dict[str, Any]:
    row = {
        "figure": figure,
        "seconds": round(seconds, 3),
        "slices_per_s": round(count / seconds, 3),
        "gflop_per_s": round(flops * count / seconds / 1e9, 1),
        "ratio_vs_baseline": None if ratio is None else round(ratio, 2),
        "device": device_name,
    }
    row.update(extra)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    from srgan_med.enhance.engine import enhance_volume
    from srgan_med.enhance.inference import prepare_for_inference
    from srgan_med.enhance.run import engine_settings, enhance_files
    from srgan_med.enhance.tiling import receptive_field_radius
    from srgan_med.io import load_scan
    from srgan_med.models.bundle import load_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    cpu = torch.device("cpu")
    other = "shift-sum"  # the engine's output convolution: "conv" by default
    rows: list[dict[str, Any]] = []
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shape = (args.size, args.size, args.slices)
        model = random_bundle(folder / "model.safetensors", args.scale, args.blocks, args.width)
        source = write_synthetic_ct(folder / "ct.nii", shape)
        bundle = load_bundle(str(model), device="cpu")
        scan = load_scan(source)
        normalise, denormalise = bundle.intensity_maps(scan[0])
        volume = scan[0].numpy()  # (H, W, N): the slice axis of this synthetic scan is the last
        flops = flops_per_slice(bundle.generator, args.size, args.size)
        halo = receptive_field_radius(bundle.generator)

        def engine(device, generator=None, volume_scan=scan, batch_size=args.batch_size):
            generator = generator or prepare_for_inference(bundle.generator, device)
            return enhance_volume(
                volume_scan,
                generator,
                bundle.scale,
                normalise=normalise,
                denormalise=denormalise,
                slice_axis=2,
                device=device,
                batch_size=batch_size,
                halo=halo,
                **engine_settings(device),
            )

        if not args.skip_cpu:
            warm = scan[..., :2]  # first primitives / allocations are not what is measured
            naive_upscale(volume[:, :, :1], bundle.generator, bundle.scale, normalise, denormalise, cpu)
            engine(cpu, volume_scan=warm)
            for _ in range(args.repeats):
                naive_s, naive_cpu, naive_out = _timed(
                    lambda: naive_upscale(
                        volume, bundle.generator, bundle.scale, normalise, denormalise, cpu
                    ),
                    cpu,
                )
                engine_s, engine_cpu, result = _timed(lambda: engine(cpu), cpu)
                # The output convolution computed the other way, in the same rounds.
                other_s, _, other_result = _timed(
                    lambda: engine(cpu, _prepare(bundle, cpu, output_conv=other)), cpu
                )
                rounds.append(
                    {
                        "naive_s": round(naive_s, 3),
                        "engine_s": round(engine_s, 3),
                        "naive_cpu_s": round(naive_cpu, 3),
                        "engine_cpu_s": round(engine_cpu, 3),
                        "ratio": round(naive_s / engine_s, 3),
                        f"engine_{other}_s": round(other_s, 3),
                    }
                )
            max_diff_hu = float(np.abs(result.image[0].numpy() - naive_out).max())
            cpu_name = f"CPU: {env['cpu']} ({env['torch_threads']} threads)"
            naive_med = statistics.median(r["naive_s"] for r in rounds)
            engine_med = statistics.median(r["engine_s"] for r in rounds)
            ratio_med = statistics.median(r["ratio"] for r in rounds)
            rows.append(
                _row("naive baseline: fp32 eager, 1 slice/pass", naive_med, args.slices, flops, cpu_name)
            )
            rows.append(
                _row(
                    "enhance engine (CPU path of srgan-med enhance)",
                    engine_med,
                    args.slices,
                    flops,
                    cpu_name,
                    ratio_med,
                    precision=_prepare(bundle, cpu).precision,
                    max_abs_diff_vs_baseline_hu=round(max_diff_hu, 4),
                    cpu_time_ratio_vs_baseline=round(
                        statistics.median(r["naive_cpu_s"] / r["engine_cpu_s"] for r in rounds), 2
                    ),
                )
            )
            other_med = statistics.median(r[f"engine_{other}_s"] for r in rounds)
            rows.append(
                _row(
                    f"enhance engine, output convolution as {other!r} (default 'conv')",
                    other_med,
                    args.slices,
                    flops,
                    cpu_name,
                    naive_med / other_med,
                    time_vs_default_engine=round(other_med / engine_med, 3),
                    max_abs_diff_vs_baseline_hu=round(
                        float(np.abs(other_result.image[0].numpy() - naive_out).max()), 4
                    ),
                )
            )
            # The exact rewrites alone (batch norm folded, output conv moved, layout), strict fp32.
            strict_s, _, strict = _timed(lambda: engine(cpu, _prepare(bundle, cpu, precision="fp32")), cpu)
            rows.append(
                _row(
                    "enhance engine, strict fp32 (--precision fp32)",
                    strict_s,
                    args.slices,
                    flops,
                    cpu_name,
                    naive_med / strict_s,
                    precision="fp32",
                    max_abs_diff_vs_baseline_hu=round(
                        float(np.abs(strict.image[0].numpy() - naive_out).max()), 4
                    ),
                )
            )

            started = time.perf_counter()
            enhance_files(
                [str(source)],
                output=folder / "ct_sr.nii",
                model=str(model),
                device="cpu",
                batch_size=args.batch_size,
                quiet=True,
            )
            end_to_end = time.perf_counter() - started
            rows.append(
                _row(
                    "srgan-med enhance end to end (load, upscale, write)",
                    end_to_end,
                    args.slices,
                    flops,
                    cpu_name,
                )
            )

            rows.append(_bf16_cpu_row(args, scan, bundle, engine, flops, cpu_name, naive_out, naive_med))
        if torch.cuda.is_available() or args.gpu_rows_on_cpu:
            gpu = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            rows.extend(_cuda_rows(args, scan, bundle, engine, flops, gpu))
            rows.extend(_cuda_end_to_end_rows(args, source, model, flops, folder, gpu))
    return {
        "benchmark": "enhance_speed",
        "environment": env | {"load_average_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": {
            "volume": list(shape),
            "dtype": "int16 NIfTI (synthetic CT)",
            "model": f"SRResNet x{args.scale}, {args.blocks} blocks, {args.width} channels (random init)",
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "halo": halo,
        },
        "flops_per_slice": flops,
        "rounds": rounds,
        "rows": rows,
    }


def _bf16_cpu_row(args, scan, bundle, engine, flops, cpu_name, naive_out, naive_seconds):
    """bf16 autocast on a few slices: its speed and its error in HU against fp32 (why it is not used)."""
    count = min(args.slices, args.bf16_slices)
    prepared = _prepare(bundle, "cpu")

    def bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return prepared(x).float()

    engine(torch.device("cpu"), bf16, scan[..., :1])
    seconds, _, result = _timed(
        lambda: engine(torch.device("cpu"), bf16, scan[..., :count]), torch.device("cpu")
    )
    error = np.abs(result.image[0].numpy() - naive_out[:, :, :count])
    changed = np.mean(np.rint(result.image[0].numpy()) != np.rint(naive_out[:, :, :count]))
    return _row(
        f"not used: bf16 autocast + channels_last ({count} slices)",
        seconds,
        count,
        flops,
        cpu_name,
        naive_seconds / args.slices * count / seconds,
        max_abs_diff_vs_baseline_hu=round(float(error.max()), 2),
        mean_abs_diff_vs_baseline_hu=round(float(error.mean()), 3),
        fraction_of_rounded_hu_changed=round(float(changed), 3),
    )


def _prepare(bundle, device, channels_last=None, precision=None, output_conv="conv"):
    from srgan_med.enhance.inference import prepare_for_inference

    return prepare_for_inference(
        bundle.generator, device, channels_last=channels_last, precision=precision, output_conv=output_conv
    )


def _gpu_name(device: torch.device) -> str:
    """The rows' device column: the GPU's name, or what a CPU smoke run of the GPU rows is."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return "CPU (smoke run of the GPU rows, --gpu-rows-on-cpu: not a figure)"


def _cuda_rows(args, scan, bundle, engine, flops, device: torch.device) -> list[dict[str, Any]]:
    """GPU figures (on ``device``: CUDA, or the CPU for a smoke run of this code). Voxel differences
    are against the GPU baseline."""
    from srgan_med.enhance.inference import CompiledGenerator, default_output_conv, prepare_for_inference

    name = _gpu_name(device)
    gpu_generator = bundle.generator.to(device)
    volume = scan[0].numpy()
    normalise, denormalise = bundle.intensity_maps(scan[0])
    naive_upscale(volume[:, :, :1], gpu_generator, bundle.scale, normalise, denormalise, device)
    naive_s, _, naive_out = _timed(
        lambda: naive_upscale(volume, gpu_generator, bundle.scale, normalise, denormalise, device), device
    )
    bundle.generator.to("cpu")
    rows = [
        _row(
            "GPU naive baseline: fp32 eager, 1 slice/pass, torch defaults", naive_s, args.slices, flops, name
        )
    ]
    torch.backends.cudnn.benchmark = True  # as srgan-med enhance sets it on CUDA
    variants: list[tuple[str, Callable]] = [
        (
            f"GPU engine {precision}, batch {args.cuda_batch_size}",
            _prepare(bundle, device, precision=precision),
        )
        for precision in ("fp32", "tf32", "bf16")
    ]
    # The rows above compute the output convolution as a convolution; enhance's default form:
    prepared = prepare_for_inference(bundle.generator, device)
    form = default_output_conv(device, prepared.precision)
    as_enhance = (
        f"GPU engine as srgan-med enhance runs it ({prepared.precision}, output conv {form}), "
        f"batch {args.cuda_batch_size}"
    )
    variants.append((as_enhance, prepared))
    if args.compile:  # as `srgan-med enhance --compile` runs it
        compiled = CompiledGenerator(prepare_for_inference(bundle.generator, device))
        started = time.perf_counter()  # the whole volume: its last, smaller batch compiles again
        engine(device, compiled, batch_size=args.cuda_batch_size)
        rows.append(
            {
                "figure": "torch.compile warm-up (s)",
                "seconds": round(time.perf_counter() - started, 1),
                "device": name,
            }
        )
        variants.append((f"{as_enhance.replace('enhance', 'enhance --compile', 1)}", compiled))
    for figure, generator in variants:
        engine(device, generator, scan[..., : args.cuda_batch_size], batch_size=args.cuda_batch_size)
        seconds, _, result = _timed(
            lambda g=generator: engine(device, g, batch_size=args.cuda_batch_size), device
        )
        error = np.abs(result.image[0].numpy() - naive_out)
        rows.append(
            _row(
                figure,
                seconds,
                args.slices,
                flops,
                name,
                naive_s / seconds,
                max_abs_diff_vs_gpu_baseline_hu=round(float(error.max()), 3),
            )
        )
    return rows


def _cuda_end_to_end_rows(
    args, source: Path, model: Path, flops, folder: Path, device: torch.device
) -> list[dict[str, Any]]:
    """``srgan-med enhance`` on CUDA (``device``; the CPU in a smoke run): in this process (model load,
    read, upscale, write) and as a fresh command (Python start-up, imports and CUDA initialisation
    included)."""
    import subprocess

    from srgan_med.enhance.run import enhance_files, report_path

    name = _gpu_name(device)

    def timed(run: Callable[[], Any], target: Path) -> tuple[float, dict[str, Any]]:
        """Seconds of ``run()``, which enhances into ``target``, and the command's own report."""
        seconds, _, _ = _timed(run, device)
        return seconds, json.loads(report_path(target).read_text())

    rows = []
    runs = [(attempt, False) for attempt in ("first call", "second call")]
    runs += [(attempt, True) for attempt in ("first call", "second call")] if args.compile else []
    for attempt, compile_model in runs:
        target = folder / f"ct_sr_cuda_{attempt.split()[0]}_{compile_model}.nii"
        seconds, report = timed(
            lambda t=target, c=compile_model: enhance_files(
                [str(source)], output=t, model=str(model), device=device.type, compile_model=c, quiet=True
            ),
            target,
        )
        option = " --compile" if compile_model else ""
        rows.append(
            _row(
                f"srgan-med enhance{option} end to end on CUDA, in process ({attempt})",
                seconds,
                args.slices,
                flops,
                name,
                precision=report["precision"],
                batch=report["batch_size"],
            )
        )
    # A fresh command as a user runs it, then one with cuDNN's per-shape algorithm search off
    # (srgan_med.enhance.run.CUDNN_BENCHMARK), each with the command's own report of its stages.
    launch = "import sys, srgan_med.enhance.run as run; run.CUDNN_BENCHMARK = {}; "
    launch += "from srgan_med.cli import main; sys.argv[0] = 'srgan-med'; main()"
    for benchmark in (True, False):
        target = folder / f"ct_sr_cli_{benchmark}.nii"
        command = [sys.executable, "-c", launch.format(benchmark), "enhance", str(source), "-o", str(target)]
        command += ["--model", str(model), "--device", device.type, "-q"]
        seconds, report = timed(lambda c=command: subprocess.run(c, check=True), target)
        rows.append(
            _row(
                f"srgan-med enhance end to end on CUDA, fresh command, cudnn.benchmark {benchmark}",
                seconds,
                args.slices,
                flops,
                name,
                includes="python start-up, imports, CUDA init",
                in_command_s=report["seconds"],
                in_command_stages=report["seconds_by_stage"],
            )  # fmt: skip
        )
    return rows


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    env, settings = report["environment"], report["settings"]
    columns = ["figure", "seconds", "slices_per_s", "gflop_per_s", "ratio_vs_baseline", "device"]
    extra = sorted({k for row in report["rows"] for k in row} - set(columns))
    lines = [
        "# enhance speed",
        "",
        *environment_lines(env),
        f"- GPU: {env['cuda'] or 'none (the GPU rows need CUDA)'}",
        f"- load average at start / end: {env['load_average_start']} / {env['load_average_end']}",
        f"- volume: {settings['volume']} {settings['dtype']}; model: {settings['model']}",
        f"- weights: {env['weights']}",
        f"- FLOPs per slice: {report['flops_per_slice'] / 1e9:.2f} GFLOP (torch FlopCounterMode)",
        f"- rounds (baseline, engine alternating): {report['rounds']}",
        "",
        markdown_table(report["rows"], columns + extra),
        "",
    ]
    return save_report(report, out, "enhance_speed", lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for enhance_speed.json / .md")
    parser.add_argument("--slices", type=int, default=300, help="slices in the synthetic volume")
    parser.add_argument("--size", type=int, default=128, help="in-plane size of each slice")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="as srgan-med enhance --batch-size")
    parser.add_argument("--repeats", type=int, default=1, help="alternating baseline/engine rounds")
    parser.add_argument("--bf16-slices", type=int, default=4, help="slices for the CPU bf16 check")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA only)")
    parser.add_argument("--cuda-batch-size", type=int, default=32, help="slices per pass on CUDA")
    parser.add_argument("--skip-cpu", action="store_true", help="only the CUDA rows (GPU session)")
    parser.add_argument(
        "--gpu-rows-on-cpu",
        action="store_true",
        help="without CUDA, run the GPU rows' code on the CPU: a smoke run of it, not a figure",
    )
    args = parser.parse_args(argv)
    for name in ("slices", "size", "repeats", "batch_size", "bf16_slices"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
