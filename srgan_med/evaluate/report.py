"""Tables of an evaluation: metrics.csv, slices.csv, summary.json and report.md."""

from __future__ import annotations

import csv
import json
import math
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from srgan_med.evaluate.core import HIGHER_IS_BETTER, METRIC_NAMES, CaseResult
from srgan_med.metrics import SSIM_MIN_SIDE
from srgan_med.stats import compare_paired

BASELINE = "bicubic"
SMALL_SAMPLE = 10  # pairs below which report.md says a bootstrap interval is rough


def _finite_or_none(value: float) -> float | str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _gain(values: list[float], baseline: list[float]) -> dict[str, Any]:
    """Paired gain over the baseline on the pairs where both scores are finite.

    A pair where either reconstruction is exact (infinite PSNR: an empty slice both methods get
    right, say) has no finite gain: it is left out and counted (``excluded``), so one such slice does
    not turn every method's gain into infinity. Where no pair is left and the method itself was
    exact, the gain is reported as ``"inf"``. A pair where either score is NaN (a metric that could
    not be computed: SSIM of a slice smaller than its window) is left out and counted (``unscored``).
    """
    pairs = [(v, b) for v, b in zip(values, baseline, strict=True) if not (math.isnan(v) or math.isnan(b))]
    unscored = len(values) - len(pairs)  # a metric that could not be computed (SSIM of a tiny slice)
    finite = [(v, b) for v, b in pairs if math.isfinite(v) and math.isfinite(b)]
    infinite = len(pairs) - len(finite)
    gain = _gain_of(finite, infinite, [v for v, _ in pairs])
    if unscored:
        gain["unscored"] = unscored
    return gain


def _baseline_gain(values: list[float]) -> dict[str, Any]:
    """Bicubic's own row of the gain table: zero, over the pairs the other methods are scored on."""
    scores = np.asarray(values, dtype=np.float64)
    n = int(np.isfinite(scores).sum())
    gain = {
        "n": n,
        "mean_gain": 0.0 if n else None,  # as for the other methods: nothing scored, no gain
        "ci_low": 0.0 if n >= 2 else None,  # and no interval from one pair
        "ci_high": 0.0 if n >= 2 else None,
        "wilcoxon_p": None,
    }
    if np.isnan(scores).any():
        gain["unscored"] = int(np.isnan(scores).sum())
    return gain


def _gain_of(finite: list[tuple[float, float]], infinite: int, values: list[float]) -> dict[str, Any]:
    """The gain of :func:`_gain` over the ``finite`` pairs; ``values``: the method's scored values."""
    if not finite and any(math.isinf(v) and v > 0 for v in values):
        return {
            "n": len(values),
            "mean_gain": "inf",
            "ci_low": None,
            "ci_high": None,
            "wilcoxon_p": None,
            "note": "a perfect reconstruction (infinite PSNR) has no finite mean gain",
        }
    if not finite:
        return {"n": 0, "mean_gain": None, "ci_low": None, "ci_high": None, "wilcoxon_p": None}
    comparison = compare_paired([p[0] for p in finite], [p[1] for p in finite])
    gain = {key: _finite_or_none(value) for key, value in comparison.__dict__.items()}
    if infinite:
        gain["excluded"] = infinite
        gain["note"] = f"{infinite} pair(s) with an exact reconstruction (infinite PSNR) left out"
    return gain


def summarise(results: list[CaseResult], methods: list[str]) -> dict[str, Any]:
    """Per method: mean of each metric (mask region if present), PSNR/SSIM gains over bicubic and,
    where the reconstructions were clamped, the mean fraction of voxels clamped."""
    clip = all(result.clipped is not None for result in results)
    region = "mask" if any(r["region"] == "mask" for res in results for r in res.rows) else "whole"
    # region -> method -> metric -> one value per volume
    by_region: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for result in results:
        for row in result.rows:
            for name in METRIC_NAMES:
                by_region[row["region"]][row["method"]][name].append(float(row[name]))
    by_method, whole = by_region[region], by_region["whole"]
    slices: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        for row in result.slice_rows:
            for name in ("psnr", "ssim"):
                slices[row["method"]][name].append(float(row[name]))
    summary: dict[str, Any] = {
        "region": region,
        "volumes": [r.name for r in results],
        "clip": clip,
        "methods": {},
    }
    for method in methods:
        entry: dict[str, Any] = {"mean": {}, "mean_whole_volume": {}}
        unscored = {name: int(np.isnan(by_method[method][name]).sum()) for name in METRIC_NAMES}
        if any(unscored.values()):  # left out of the means and gains, and said
            entry["unscored_volumes"] = {name: count for name, count in unscored.items() if count}
        if clip:
            entry["clipped_fraction"] = float(np.mean([r.clipped[method] for r in results]))
        for key, source in (("mean", by_method), ("mean_whole_volume", whole)):
            for name in METRIC_NAMES:
                values = np.asarray(source[method][name], dtype=np.float64)
                values = values[~np.isnan(values)]
                entry[key][name] = _finite_or_none(float(np.mean(values))) if values.size else None
        if BASELINE in by_method and method != BASELINE:
            entry["gain_over_bicubic"] = {
                f"{name}_{level}": _gain(source[method][name], source[BASELINE][name])
                for name in ("psnr", "ssim")
                for level, source in (("volumes", by_method), ("slices", slices))
            }
        elif method == BASELINE:
            entry["gain_over_bicubic"] = {
                f"{name}_{level}": _baseline_gain(source[method][name])
                for name in ("psnr", "ssim")
                for level, source in (("volumes", by_method), ("slices", slices))
            }
        summary["methods"][method] = entry
    if any(not result.mask_found for result in results):
        summary["mask_not_found"] = [result.name for result in results if not result.mask_found]
    if any(result.flat_slices for result in results):
        summary["flat_reference_slices"] = {r.name: r.flat_slices for r in results if r.flat_slices}
    if any(result.degradation for result in results):
        summary["degradations"] = {r.name: r.degradation for r in results if r.degradation}
    return summary


def write_tables(results: list[CaseResult], summary: dict[str, Any], out: Path, command: str) -> list[Path]:
    """Write metrics.csv, slices.csv, summary.json and report.md into ``out``."""
    columns = ["volume", "method", "region", "data_range", *METRIC_NAMES]
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for result in results:
            writer.writerows({key: row[key] for key in columns} for row in result.rows)
    with open(out / "slices.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["volume", "method", "slice", "psnr", "ssim"])
        writer.writeheader()
        for result in results:
            writer.writerows(result.slice_rows)
    versions = _versions()
    summary = {**summary, "command": command, "versions": versions}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(_markdown(summary, command, versions) + _per_volume_markdown(results))
    return [out / name for name in ("metrics.csv", "slices.csv", "summary.json", "report.md")]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("srgan-med", "torch", "monai", "scikit-image", "numpy", "scipy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _per_volume_markdown(results: list[CaseResult]) -> str:
    """PSNR / SSIM / MAE of every volume and method, each in its own units (HU for CT)."""
    lines = [
        "## Per volume",
        "",
        "| volume | modality | data range | method | region | PSNR | SSIM | MAE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result.rows:
            lines.append(
                f"| {result.name} | {result.modality} | {_fmt(result.data_range, 1)} | {row['method']} | "
                f"{row['region']} | {_fmt(row['psnr'], 3)} | {_fmt(row['ssim'], 4)} | {_fmt(row['mae'], 2)} |"
            )
    return "\n".join(lines) + "\n"


def _left_out(gain: dict[str, Any]) -> str:
    said = (("excluded", "exact"), ("unscored", "unscored"))
    parts = [f"{gain[key]} {word}" for key, word in said if gain.get(key)]
    return f" ({', '.join(parts)} left out)" if parts else ""


def _fmt_draw(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt_draw(item) for item in value)
    return str(value)


def _describe_draws(draws: dict[str, Any]) -> str:
    """One line of a simulated degradation's draws: ``blur: profile gaussian, fwhm_mm 1.17; ...``."""
    from srgan_med.degrade.blur import shown_draws

    steps = []
    for step, fields in shown_draws(draws).items():
        shown = [
            f"{key} {_fmt_draw(value)}"
            for key, value in (fields.items() if isinstance(fields, dict) else [("value", fields)])
            if not key.endswith("seed") and not key.endswith("_normalised")
        ]
        steps.append(f"{step}: {', '.join(shown)}")
    return "; ".join(steps)


def _fmt_p(value: Any) -> str:
    return "n/a" if value is None or isinstance(value, str) else f"{value:.2g}"


def _markdown(summary: dict[str, Any], command: str, versions: dict[str, str]) -> str:
    arrows = {name: "↑" if HIGHER_IS_BETTER[name] else "↓" for name in METRIC_NAMES}
    lines = [
        "# srgan-med evaluation",
        "",
        f"Volumes: {', '.join(summary['volumes'])}. Metrics over the {summary['region']} region "
        "(means over volumes; MAE is in each volume's units, so compare it within one modality, "
        "per volume below).",
        "",
        "| method | " + " | ".join(f"{name.upper()} {arrows[name]}" for name in METRIC_NAMES) + " |",
        "|---|" + "---|" * len(METRIC_NAMES),
    ]
    for method, entry in summary["methods"].items():
        lines.append(f"| {method} | " + " | ".join(_fmt(entry["mean"][n], 4) for n in METRIC_NAMES) + " |")
    if summary["region"] == "mask":  # the same means over the whole volume, background included
        lines += [
            "",
            "Over the whole volume:",
            "",
            "| method | " + " | ".join(f"{name.upper()} {arrows[name]}" for name in METRIC_NAMES) + " |",
            "|---|" + "---|" * len(METRIC_NAMES),
        ]
        for method, entry in summary["methods"].items():
            means = entry["mean_whole_volume"]
            lines.append(f"| {method} | " + " | ".join(_fmt(means[n], 4) for n in METRIC_NAMES) + " |")
    unscored = {
        name: count
        for entry in summary["methods"].values()
        for name, count in entry.get("unscored_volumes", {}).items()
    }
    if unscored:
        said = ", ".join(f"{name.upper()} of {count}" for name, count in unscored.items())
        reasons = {
            "ssim": f"SSIM needs slices of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} voxels, and a mask "
            f"reaching past the slices' {(SSIM_MIN_SIDE - 1) // 2}-voxel border",
            "hfen": "HFEN is undefined on a flat reference",
        }
        why = "; ".join(reason for name, reason in reasons.items() if name in unscored)
        lines += [
            "",
            f"Not computable, so left out of the means and gains: {said} of {len(summary['volumes'])} "
            f"volume(s) ({why}; per volume below).",
        ]
    if summary.get("mask_not_found"):
        lines += [
            "",
            "The automatic mask found no foreground in "
            f"{', '.join(summary['mask_not_found'])}: its mask region is the whole volume.",
        ]
    if summary.get("flat_reference_slices"):
        counts = ", ".join(f"{volume}: {n}" for volume, n in summary["flat_reference_slices"].items())
        lines += [
            "",
            f"Reference slices of one value (padding, all air; {counts}) are left out of the "
            "per-slice scores and gains (counted as unscored): PSNR there measures only round-off.",
        ]
    if "auto_models" in summary:
        picked = "; ".join(f"{volume}: {model}" for volume, model in summary["auto_models"].items())
        lines += ["", f"`auto` is the shipped model of each volume's modality and scale ({picked})."]
    if summary.get("clip"):
        clamped = ", ".join(
            f"{method} {100 * entry['clipped_fraction']:.2f}%" for method, entry in summary["methods"].items()
        )
        lines += [
            "",
            "Every reconstruction was clamped as `srgan-med enhance` clamps its output: at its low-res "
            "input's minimum and its stored type's maximum (`--no-clip`: scored as computed). "
            "Voxels clamped, mean over volumes: "
            f"{clamped}.",
        ]
    else:
        lines += ["", "Reconstructions scored as computed, not clamped (--no-clip)."]
    lines += [
        "",
        "## Gain over bicubic (mean, bootstrap 95% CI, Wilcoxon signed-rank p)",
        "",
        "| method | measure | n | mean gain | 95% CI | p |",
        "|---|---|---|---|---|---|",
    ]
    for method, entry in summary["methods"].items():
        for measure, gain in entry.get("gain_over_bicubic", {}).items():
            interval = (
                "n/a" if gain["ci_low"] is None else f"[{_fmt(gain['ci_low'])}, {_fmt(gain['ci_high'])}]"
            )
            lines.append(
                f"| {method} | {measure} | {gain['n']}{_left_out(gain)} | {_fmt(gain['mean_gain'])} | "
                f"{interval} | {_fmt_p(gain['wilcoxon_p'])} |"
            )
    if any(
        2 <= gain["n"] < SMALL_SAMPLE
        for entry in summary["methods"].values()
        for gain in entry.get("gain_over_bicubic", {}).values()
        if gain.get("wilcoxon_p") is not None
    ):
        lines += [
            "",
            f"Intervals from fewer than {SMALL_SAMPLE} pairs are rough: a percentile bootstrap "
            "cannot reach beyond the gains observed. With one pair there is no interval (n/a).",
        ]
    if summary.get("degradations"):
        lines += ["", "## Simulated low-res inputs", ""]
        lines += [
            f"- {volume}: {_describe_draws(draws)}" for volume, draws in summary["degradations"].items()
        ]
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
    ]
    return "\n".join(lines)
