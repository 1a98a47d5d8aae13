"""Markdown tables again from benchmark JSON reports (those a GPU session brought back).

Each ``*.json`` written by ``gpu_inference.py``, ``enhance_speed.py``, ``enhance_overhead.py``,
``train_speed.py`` or ``traffic.py`` is given to that script's own ``write_report``; the Markdown lands in
``DEST/<json stem>/``.

Usage:
    python benchmarks/render_reports.py bench_out/ docs/gpu_reports/
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_common import saved_reports  # noqa: E402

WRITERS = {
    name: name for name in ("gpu_inference", "enhance_speed", "enhance_overhead", "train_speed", "traffic")
}


def main(argv: list[str] | None = None) -> list[Path]:
    dest, reports = saved_reports(__doc__.splitlines()[0], "Markdown", argv)
    written = []
    for path, report in reports:
        module = WRITERS.get(report.get("benchmark", ""))
        if module is None:
            print(f"skip {path}: not a benchmark report")
            continue
        _, markdown = importlib.import_module(module).write_report(report, dest / path.stem)
        written.append(markdown)
    return written


if __name__ == "__main__":
    main()
