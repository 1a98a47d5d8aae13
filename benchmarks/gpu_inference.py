"""GPU inference: generator throughput against a naive baseline, and what each precision costs in PSNR
(issue #7).

Part 1, throughput. The x4 SRResNet of the paper (16 blocks, 64 channels, random init: speed does not
depend on weight values) on 128x128 slices resident on the device, timed with CUDA events (median of
``--repeats`` timed runs after warm-up, two input sets alternating, random data, never zeros):

- baseline: the plain generator, eval, fp32, eager, NCHW, one slice per pass, torch's defaults;
- the engine's generator (:func:`srgan_med.enhance.inference.prepare_for_inference`: batch norm folded,
  output conv before the last pixel shuffle, computed as a convolution) in strict fp32, TF32, mixed
  and bf16 + channels_last, batched;
- bf16 + channels_last replayed from a CUDA graph; ``torch.compile`` (``--compile``; its settings
  ``--compile-modes``: torch.compile's modes or ``triton-convs``, see :data:`COMPILE_SETTINGS`; at
  ``--compile-batches``);
- the same bf16 engine with the output convolution computed other ways, eager and compiled (default
  mode): ``output_conv="shift-sum"`` (:class:`srgan_med.enhance.conv_forms.ShiftSumConv2d`) and
  ``"fused-shift-sum"`` (:class:`srgan_med.enhance.conv_forms.PReLUShiftSumConv2d`: the PReLU before
  it applied inside the product, a Triton kernel; the CUDA default in bf16 since the H100 run of
  2026-11-26), the latter also with ``input_conv="unfold"``
  (:class:`srgan_med.enhance.conv_forms.UnfoldConv2d`);
- with ``--profile``, the top kernels of the fastest eager bf16 row and of each compiled row
  (``torch.profiler``), to show what bounds each figure.

Each row: slices/s, ratio to the baseline, achieved TFLOP/s (FLOPs from ``FlopCounterMode``), and the
measured bf16 matrix-product and copy ceilings of the device for comparison.

Part 2, precision. Every shipped model of each public scan's modality (``--scans``: the ``*.nii.gz``
of ``../shared/data/scans`` when present, plus the package's example scans) enhances the scan's
simulated low-res version (the evaluation's own :func:`srgan_med.evaluate.run.synthesise_pair`, the
modality's preset, seed 0, ``--max-slices`` central slices) in each precision (the convolution
form), and in bf16 with the output convolution computed the other ways; with ``--compile`` also the
bf16 convolution form and the CUDA default form (fused-shift-sum) compiled (on a CPU: ``mixed``
compiled, what ``srgan-med enhance --compile`` runs on a CPU with native bf16); PSNR against the
high-res scan uses ``srgan-med evaluate``'s data range and foreground mask. Issue #7's bar: within
0.01 dB of strict fp32.

On a machine without CUDA part 1 is skipped with a reason and part 2 runs the CPU precisions (fp32,
bf16, mixed), so the script is checked by the test suite. ``--device cpu`` runs part 1 on the CPU
too, timed by the wall clock: with ``--blocks 1 --width 8 --compile-backend eager`` (a trace-only
backend), a smoke run of its whole control flow that the suite makes, not a figure.

Usage:
    python benchmarks/gpu_inference.py --out bench_out/ --compile
    python benchmarks/gpu_inference.py --out /tmp/b --max-slices 2 --skip-throughput   # CPU check
    python benchmarks/gpu_inference.py --out /tmp/b --device cpu --size 16 --blocks 1 --width 8 \
        --batches 1 2 --compile --compile-backend eager --compile-batches 1 2 --skip-precision  # smoke
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shlex
import statistics
import sys
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
    kernel_profile,
    markdown_table,
    profile_lines,
    save_report,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCANS = REPO.parent / "shared" / "data" / "scans"
TARGET_SLICES_PER_S = 4000.0  # issue #7, H100, x4 generator, 128x128 slices
PSNR_BAR_DB = 0.01
# The engine with its output (and first) convolution computed other ways than as convolutions:
# prepare_for_inference's output_conv and input_conv (srgan_med/enhance/conv_forms.py). The last is
# the CUDA default in bf16 (default_output_conv): the fastest compiled on the H100 (2026-11-26).
CONV_FORMS = {
    "shift-sum output convolution": {"output_conv": "shift-sum"},
    "fused-shift-sum output + unfold first convolution": {
        "output_conv": "fused-shift-sum",
        "input_conv": "unfold",
    },
    "fused-shift-sum output convolution": {"output_conv": "fused-shift-sum"},
}
# The forms' options with the convolution form spelled out: the rows named "engine ..." (no form)
# compute the output convolution as a convolution on every device.
PLAIN_FORM = {"output_conv": "conv"}
# Compile settings by name: torch.compile's own modes, and "triton-convs", Inductor's own Triton
# convolution templates for every convolution (cuDNN left out). A template can take the PReLU and
# residual add that follow it into its epilogue; max-autotune, left to choose, kept cuDNN for all
# but the first convolution on the H100 (docs/benchmarks.md).
COMPILE_SETTINGS = {
    "triton-convs": {"options": {"max_autotune": True, "max_autotune_conv_backends": "TRITON"}},
}


def compile_kwargs(setting: str, backend: str = "inductor") -> dict[str, Any]:
    """``torch.compile`` keyword arguments for a ``--compile-modes`` name; none for another backend
    than Inductor (a smoke run's trace-only one), which takes no mode or options."""
    return COMPILE_SETTINGS.get(setting, {"mode": setting}) if backend == "inductor" else {}


def _failure(error: Exception) -> str:
    """How a row that failed says why: the exception's type and the start of its message."""
    return f"{type(error).__name__}: {str(error)[:200]}"


def compile_label(setting: str) -> str:
    """How a compiled row names its setting: ``torch.compile(mode='default')``, or the setting."""
    return f"torch.compile({setting})" if setting in COMPILE_SETTINGS else f"torch.compile(mode={setting!r})"


def compile_plan(forms: list[str], settings: list[str]) -> list[tuple[str, str]]:
    """(engine, setting) pairs to compile, in order: each form (the CUDA default, last in
    :data:`CONV_FORMS`, first: a stage's time limit may cut the last rows, and the plain engine's
    figure exists from earlier runs) and the plain engine ``"bf16"`` in the first setting; the
    default form and the plain engine in each further one."""
    ordered = [f"bf16 {form}" for form in reversed(forms)]
    plan = []
    for index, setting in enumerate(settings):
        engines = [*ordered, "bf16"] if index == 0 else [*ordered[:1], "bf16"]
        plan += [(engine, setting) for engine in engines]
    return plan


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _events_ms(function: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of one call of ``function`` (CUDA events; on the CPU, the wall clock)."""
    for _ in range(warmup):
        function()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type != "cuda":
            started = time.perf_counter()
            function()
            times.append((time.perf_counter() - started) * 1000)
            continue
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def ceilings(device: torch.device) -> dict[str, float]:
    """Measured bf16 matrix-product rate (TFLOP/s) and device-to-device copy bandwidth (GB/s); on
    the CPU (a smoke run) with smaller operands."""
    size, elements = (8192, 2**28) if device.type == "cuda" else (512, 2**22)  # copies of 1 GiB / 16 MiB
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    ms = _events_ms(lambda: a @ b, repeats=10, warmup=3, device=device)
    source = torch.randn(elements, device=device)
    target = torch.empty_like(source)
    copy_ms = _events_ms(lambda: target.copy_(source), repeats=10, warmup=3, device=device)
    return {
        "bf16_matmul_tflop_per_s": round(2 * size**3 / ms / 1e9, 1),
        "copy_gb_per_s": round(2 * source.numel() * 4 / copy_ms / 1e6, 1),
    }


def _flops_per_slice(generator: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator(torch.randn(1, 1, size, size, device=next(generator.parameters()).device))
    return int(counter.get_total_flops())


def _cuda_graph(module: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` captured once for ``example``'s shape; calls copy the input in and replay."""
    static_input = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            module(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_output = module(static_input)

    def replay(low_res: torch.Tensor) -> torch.Tensor:
        static_input.copy_(low_res)
        graph.replay()
        return static_output

    return replay


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from srgan_med.enhance.inference import prepare_for_inference
    from srgan_med.nets import SRResNet

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    plain = SRResNet(scale=4, blocks=args.blocks, width=args.width, channels=1).to(device).eval()
    flops = _flops_per_slice(plain, args.size)
    result: dict[str, Any] = {
        "generator": {"scale": 4, "blocks": args.blocks, "width": args.width, "slice": args.size},
        "ceilings": ceilings(device),
        "flops_per_slice": flops,
        "rows": [],
    }
    rows = result["rows"]
    inputs = {}

    def batch_of(size: int) -> list[torch.Tensor]:
        if size not in inputs:
            inputs[size] = [torch.rand(size, 1, args.size, args.size, device=device) for _ in range(2)]
        return inputs[size]

    references: dict[int, torch.Tensor] = {}

    def relative_error(function: Callable[[torch.Tensor], Any], batch: int) -> float:
        """||out - ref|| / ||ref|| against the engine in strict fp32, on fresh random input."""
        probe = batch_of(batch)[0]
        with torch.inference_mode():
            if batch not in references:
                references[batch] = engines["fp32"](probe).double()
            output = function(probe).double()
        return float((output - references[batch]).norm() / references[batch].norm())

    def measure(name: str, function: Callable[[torch.Tensor], Any], batch: int, **extra) -> None:
        data, calls = batch_of(batch), [0]

        def call() -> None:
            calls[0] += 1
            function(data[calls[0] % 2])

        try:
            with torch.inference_mode():
                ms = _events_ms(call, repeats=args.repeats, warmup=args.warmup, device=device)
        except torch.cuda.OutOfMemoryError:
            rows.append({"variant": name, "batch": batch, "skipped": "CUDA out of memory"})
            torch.cuda.empty_cache()
            return
        slices = batch / ms * 1000
        row = {"variant": name, "batch": batch, "ms_per_pass": round(ms, 3), "slices_per_s": round(slices, 1)}
        row["tflop_per_s"] = round(slices * flops / 1e12, 1)
        row["ratio_vs_baseline"] = round(slices / rows[0]["slices_per_s"], 2) if rows else 1.0
        row.update(extra)
        if engines:
            row["rel_error_vs_fp32"] = f"{relative_error(function, batch):.1e}"
        rows.append(row)
        print(
            f"{name:55s} batch {batch:4d}: {slices:9.1f} slices/s  x{row['ratio_vs_baseline']:.2f}",
            flush=True,
        )

    engines: dict[str, torch.nn.Module] = {}
    measure("baseline: plain generator, fp32 eager NCHW, torch defaults", plain, 1)
    torch.backends.cudnn.benchmark = True
    precisions = ("fp32", "tf32", "bf16", "mixed") if cuda else ("fp32", "bf16", "mixed")
    engines.update({p: prepare_for_inference(plain, device, precision=p, **PLAIN_FORM) for p in precisions})
    measure("engine fp32 (IEEE), cudnn.benchmark", engines["fp32"], args.batch)
    if cuda:
        measure("engine tf32, cudnn.benchmark", engines["tf32"], args.batch)
    measure("engine mixed (bf16 trunk, fp32 image convs) + channels_last", engines["mixed"], args.batch)
    eager_bf16 = "engine bf16 + channels_last, cudnn.benchmark"
    for batch in args.batches:
        measure(eager_bf16, engines["bf16"], batch)
    # The batch of the CUDA graph, the forms and the compiled rows: the fastest eager bf16 one (not
    # the mixed row's, whose name says bf16 too).
    best = max(
        (r for r in rows if r["variant"] == eager_bf16 and "slices_per_s" in r),
        key=lambda r: r["slices_per_s"],
    )
    graph_batch = best["batch"]
    profiles: dict[str, Any] = {}
    if args.profile:
        example = batch_of(graph_batch)[0]
        with torch.inference_mode():
            profiles[f"engine bf16 + channels_last, eager, batch {graph_batch}"] = kernel_profile(
                functools.partial(engines["bf16"], example), device
            )
    try:
        if not cuda:
            raise RuntimeError("needs a CUDA device")
        replay = _cuda_graph(engines["bf16"], batch_of(graph_batch)[0])
        measure("engine bf16 + channels_last, CUDA graph", replay, graph_batch)
    except Exception as error:  # a capture failure is reported, not fatal
        rows.append(
            {
                "variant": "engine bf16 + channels_last, CUDA graph",
                "skipped": f"{type(error).__name__}: {error}",
            }
        )
    names = {}
    for form, options in CONV_FORMS.items():
        name = f"engine bf16 + channels_last, {form}"
        try:  # a form that fails here (a kernel that does not build) is reported, not fatal
            engines[f"bf16 {form}"] = prepare_for_inference(plain, device, precision="bf16", **options)
            measure(name, engines[f"bf16 {form}"], graph_batch)
            if args.profile:
                with torch.inference_mode():
                    profiles[f"{name}, eager, batch {graph_batch}"] = kernel_profile(
                        functools.partial(engines[f"bf16 {form}"], batch_of(graph_batch)[0]), device
                    )
            names[form] = name
        except Exception as error:
            rows.append({"variant": name, "skipped": _failure(error)})
    if args.compile:
        for engine, setting in compile_plan(list(names), args.compile_modes):
            form = engine.removeprefix("bf16 ")
            name = f"{names.get(form, 'engine bf16 + channels_last')}, {compile_label(setting)}"
            if args.compile_backend != "inductor":  # a smoke run's trace-only backend, said in each row
                name += f", backend {args.compile_backend!r}"
            try:
                torch.compiler.reset()  # each setting compiles from empty caches
                options = compile_kwargs(setting, args.compile_backend)
                compiled = torch.compile(
                    engines[engine], dynamic=False, backend=args.compile_backend, **options
                )
                for batch in args.compile_batches or [graph_batch]:  # a new shape compiles again
                    started = time.perf_counter()
                    with torch.inference_mode():
                        compiled(batch_of(batch)[0])
                    _synchronize(device)
                    measure(name, compiled, batch, compile_s=round(time.perf_counter() - started, 1))
                    if args.profile and batch == graph_batch:
                        example = batch_of(batch)[0]
                        with torch.inference_mode():
                            profiles[name] = kernel_profile(functools.partial(compiled, example), device)
            except Exception as error:
                rows.append({"variant": name, "skipped": _failure(error)})
    if profiles:
        result["profiles"] = profiles
    for row in rows:
        if "slices_per_s" in row:
            row["meets_issue7_target"] = row["slices_per_s"] >= TARGET_SLICES_PER_S
    return result


def find_scans(scans_dir: Path) -> list[str]:
    found = [str(p) for p in sorted(scans_dir.glob("*.nii.gz"))] if scans_dir.is_dir() else []
    return found + ["example:ct-small", "example:mr-small"]


def _central(volume, max_slices: int, axis: int):
    depth = volume.shape[1 + axis]
    if max_slices <= 0 or depth <= max_slices:
        return volume
    start = (depth - max_slices) // 2
    index = [slice(None)] * 4
    index[1 + axis] = slice(start, start + max_slices)
    return volume[tuple(index)]


def precision_check(
    args: argparse.Namespace,
    device: torch.device,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """The precision rows, one per scan x model; ``on_row(rows)`` after each (``main`` saves the
    report then, so a run cut short by a time limit keeps its rows)."""
    from srgan_med.enhance.engine import enhance_volume, slice_axis_for
    from srgan_med.enhance.inference import prepare_for_inference
    from srgan_med.enhance.tiling import receptive_field_radius
    from srgan_med.evaluate.core import data_range_for
    from srgan_med.evaluate.mask import foreground_mask
    from srgan_med.evaluate.run import synthesise_pair
    from srgan_med.examples import resolve_input
    from srgan_med.io import load_scan
    from srgan_med.metrics import psnr
    from srgan_med.models.bundle import load_bundle, shipped_models

    precisions = ["fp32", "tf32", "bf16", "mixed"] if device.type == "cuda" else ["fp32", "bf16", "mixed"]
    replaced = dict(args.weights)  # other weights under a shipped name
    bundles = {name: load_bundle(replaced.get(name, name), device=str(device)) for name in shipped_models()}
    rows = []
    for source in find_scans(args.scans):
        scan = load_scan(resolve_input(source))
        modality = str(scan.meta["modality"])
        axis = slice_axis_for(scan.affine.numpy(), "auto", tuple(scan.shape[1:]))
        scan = _central(scan, args.max_slices, axis)
        for name, bundle in bundles.items():
            if bundle.modality != modality:
                continue
            high_res, low_res = synthesise_pair(scan, None, bundle.scale, 0, source)
            reference = high_res[0].numpy().astype(np.float64)
            data_range = data_range_for(reference, modality)
            mask = foreground_mask(reference, modality)
            mask = mask if mask.any() else None  # no foreground: the whole volume
            normalise, denormalise = bundle.intensity_maps(low_res[0])
            halo = receptive_field_radius(bundle.generator)
            row: dict[str, Any] = {
                "scan": Path(source).name,
                "model": name,
                "slices": int(scan.shape[1 + axis]),
            }
            prepare = functools.partial(prepare_for_inference, bundle.generator, device)
            variants = {p: prepare(precision=p, **PLAIN_FORM) for p in precisions}
            for options in CONV_FORMS.values():
                label = "bf16 " + " ".join(options.values())
                variants[label] = prepare(precision="bf16", **options)
            backend = args.compile_backend
            if args.compile and (device.type == "cuda" or backend != "inductor"):
                variants["bf16 compiled"] = torch.compile(variants["bf16"], dynamic=True, backend=backend)
                fastest = variants["bf16 fused-shift-sum"]  # the CUDA default, and the fastest compiled
                for setting in args.compile_modes:  # each setting's numerics, on that form
                    label = "bf16 fused-shift-sum compiled"
                    label += "" if setting == "default" else f" {setting}"
                    options = compile_kwargs(setting, backend)
                    variants[label] = torch.compile(fastest, dynamic=True, backend=backend, **options)
            if args.compile and device.type == "cpu":  # `enhance --compile` on a CPU with native bf16
                variants["mixed compiled"] = torch.compile(variants["mixed"], dynamic=True, backend=backend)
            if args.variants:  # fp32 is every delta's reference
                variants = {k: v for k, v in variants.items() if k == "fp32" or k in args.variants}
            for label, generator in variants.items():
                try:  # a variant that fails (a kernel that does not build) is reported, not fatal
                    output = enhance_volume(
                        low_res, generator, bundle.scale, normalise=normalise, denormalise=denormalise,
                        slice_axis=axis, device=device, batch_size=16, halo=halo, tile=1024,
                    )  # fmt: skip
                except Exception as error:
                    row[f"error_{label}"] = _failure(error)
                    continue
                value = psnr(reference, output.image[0].numpy().astype(np.float64), data_range, mask)
                row[f"psnr_{label}"] = round(value, 4)
            for label in variants:
                if label != "fp32" and f"psnr_{label}" in row:
                    row[f"delta_{label}_db"] = round(row[f"psnr_{label}"] - row["psnr_fp32"], 4)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if on_row:
                on_row(rows)
    return rows


def precision_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    labels = {k[len("delta_") : -len("_db")] for row in rows for k in row if k.startswith("delta_")}
    labels |= {k[len("error_") :] for row in rows for k in row if k.startswith("error_")}
    summary = {}
    for label in sorted(labels):
        deltas = [abs(row[f"delta_{label}_db"]) for row in rows if f"delta_{label}_db" in row]
        failed = sum(f"error_{label}" in row for row in rows)
        worst = max(deltas, default=None)
        within = not failed and worst is not None and worst <= PSNR_BAR_DB
        summary[label] = {"max_abs_delta_db": worst, "within_0.01_db": within}
        if failed:
            summary[label]["failed_pairs"] = failed
    return summary


def write_report(report: dict[str, Any], out: Path, stem: str = "gpu_inference") -> tuple[Path, Path]:
    env = report["environment"]
    lines = ["# GPU inference (issue #7)", "", *environment_lines(env), f"- device: {report['device']}", ""]
    part = report.get("throughput")
    if part:
        lines += [
            "## throughput: x4 SRResNet ({blocks} blocks, {width} channels), {slice}x{slice} slices "
            "resident on the device".format(
                **part.get("generator", {"blocks": 16, "width": 64, "slice": 128})
            ),
            "",
            f"- FLOPs per slice: {part['flops_per_slice'] / 1e9:.2f} GFLOP (FlopCounterMode)",
            f"- measured ceilings: {part['ceilings']}",
            f"- issue #7 target: {TARGET_SLICES_PER_S:.0f} slices/s",
            "",
            markdown_table(
                part["rows"],
                [
                    "variant",
                    "batch",
                    "ms_per_pass",
                    "slices_per_s",
                    "ratio_vs_baseline",
                    "tflop_per_s",
                    "rel_error_vs_fp32",
                    "meets_issue7_target",
                    "compile_s",
                    "skipped",
                ],
            ),  # fmt: skip
            "",
        ]
        for name, profile in part.get("profiles", {}).items():
            lines += profile_lines(name, profile)
    else:
        lines += [f"throughput: skipped ({report.get('throughput_skipped')})", ""]
    rows = report["precision"]
    if rows:
        columns = ["scan", "model", "slices"] + sorted(
            {k for row in rows for k in row if k.startswith(("psnr_", "delta_", "error_"))}
        )
        lines += [
            "## precision: PSNR (dB) of each shipped model on the public scans, per precision",
            "",
            f"- {report['precision_settings']}",
            f"- bar: |delta| <= {PSNR_BAR_DB} dB against strict fp32; summary: {report['precision_summary']}",
            "",
            markdown_table(rows, columns),
            "",
        ]
    return save_report(report, out, stem, lines)


def _weights_entry(text: str) -> tuple[str, str]:
    """``NAME=PATH`` as ``(NAME, PATH)``: a shipped model's name and a weights file."""
    from srgan_med.models.bundle import shipped_models

    name, _, path = text.partition("=")
    if not name or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH of a weights file, got {text!r}")
    if name not in shipped_models():
        raise argparse.ArgumentTypeError(f"{name!r} is not a shipped model ({', '.join(shipped_models())})")
    return name, path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_inference.json / .md")
    parser.add_argument("--size", type=int, default=128, help="low-res slice side")
    parser.add_argument(
        "--device", default="cuda", help="device of the throughput part (cpu: a smoke run of the script)"
    )
    parser.add_argument("--blocks", type=int, default=16, help="residual blocks of the timed generator")
    parser.add_argument("--width", type=int, default=64, help="channels of the timed generator")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (eager: trace only, a smoke run)"
    )
    parser.add_argument("--batch", type=int, default=64, help="batch of the fp32 / tf32 rows")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256], help="bf16 batches")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--compile-modes",
        nargs="+",
        default=["default", "max-autotune-no-cudagraphs"],
        help="torch.compile modes, or 'triton-convs' (Inductor's Triton convolutions, no cuDNN)",
    )
    parser.add_argument(
        "--compile-batches",
        type=int,
        nargs="+",
        help="batches of the compiled rows (default: the fastest eager bf16 batch)",
    )
    parser.add_argument("--scans", type=Path, default=DEFAULT_SCANS, help="folder of public *.nii.gz scans")
    parser.add_argument("--max-slices", type=int, default=24, help="central slices per scan (0: all)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="add the top kernels of the best eager and compiled rows"
    )
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        type=_weights_entry,
        help="precision part: the shipped model NAME run with the weights file PATH instead, e.g. an "
        "earlier version taken from git history (git show COMMIT:srgan_med/weights/NAME.safetensors)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        help="precision part: only these variants besides fp32, e.g. 'bf16 fused-shift-sum compiled'",
    )
    args = parser.parse_args(argv)
    names = [name for name, _ in args.weights]
    if len(set(names)) < len(names):
        parser.error(f"--weights names a model twice: {' '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    command = "python " + shlex.join(["benchmarks/gpu_inference.py", *shown])
    cuda = torch.cuda.is_available() and torch.device(args.device).type == "cuda"
    device = torch.device(args.device if cuda else "cpu")
    report: dict[str, Any] = {
        "benchmark": "gpu_inference",
        "environment": environment() | {"command": command},
        "device": torch.cuda.get_device_name(device)
        if cuda
        else "CPU"
        if args.device == "cpu"
        else "CPU (no CUDA device)",
        "precision": [],
    }
    if args.skip_throughput or (device.type != torch.device(args.device).type):
        report["throughput_skipped"] = "--skip-throughput" if args.skip_throughput else "no CUDA device"
    else:
        report["throughput"] = throughput(args)
        write_report(report, args.out)  # what is measured so far survives a later failure
    if not args.skip_precision:
        report["precision_settings"] = (
            f"{args.max_slices or 'all'} central slices per scan; LR: the modality's degradation preset, "
            "seed 0; PSNR over evaluate's foreground mask and data range"
        )
        for name, path in args.weights:  # which file ran under a shipped name: its digest says
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            report["precision_settings"] += f"; {name} run with the weights {path} (sha256 {digest})"

        def save(rows: list[dict[str, Any]]) -> None:
            report["precision"], report["precision_summary"] = rows, precision_summary(rows)
            write_report(report, args.out)

        save(precision_check(args, device, on_row=save))
    else:
        write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
