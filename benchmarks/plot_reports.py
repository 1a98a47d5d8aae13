"""Figures from benchmark JSON reports: each timed row as a bar, beside issue #7's target.

For each ``*.json`` of ``gpu_inference.py`` (its throughput part: slices/s) or ``train_speed.py``
(phase 1 and phase 2: patches/s) in ``source``, one PNG in ``dest`` named after the JSON file: a
horizontal bar per timed row (the same numbers as the report's tables, nothing else), the naive
baseline in grey, the target as a dashed line, and the device, date and command of the run in the
title. Rows that were skipped are left out; a report with no timed row gives no figure.

Usage:
    python benchmarks/plot_reports.py docs/results/h100-2026-11-26 docs/results/h100-2026-11-26
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import saved_reports  # noqa: E402
from gpu_inference import TARGET_SLICES_PER_S  # noqa: E402
from train_speed import TARGETS as TRAINING_TARGETS  # noqa: E402

TARGETS = {"inference": TARGET_SLICES_PER_S, **TRAINING_TARGETS}  # issue #7's, as the scripts state them
PANELS = {
    "inference": "x4 inference, 128x128 slices (slices/s)",
    "pretrain": "phase 1: SRResNet, pixel loss (HR patches/s)",
    "gan": "phase 2: full SRGAN step (HR patches/s)",
}


def _label(row: dict[str, Any]) -> str:
    """The row's variant, with its batch unless the variant names it already."""
    variant = str(row["variant"])
    return variant if f"batch {row['batch']}" in variant else f"{variant}, batch {row['batch']}"


def panels(report: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """``{panel: [(label, value), ...]}`` of a report's timed rows, in the report's order."""
    if report.get("benchmark") == "gpu_inference":
        rows = (report.get("throughput") or {}).get("rows", [])
        timed = [(_label(row), row["slices_per_s"]) for row in rows if row.get("slices_per_s")]
        return {"inference": timed} if timed else {}
    if report.get("benchmark") == "train_speed":
        found: dict[str, list[tuple[str, float]]] = {}
        for row in report.get("rows", []):
            if row.get("patches_per_s"):
                found.setdefault(row["phase"], []).append((_label(row), row["patches_per_s"]))
        return found
    return {}


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """The report's figure at ``path``, or ``None`` when it has no timed row."""
    found = panels(report)
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [1.0 + 0.42 * len(rows) for rows in found.values()]
    figure, axes = plt.subplots(
        len(found), 1, figsize=(11, sum(heights) + 1.2), gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    for axis, (panel, rows) in zip(axes[:, 0], found.items(), strict=True):
        labels = [textwrap.fill(label, 64, max_lines=2, placeholder="...") for label, _ in rows]
        values = [value for _, value in rows]
        colours = ["0.6" if label.startswith("baseline") else "tab:blue" for label, _ in rows]
        positions = list(range(len(rows)))[::-1]  # the report's first row on top
        axis.barh(positions, values, color=colours)
        for position, value in zip(positions, values, strict=True):
            axis.text(value, position, f" {value:,.0f}", va="center", fontsize=7)
        target = TARGETS[panel]
        axis.axvline(target, color="tab:red", linestyle="--", linewidth=1)
        axis.set_yticks(positions, labels, fontsize=7)
        axis.set_xlim(0, max([*values, target]) * 1.15)
        axis.set_title(f"{PANELS[panel]}; red dashes: issue #7 target, {target:,.0f}", fontsize=9, loc="left")
    environment = report.get("environment", {})
    command = textwrap.fill(f"command: {environment.get('command', '?')}", 150)
    figure.suptitle(
        f"{report.get('device', '?')}, {environment.get('date', '?')}\n{command}",
        fontsize=7,
        x=0.01,
        ha="left",
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    dest, reports = saved_reports(__doc__.splitlines()[0], "PNG figures", argv)
    written = []
    for path, report in reports:
        figure = plot(report, dest / f"{path.stem}.png")
        if figure is not None:
            print(f"wrote {figure}")
            written.append(figure)
    return written


if __name__ == "__main__":
    main()
