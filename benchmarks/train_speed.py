"""Training throughput of the real trainer's step functions against a naive baseline (issue #7).

A :class:`srgan_med.train.Trainer` is built from ``configs/ct.yaml`` (``--set``-style overrides: a
synthetic int16 CT NIfTI written to a temporary folder as training and validation data, the patch
size, the scale, the device and the speed switches), and its own ``_pretrain_step`` (phase 1:
SRResNet, pixel loss) and ``_gan_step`` (phase 2: generator, discriminator, VGG19 content loss,
degradation on the training device, both optimiser steps) are timed on warm steps, with
``torch.cuda.synchronize()`` around the timed region on CUDA. Nothing of the step is copied here.

Rows, each for both phases:

- baseline: our networks run the naive way, fp32, eager, NCHW, batch 16 (the paper's);
- channels_last (fp32);
- CUDA only: bf16 autocast; bf16 + channels_last; bf16 + channels_last + ``torch.compile``;
- the best variant of the device at each of ``--batch-sizes``, with the generator's output
  convolution as a convolution (``batches``) and as a shifted sum (``shift_sum``,
  ``performance.output_conv=shift-sum``).

Each row gives HR patches/s, the ratio to the same phase's baseline and the achieved TFLOP/s, from the
FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts over one whole eager step (forward and
backward of generator, discriminator and VGG19, and the degradation), with a per-component breakdown.
Weights are random-init (speed does not depend on their values); the VGG19 is ImageNet when
torchvision's cache holds it, else random, and the report says which.

Issue #7's targets (H100, 128x128 HR patches, x4, batch 16): phase 2 >= 2,000 patches/s, phase 1
>= 6,000 patches/s.

Usage:
    python benchmarks/train_speed.py --out bench_out/       # GPU session: the full table
    python benchmarks/train_speed.py --device cpu --patch-size 32 --steps 2 --batch-sizes 2 --out /tmp/b
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import (  # noqa: E402
    device_label,
    environment,
    environment_lines,
    kernel_profile,
    markdown_table,
    profile_lines,
    save_report,
    write_synthetic_ct,
)

REPO = Path(__file__).resolve().parents[1]
PHASES = ("pretrain", "gan")
TARGETS = {"pretrain": 6000.0, "gan": 2000.0}  # issue #7, H100, 128x128 x4, batch 16


@dataclass(frozen=True)
class Variant:
    """One configuration of the trainer's speed switches."""

    name: str
    batch: int
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    output_conv: str = "conv"

    def overrides(self) -> list[str]:
        return [
            f"data.batch_size={self.batch}",
            f"performance.bf16={str(self.bf16).lower()}",
            f"performance.channels_last={str(self.channels_last).lower()}",
            f"performance.compile={str(self.compile).lower()}",
            f"performance.compile_mode={self.compile_mode}",
            f"performance.output_conv={self.output_conv}",
        ]


def vgg_weights() -> tuple[str, str]:
    """``("imagenet", note)`` when torchvision's cache holds VGG19, else ``("random", note)``."""
    from srgan_med.errors import WeightsNotFoundError
    from srgan_med.losses import find_vgg19_weights

    try:
        path = find_vgg19_weights("imagenet")
    except WeightsNotFoundError as error:
        return "random", f"RANDOM-INIT VGG19 (same FLOPs and speed as ImageNet weights): {error}"
    return "imagenet", f"ImageNet VGG19 from {path}"


ROW_KEYS = (
    "baseline",
    "channels_last",
    "bf16",
    "bf16_channels_last",
    "compile",
    "compile_reduce_overhead",
    "batches",
    "shift_sum",
)


def variants(device: torch.device, batch: int, batch_sizes: list[int], compile_: bool, keys=ROW_KEYS):
    """``(variant, reason it is skipped or None)`` in report order, for the rows named in ``keys``
    (the baseline is always measured: every ratio is against it)."""
    cuda = device.type == "cuda"
    gpu_only = None if cuda else "GPU-only row (bf16 autocast and torch.compile are timed on CUDA only)"
    best = Variant("channels_last", batch, channels_last=True)
    rows = [("baseline", Variant("baseline: fp32 eager NCHW", batch), None), ("channels_last", best, None)]
    rows.append(("bf16", Variant("bf16", batch, bf16=True), gpu_only))
    rows.append(
        (
            "bf16_channels_last",
            Variant("bf16 + channels_last", batch, bf16=True, channels_last=True),
            gpu_only,
        )
    )
    if cuda:
        best = rows[-1][1]
    compiled = Variant("bf16 + channels_last + compile", batch, True, True, True)
    rows.append(("compile", compiled, gpu_only or (None if compile_ else "--no-compile given")))
    graphs = Variant(
        "bf16 + channels_last + compile(reduce-overhead)", batch, True, True, True, "reduce-overhead"
    )
    rows.append(("compile_reduce_overhead", graphs, gpu_only or (None if compile_ else "--no-compile given")))
    if cuda and compile_:
        best = compiled
    for size in batch_sizes:
        rows.append(("batches", replace(best, name=f"{best.name}, batch {size}", batch=size), None))
    for size in batch_sizes:  # the same, with the output convolution as a shifted sum
        name = f"{best.name}, shift-sum output conv, batch {size}"
        rows.append(("shift_sum", replace(best, name=name, batch=size, output_conv="shift-sum"), None))
    return [(variant, reason) for key, variant, reason in rows if key == "baseline" or key in keys]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_trainer(config_path: Path, overrides: list[str]):
    """A real :class:`Trainer`, restoring the global torch settings its constructor changes."""
    from srgan_med.train import Trainer, load_train_config

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    config = load_train_config(config_path, overrides)
    trainer = Trainer(config, resume=False, quiet=True)
    return trainer, lambda: (
        torch.set_num_threads(threads),
        torch.use_deterministic_algorithms(deterministic),
    )


def start_phase(trainer, phase: str) -> Callable[[], Any]:
    """Fresh optimisers for ``phase`` (as ``Trainer.run`` makes them); returns the step function."""
    trainer.phase, trainer.step = phase, 0
    trainer._new_optimisers(phase)
    trainer.generator_run.train()
    trainer.discriminator_run.train()
    return trainer._pretrain_step if phase == "pretrain" else trainer._gan_step


def _flops(function: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return int(counter.get_total_flops())


def count_flops(
    trainer, phase: str, measure: Callable[[Callable[[], Any]], int] | None = None
) -> dict[str, int]:
    """FLOPs of one step of ``phase``: ``total`` over the trainer's own step, and a breakdown.

    ``measure`` counts something else the same way (``traffic.py`` passes its byte counter); the
    passes run under the trainer's autocast setting, as its step runs them.

    ``FlopCounterMode``'s per-module attribution is wrong across the step's backward passes (the
    VGG's backward lands on other modules too), so each network's share is counted on its own, on
    copies of the trainer's modules, with the passes the step makes: generator forward + backward;
    in phase 2 also the frozen discriminator on the output (backward to the input only), VGG19 on
    output and target (backward to the output only), and the discriminator on real and on fake
    patches (backward to the weights only). What the step counts beyond these is reported as
    ``unattributed``: about 0 while the breakdown mirrors the step (the degradation's FLOPs vary a
    little with its draw: the blur kernel's length depends on the PSF family and width).
    """
    import copy

    measure = measure or _flops

    def component_flops(low_res: torch.Tensor, high_res: torch.Tensor) -> dict[str, int]:
        def under_autocast(function: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                with trainer._autocast():
                    loss = function()
                loss.float().backward()

            return run

        generator = copy.deepcopy(trainer.generator)
        parts = {"generator": measure(under_autocast(lambda: generator(low_res).float().square().mean()))}
        if phase == "gan":
            discriminator = copy.deepcopy(trainer.discriminator)
            perceptual = copy.deepcopy(trainer.perceptual)
            with trainer._autocast():
                fake = generator(low_res).float().detach().requires_grad_(True)
            discriminator.requires_grad_(False)
            frozen = measure(under_autocast(lambda: discriminator(fake).float().mean()))
            parts["VGG19 content loss"] = measure(under_autocast(lambda: perceptual(fake, high_res).float()))
            discriminator.requires_grad_(True)
            real_and_fake = measure(under_autocast(lambda: discriminator(high_res).float().mean())) + measure(
                under_autocast(lambda: discriminator(fake.detach()).float().mean())
            )
            parts["discriminator"] = frozen + real_and_fake
        return parts

    step = start_phase(trainer, phase)
    batch: list[tuple[torch.Tensor, torch.Tensor]] = []
    parts = {"degradation": measure(lambda: batch.append(trainer._batch()))}
    parts.update(component_flops(*batch[0]))
    total = measure(step)
    parts["unattributed"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def time_steps(step: Callable[[], Any], steps: int, warmup: int, device: torch.device):
    """Seconds of ``warmup`` calls, then of ``steps`` warm calls (synchronised around them on CUDA).
    The steps themselves never wait for the host (the trainer checks its losses only at logging
    steps, which this loop does not run)."""
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warm = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return warm - started, time.perf_counter() - warm


def measure(trainer, phase: str, variant: Variant, args, device, flops_per_patch: float) -> dict[str, Any]:
    step = start_phase(trainer, phase)
    warmup = max(args.warmup, 3) if variant.compile else args.warmup
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_seconds, seconds = time_steps(step, args.steps, warmup, device)
    finite = trainer.guard.all_finite()  # after the timed steps: one host sync
    _, data_seconds = time_steps(trainer._batch, args.steps, 0, device)
    patches = variant.batch * args.steps / seconds
    row = {
        "phase": phase,
        "variant": variant.name,
        "batch": variant.batch,
        "bf16": variant.bf16,
        "channels_last": variant.channels_last,
        "compile": variant.compile,
        "steps": args.steps,
        "ms_per_step": round(1000 * seconds / args.steps, 2),
        "data_ms_per_step": round(1000 * data_seconds / args.steps, 2),
        "patches_per_s": round(patches, 2),
        "tflop_per_s": round(patches * flops_per_patch / 1e12, 4),
        "losses_finite": finite,
    }
    if variant.compile:
        row["warmup_s_incl_compile"] = round(warmup_seconds, 1)
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        row["meets_issue7_target"] = patches >= TARGETS[phase]
    if args.profile:  # after the timing, so the profiler cannot slow the timed steps
        row["profile"] = kernel_profile(step, device, passes=2, top=10)
    return row


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    weights, vgg_note = vgg_weights()
    print(f"*** VGG19 for the content loss: {vgg_note} ***", flush=True)
    env = environment() | {"command": command, "weights": "random-init generator and discriminator"}
    env["vgg19"] = vgg_note
    env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    env["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    device_name = device_label(device, env)
    rows: list[dict[str, Any]] = []
    flops: dict[str, dict[str, int]] = {}
    baseline: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        side = max(2 * args.patch_size, 64)
        scan = write_synthetic_ct(folder / "ct.nii", (side, side, args.slices), spacing_mm=(0.7, 0.7, 1.0))
        common = [
            f"output_dir={folder / 'run'}",
            f"data.train={json.dumps([str(scan)])}",
            f"data.validation={json.dumps([str(scan)])}",
            "data.validation_slices=1",
            f"data.patch_size={args.patch_size}",
            f"scale={args.scale}",
            f"losses.perceptual.weights={weights}",
            f"performance.device={device.type}",
            "performance.deterministic=false",
            f"performance.cpu_threads={args.threads}",
            *args.set,
        ]
        chosen = variants(device, args.batch_size, args.batch_sizes, not args.no_compile, args.rows)
        for variant, reason in chosen:
            if reason is not None:
                print(f"skipped: {variant.name}: {reason}", flush=True)
                rows.extend({"phase": p, "variant": variant.name, "skipped": reason} for p in args.phases)
                continue
            if variant.compile:
                # Each compiled row starts from empty compiler caches, as a training run does: rows at
                # other batch sizes would otherwise turn on dynamic shapes, and their graphs would
                # count towards dynamo's recompile limit (past it, it silently runs eager).
                torch.compiler.reset()
            trainer, restore = build_trainer(args.config, common + variant.overrides())
            try:
                for phase in args.phases:
                    if phase not in flops:  # the first row is the eager fp32 baseline: count there
                        counted = count_flops(trainer, phase)
                        flops[phase] = {k: v // variant.batch for k, v in counted.items()}
                    row = measure(trainer, phase, variant, args, device, flops[phase]["total"])
                    baseline.setdefault(phase, row["patches_per_s"])
                    row["ratio_vs_baseline"] = round(row["patches_per_s"] / baseline[phase], 3)
                    row["device"] = device_name
                    rows.append(row)
                    print(_line(row), flush=True)
            except torch.cuda.OutOfMemoryError:
                reason = "CUDA out of memory"
                print(f"skipped: {variant.name}: {reason}", flush=True)
                rows.extend({"phase": p, "variant": variant.name, "skipped": reason} for p in args.phases)
            finally:
                restore()
                del trainer
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return {
        "benchmark": "train_speed",
        "environment": env,
        "device": device_name,
        "settings": {
            "config": str(args.config),
            "patch_size": args.patch_size,
            "scale": args.scale,
            "baseline_batch": args.batch_size,
            "batch_sizes": args.batch_sizes,
            "steps": args.steps,
            "warmup": args.warmup,
            "overrides": list(args.set),
            "vgg19_weights": weights,
            "targets_patches_per_s_h100": TARGETS,
        },
        "flops_per_patch": flops,
        "rows": rows,
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['phase']:8s} {row['variant']:42s} batch {row['batch']:4d}: {row['patches_per_s']:10.1f} "
        f"patches/s  x{row['ratio_vs_baseline']:.2f}  {row['tflop_per_s']:.3f} TFLOP/s"
    )


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    env, settings = report["environment"], report["settings"]
    lines = [
        "# training speed (issue #7)",
        "",
        *environment_lines(env),
        f"- device: {report['device']}",
        f"- TF32: cudnn {env['cudnn_allow_tf32']}, matmul {env['matmul_allow_tf32']} (torch defaults)",
        f"- load average at start: {env['load_average_start']}",
        f"- {settings['patch_size']}x{settings['patch_size']} HR patches, x{settings['scale']}, "
        f"config {settings['config']} with {settings['overrides'] or 'no extra overrides'}",
        f"- weights: {env['weights']}; **VGG19: {env['vgg19']}**",
        f"- issue #7 targets (H100, 128x128, x4, batch 16): {TARGETS} patches/s",
        "",
    ]
    columns = ["variant", "batch", "ms_per_step", "data_ms_per_step", "patches_per_s", "ratio_vs_baseline"]
    columns += ["tflop_per_s", "losses_finite", "skipped"]
    extra = sorted({k for row in report["rows"] for k in row} - set(columns) - {"phase", "device"})
    extra = [k for k in extra if k not in ("bf16", "channels_last", "compile", "steps", "profile")]
    for phase, counts in report["flops_per_patch"].items():
        title = "phase 1 (SRResNet, pixel loss)" if phase == "pretrain" else "phase 2 (full SRGAN step)"
        lines += [f"## {title}", "", markdown_table([r for r in report["rows"] if r["phase"] == phase],
                                                    columns + extra), ""]  # fmt: skip
        total = counts["total"]
        parts = [
            {"component": name, "GFLOP_per_patch": round(value / 1e9, 4),
             "share": f"{100 * value / total:.1f}%"}
            for name, value in counts.items()
        ]  # fmt: skip
        lines += ["FLOPs per HR patch (forward + backward, FlopCounterMode):", ""]
        lines += [markdown_table(parts, ["component", "GFLOP_per_patch", "share"]), ""]
        profiled = [r for r in report["rows"] if r["phase"] == phase and "profile" in r]
        if profiled:  # the fastest profiled row of the phase
            row = max(profiled, key=lambda r: r["patches_per_s"])
            lines += profile_lines(f"{row['variant']}, batch {row['batch']}, one step", row["profile"])
    return save_report(report, out, "train_speed", lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for train_speed.json / .md")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "ct.yaml")
    parser.add_argument("--patch-size", type=int, default=128, help="HR patch side")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="batch of the baseline and variants")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[32, 64, 128],
                        help="batches for the device's best variant")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (3 at least with compile)")
    parser.add_argument("--slices", type=int, default=16, help="slices in the synthetic volume")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--threads", type=int, default=0, help="CPU torch threads (0: torch's default)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--profile", action="store_true", help="record each row's top kernels")
    parser.add_argument("--rows", nargs="+", choices=ROW_KEYS, default=list(ROW_KEYS),
                        help="rows to measure (the baseline always runs)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override, as srgan-med train --set")  # fmt: skip
    args = parser.parse_args(argv)
    for name in ("patch_size", "batch_size", "steps", "slices"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.threads < 0 or any(size < 1 for size in args.batch_sizes):
        parser.error("--warmup and --threads must be >= 0, --batch-sizes >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    command = "python " + shlex.join(["benchmarks/train_speed.py", *shown])
    report = run(args, command)
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
