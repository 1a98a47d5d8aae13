"""Bytes moved beside the FLOPs (issue #7: "count first: FLOPs ... and the bytes moved; divide by the
measured matrix rate of the GPU to know the ceiling").

torch counts FLOPs (``torch.utils.flop_counter.FlopCounterMode``) but has no counter of memory
traffic, hence :class:`ByteCounterMode`, a dispatch mode written here: every aten operator that is not
a view reads each tensor it is given and writes each tensor it returns, once. That is the traffic of
eager execution with no fusion and no cache reuse between operators (a convolution's own re-reads of
its input are not counted): what eager PyTorch moves at least, and what a compiler can remove by fusing
pointwise operators into their neighbours.

Rows (per 128x128 low-res slice for inference, per 128x128 high-res patch for training, x4):

- inference: the plain generator (fp32, one slice per pass) and the engine's generator
  (:func:`srgan_med.enhance.inference.prepare_for_inference`) in strict fp32 and in bf16;
- training, phase 1 and phase 2, fp32 and bf16 autocast, with each network's share (as
  ``train_speed.py`` counts FLOPs: each network's passes counted on copies of the trainer's modules).

With ceilings (``--ceilings`` naming a ``gpu_inference.json`` that measured them, or measured here on
CUDA), each bf16 row also gets its two bounds in items/s: the bf16 matrix rate over the FLOPs and the
copy bandwidth over the bytes; the lower of the two is the row's ceiling for unfused eager execution.

Counted on the device it runs on: autocast's lists of bf16 operators differ a little between CPU and
CUDA, so the GPU session recounts (``--device cuda``).

Usage:
    python benchmarks/traffic.py --out bench_out/ --ceilings docs/results/gpu-2026-11-26/gpu_inference.json
    python benchmarks/traffic.py --out bench_out/ --device cuda      # counts and ceilings on the GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import (  # noqa: E402
    device_label,
    environment,
    environment_lines,
    markdown_table,
    save_report,
    write_synthetic_ct,
)

REPO = Path(__file__).resolve().parents[1]


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes an operator touches reading or writing ``tensor``: an expanded tensor (stride 0) is read
    from its smaller storage."""
    size = tensor.numel() * tensor.element_size()
    try:
        return min(size, tensor.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # tensors without a plain storage
        return size


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [value for value in tree_flatten(tree)[0] if isinstance(value, torch.Tensor)]


def _pointer(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class ByteCounterMode(TorchDispatchMode):
    """Counts ``read`` and ``written`` bytes of every non-view aten operator run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0
        self.written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func.is_view or func.overloadpacket in _NO_TRAFFIC:
            return result
        inputs = _tensors((args, kwargs))
        # written: the arguments the operator mutates (in-place and out= forms, fused optimisers)...
        mutated = []
        for index, argument in enumerate(func._schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                mutated += _tensors(args[index] if index < len(args) else kwargs.get(argument.name))
        # ...and the results that are new memory, not an input handed back (add_, _unsafe_view)
        pointers = {_pointer(t) for t in inputs}
        fresh = [t for t in _tensors(result) if _pointer(t) not in pointers]
        self.read += sum(_tensor_bytes(t) for t in inputs)
        self.written += sum(_tensor_bytes(t) for t in mutated + fresh)
        return result

    @property
    def total(self) -> int:
        return self.read + self.written


# Operators that allocate or only describe memory.
_NO_TRAFFIC = {
    torch.ops.aten.empty,
    torch.ops.aten.empty_like,
    torch.ops.aten.empty_strided,
    torch.ops.aten.lift_fresh,
    torch.ops.aten.detach,
    torch.ops.aten.alias,
    torch.ops.aten._local_scalar_dense,
    torch.ops.aten.is_same_size,
}


def bytes_moved(function: Callable[[], Any]) -> int:
    counter = ByteCounterMode()
    with counter:
        function()
    return counter.total


def flops(function: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return int(counter.get_total_flops())


def _per_item(at_one: dict[str, tuple[int, int]], at_two: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """Split counts made at batch 1 and 2 into a cost per item (slice or patch) and a cost per pass
    or step that does not grow with the batch (weights, their bf16 copies, optimiser updates)."""
    split = {}
    for part in at_one:
        (flops_1, bytes_1), (flops_2, bytes_2) = at_one[part], at_two[part]
        split[part] = {
            "gflop": (flops_2 - flops_1) / 1e9,
            "gb": (bytes_2 - bytes_1) / 1e9,
            "gflop_fixed": (2 * flops_1 - flops_2) / 1e9,
            "gb_fixed": (2 * bytes_1 - bytes_2) / 1e9,
        }
    return split


def inference_rows(device: torch.device, size: int) -> list[dict[str, Any]]:
    """FLOPs and bytes per slice (and per pass) of the plain generator and the engine's, per precision."""
    from srgan_med.enhance.inference import prepare_for_inference
    from srgan_med.nets import SRResNet

    torch.manual_seed(0)
    plain = SRResNet(scale=4, blocks=16, width=64, channels=1).to(device).eval()
    networks = {"plain generator, fp32 eager NCHW": (plain, "fp32")}
    for precision in ("fp32", "bf16"):
        engine = prepare_for_inference(plain, device, precision=precision)
        networks[f"engine, {engine.precision}"] = (engine, precision)
    counts: dict[int, dict[str, tuple[int, int]]] = {}
    for batch in (1, 2):
        low_res = torch.randn(batch, 1, size, size, device=device)
        counts[batch] = {}
        for name, (network, _) in networks.items():

            def run(network=network, low_res=low_res):
                with torch.inference_mode():
                    network(low_res)

            counts[batch][name] = (flops(run), bytes_moved(run))
    split = _per_item(counts[1], counts[2])
    return [
        {"what": "inference", "variant": name, "precision": networks[name][1], "per": "slice", **split[name]}
        for name in networks
    ]


def _training_counts(device: torch.device, patch: int, batch: int, bf16: bool, folder: Path, scan: Path):
    """``{phase: {part: (flops, bytes)}}`` of one real step at ``batch``."""
    from train_speed import build_trainer, count_flops, start_phase, vgg_weights

    weights, _ = vgg_weights()
    overrides = [
        f"output_dir={folder / f'run_{int(bf16)}_{batch}'}",
        f"data.train={json.dumps([str(scan)])}",
        f"data.validation={json.dumps([str(scan)])}",
        "data.validation_slices=1",
        f"data.patch_size={patch}",
        "scale=4",
        f"data.batch_size={batch}",
        f"losses.perceptual.weights={weights}",
        f"performance.device={device.type}",
        "performance.deterministic=false",
        f"performance.bf16={str(bf16).lower()}",
        f"performance.channels_last={str(device.type == 'cuda').lower()}",
        "performance.compile=false",
    ]
    trainer, restore = build_trainer(REPO / "configs" / "ct.yaml", overrides)
    counts = {}
    try:
        for phase in ("pretrain", "gan"):
            start_phase(trainer, phase)
            torch.manual_seed(0)  # the same degradation draw for both counts
            counted_flops = count_flops(trainer, phase)
            torch.manual_seed(0)
            counted_bytes = count_flops(trainer, phase, measure=bytes_moved)
            counts[phase] = {part: (counted_flops[part], counted_bytes[part]) for part in counted_flops}
    finally:
        restore()
    return counts


def training_rows(device: torch.device, patch: int) -> list[dict[str, Any]]:
    """FLOPs and bytes per HR patch (and per step) of a real trainer's phase-1 and phase-2 steps, with
    each network's share (``train_speed.count_flops`` with this module's counters)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        side = max(2 * patch, 64)
        scan = write_synthetic_ct(folder / "ct.nii", (side, side, 4), spacing_mm=(0.7, 0.7, 1.0))
        for bf16 in (False, True):
            at_one = _training_counts(device, patch, 1, bf16, folder, scan)
            at_two = _training_counts(device, patch, 2, bf16, folder, scan)
            for phase in ("pretrain", "gan"):
                split = _per_item(at_one[phase], at_two[phase])
                for part, values in split.items():
                    part = "optimisers, losses, casts (the rest)" if part == "unattributed" else part
                    rows.append(
                        {
                            "what": f"training, phase {1 if phase == 'pretrain' else 2}",
                            "variant": part,
                            "precision": "bf16" if bf16 else "fp32",
                            "per": "HR patch",
                            **values,
                        }
                    )
    return rows


def add_bounds(rows: list[dict[str, Any]], ceilings: dict[str, float] | None, batches: list[int]) -> None:
    """Per row: FLOP per byte; for the bf16 totals and inference rows, with ceilings, the matrix and
    memory bounds (items/s) at each batch of ``batches`` (the per-pass cost shared by the batch)."""
    for row in rows:
        row["flop_per_byte"] = round(row["gflop"] / row["gb"], 1) if row["gb"] > 0 else None
        bounded = row["variant"] == "total" or row["what"] == "inference"
        if ceilings and row["precision"] == "bf16" and bounded:
            for batch in batches:
                gflop = row["gflop"] + row["gflop_fixed"] / batch
                gb = row["gb"] + row["gb_fixed"] / batch
                matrix = ceilings["bf16_matmul_tflop_per_s"] * 1e3 / gflop
                memory = ceilings["copy_gb_per_s"] / gb
                row[f"bound_b{batch}"] = (
                    f"{min(matrix, memory):,.0f} ({'memory' if memory < matrix else 'matrix'})"
                )
        for key in ("gflop", "gflop_fixed"):
            row[key] = round(row[key], 3)
        for key in ("gb", "gb_fixed"):
            row[key] = round(row[key], 4)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for traffic.json / .md")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, default=128, help="low-res slice side (inference)")
    parser.add_argument("--patch", type=int, default=128, help="HR patch side (training)")
    parser.add_argument(
        "--bound-batches", type=int, nargs="+", default=[16, 256], help="batches of the bounds"
    )
    parser.add_argument("--ceilings", type=Path, help="a gpu_inference.json whose measured ceilings to use")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    env = environment()
    ceilings, source = None, None
    if args.ceilings:
        ceilings = json.loads(args.ceilings.read_text())["throughput"]["ceilings"]
        source = f"measured by gpu_inference.py, {args.ceilings}"
    elif device.type == "cuda":
        from gpu_inference import ceilings as measure_ceilings

        ceilings, source = measure_ceilings(), f"measured here on {torch.cuda.get_device_name(device)}"
    rows = inference_rows(device, args.size)
    if not args.skip_training:
        rows += training_rows(device, args.patch)
    add_bounds(rows, ceilings, args.bound_batches)
    report = {
        "benchmark": "traffic",
        "environment": env,
        "device": device_label(device, env),
        "settings": {"size": args.size, "patch": args.patch, "bound_batches": args.bound_batches},
        "ceilings": ceilings,
        "ceilings_source": source,
        "rows": rows,
    }
    write_report(report, args.out)
    return report


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/traffic.json`` and ``.md`` (also used by ``render_reports.py``)."""
    settings, ceilings = report["settings"], report["ceilings"]
    columns = [
        "what",
        "variant",
        "precision",
        "per",
        "gflop",
        "gb",
        "flop_per_byte",
        "gflop_fixed",
        "gb_fixed",
    ]
    if ceilings:
        columns += [f"bound_b{batch}" for batch in settings["bound_batches"]]
    lines = [
        "# FLOPs and bytes moved (unfused eager)",
        "",
        *environment_lines(report["environment"]),
        f"- counted on: {report['device']}",
        f"- inference: {settings['size']}x{settings['size']} low-res slices, x4 SRResNet 16 x 64; training: "
        f"{settings['patch']}x{settings['patch']} HR patches, configs/ct.yaml",
        "- gflop, gb: per item (slice or patch); gflop_fixed, gb_fixed: per pass or step whatever the batch "
        "(weights, their bf16 copies, optimiser updates); both from counts at batch 1 and 2",
        "- bytes: every non-view aten operator reads its tensor arguments and writes its results once",
        f"- ceilings: {ceilings} ({report['ceilings_source']}); bound_bN: the lower of matrix rate / FLOPs "
        "and copy bandwidth / bytes, items/s at batch N"
        if ceilings
        else "- ceilings: none given",
        "",
        markdown_table(report["rows"], columns),
        "",
    ]
    return save_report(report, out, "traffic", lines)


if __name__ == "__main__":
    main()
