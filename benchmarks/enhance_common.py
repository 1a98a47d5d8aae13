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
