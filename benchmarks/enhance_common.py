"""What the benchmarks share: a random-init model bundle, a synthetic CT, the environment, the report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

RANDOM_WEIGHTS_NOTE = (
    "randomly initialised generator of the size stated (not a shipped model); speed and memory do not depend "
    "on weight values"
)


def random_bundle(path: Path, scale: int, blocks: int, width: int, seed: int = 0) -> Path:
    """Save a random-init SRResNet bundle (CT window preset) at ``path``, as the enhance tests do."""
    import torch

    from srgan_med.degrade.config import NormaliseConfig
    from srgan_med.models.bundle import save_bundle
    from srgan_med.nets import SRResNet

    torch.manual_seed(seed)
    generator = SRResNet(scale=scale, blocks=blocks, width=width)
    return save_bundle(
        path,
        generator,
        architecture={"name": "srresnet", "kwargs": {"scale": scale, "blocks": blocks, "width": width}},
        scale=scale,
        modality="CT",
        normalisation=NormaliseConfig("window", (-1000.0, 2000.0)),
        card={"summary": "random-init benchmark model (NOT trained)", "weights": "random"},
        overwrite=True,
    )


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """``(I, J, K)`` int16 HU: air, a water-like elliptic body with a bone ring and noise.

    Built slice by slice so the only full-size array is the int16 result.
    """
    rng = np.random.default_rng(seed)
    size_i, size_j, count = shape
    i, j = np.meshgrid(np.linspace(-1, 1, size_i), np.linspace(-1, 1, size_j), indexing="ij")
    radius = np.hypot(i / 0.85, j / 0.7)
    base = np.where(radius < 1.0, 40.0, -1000.0)
    base = np.where((radius > 0.8) & (radius < 0.9), 900.0, base).astype(np.float32)
    volume = np.empty(shape, dtype=np.int16)
    for k in range(count):
        volume[:, :, k] = np.rint(base + rng.normal(0.0, 20.0, base.shape)).astype(np.int16)
    return volume


def write_synthetic_ct(path: Path, shape: tuple[int, int, int], spacing_mm=(0.7, 0.7, 2.5)) -> Path:
    """Write :func:`synthetic_ct` as int16 NIfTI; the coarsest spacing is the slice axis (K)."""
    import nibabel as nib

    image = nib.Nifti1Image(synthetic_ct(shape), np.diag([*spacing_mm, 1.0]))
    image.header.set_xyzt_units(xyz="mm")
    nib.save(image, str(path))
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Device names, versions, threads, load, date and the exact command line."""
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + shlex.join(sys.argv),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "weights": RANDOM_WEIGHTS_NOTE,
    }
    try:
        from srgan_med import __version__

        info["srgan_med"] = __version__
    except ImportError:
        pass
    return info


def device_label(device, env: dict[str, Any]) -> str:
    """The device a report's rows ran on: the GPU's name, or ``CPU: <model>`` from ``env``."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {env['cpu']}"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def environment_lines(env: dict[str, Any]) -> list[str]:
    """The Markdown header lines every report starts with: date, exact command, CPU, versions."""
    return [
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- CPU: {env['cpu']} ({env['cpu_count']} cores), {env['torch_threads']} torch threads",
        f"- torch {env['torch']}, srgan-med {env.get('srgan_med', '?')}, Python {env['python']}",
    ]


def save_report(report: dict[str, Any], out: Path, name: str, lines: list[str]) -> tuple[Path, Path]:
    """Write ``out/name.json`` (the report) and ``out/name.md`` (``lines``), print the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text("\n".join(lines))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return json_path, md_path


CONVOLUTION_KERNELS = ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm", "xmma", "cutlass", "gemm", "cudnn")
# Kernels whose names carry one of those words but do no matrix work: Inductor's pointwise, reduction
# and persistent-reduction kernels are named after the operators they fuse ("..._convolution_view"),
# and cuDNN's layout and padding kernels. (Inductor's templates, "triton_tem_", are convolutions.)
NOT_CONVOLUTION_KERNELS = ("triton_poi", "triton_red", "triton_per", "nchwtonhwc", "nhwctonchw", "addpadding")


def saved_reports(
    description: str, made: str, argv: list[str] | None
) -> tuple[Path, list[tuple[Path, dict]]]:
    """The command line of the scripts that remake something from saved JSON reports (``SOURCE
    DEST``): ``DEST`` and each ``SOURCE/*.json`` with its parsed report, in name order."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("source", type=Path, help="folder of JSON reports")
    parser.add_argument("dest", type=Path, help=f"folder for the {made}")
    args = parser.parse_args(argv)
    return args.dest, [(path, json.loads(path.read_text())) for path in sorted(args.source.glob("*.json"))]


def is_convolution_kernel(name: str) -> bool:
    """Whether a profiled kernel or operator name is a convolution or matrix product."""
    name = name.lower()
    return any(k in name for k in CONVOLUTION_KERNELS) and not any(k in name for k in NOT_CONVOLUTION_KERNELS)


def kernel_profile(call, device, passes: int = 3, top: int = 12) -> dict[str, Any]:
    """Where one call's time goes: the ``top`` kernels (CUDA) or operators (CPU) by self time.

    ``torch.profiler`` over ``passes`` calls of ``call()`` after one warm-up call (grad mode is the
    caller's: wrap inference in ``torch.inference_mode``). Each row: name (cut to 90 characters),
    calls and microseconds per pass, share of the total; plus the share of all convolution / matrix
    kernels (by name). So a GPU session records what bounds a figure, not only the figure.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    call()
    sync()
    with profile(activities=activities) as trace:
        for _ in range(passes):
            call()
        sync()
    wanted = DeviceType.CUDA if cuda else DeviceType.CPU
    events = [e for e in trace.key_averages() if e.device_type == wanted]

    def self_us(event) -> float:
        return float(event.self_device_time_total if cuda else event.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    events.sort(key=self_us, reverse=True)
    convolution = sum(self_us(e) for e in events if is_convolution_kernel(e.key))
    return {
        "kind": "CUDA kernels" if cuda else "CPU operators",
        "passes": passes,
        "us_per_pass": round(total / passes, 1),
        "convolution_share": f"{convolution / total:.1%}",
        "rows": [
            {
                "name": e.key[:90],
                "calls_per_pass": round(e.count / passes, 2),
                "us_per_pass": round(self_us(e) / passes, 1),
                "share": f"{self_us(e) / total:.1%}",
            }
            for e in events[:top]
        ],
    }


def profile_lines(name: str, profile: dict[str, Any]) -> list[str]:
    """A :func:`kernel_profile` as a Markdown section."""
    return [
        f"### where the time goes: {name} ({profile['kind']}, {profile['us_per_pass']:.0f} us per pass, "
        f"{profile['convolution_share']} in convolution/matrix kernels)",
        "",
        markdown_table(profile["rows"], ["name", "calls_per_pass", "us_per_pass", "share"]),
        "",
    ]
