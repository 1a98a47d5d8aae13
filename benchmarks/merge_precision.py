"""One ``gpu_inference.py`` precision report from the rows of several runs.

A run prints each precision row (one scan x model) as a JSON line when it is measured, and its
report holds them all at the end. A run cut short by a device call's time limit before it wrote its
report leaves the rows in its log only. This script gathers the rows from logs (the JSON lines)
and from reports (their ``precision``); a later source's row for the same scan and model replaces
an earlier one. The summary and the Markdown table are ``gpu_inference.py``'s own. The environment
(device, torch, date) is taken from the last report given, so give at least one report from the
same machine.

Usage:
    python benchmarks/merge_precision.py OUT session.log gpu_inference.json [...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_inference  # noqa: E402


def rows_of(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The precision rows in ``path`` (a report, or a log of JSON lines) and the report, if it is one."""
    text = path.read_text()
    try:
        report = json.loads(text)
    except json.JSONDecodeError:
        report = None
    if isinstance(report, dict):
        return list(report.get("precision", [])), report
    rows = []
    for line in text.splitlines():
        if line.startswith('{"scan": '):
            rows.append(json.loads(line))
    return rows, None


def merge(sources: list[Path], command: str) -> dict[str, Any]:
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    base = None
    for path in sources:
        rows, report = rows_of(path)
        base = report or base
        for row in rows:
            merged[(row["scan"], row["model"])] = row
    if base is None:
        raise SystemExit("give at least one gpu_inference.json report (for the device and environment)")
    rows = list(merged.values())
    environment = dict(base["environment"])
    environment["measured_by"] = environment.pop("command")
    return {
        "benchmark": "gpu_inference",
        "environment": environment | {"command": command},
        "device": base["device"],
        "throughput_skipped": "precision rows merged from: " + ", ".join(path.name for path in sources),
        "precision": rows,
        "precision_settings": base.get("precision_settings", ""),
        "precision_summary": gpu_inference.precision_summary(rows),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for gpu_inference_precision.json / .md")
    parser.add_argument("sources", type=Path, nargs="+", help="session logs and gpu_inference.json reports")
    args = parser.parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    report = merge(args.sources, "python " + shlex.join(["benchmarks/merge_precision.py", *shown]))
    gpu_inference.write_report(report, args.out, "gpu_inference_precision")
    return report


if __name__ == "__main__":
    main()
