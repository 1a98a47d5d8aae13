"""What clamping the output does: how many voxels it touches and what it does to the scores.

``srgan-med enhance`` clamps its output at the input's minimum and at its stored type's maximum
(:func:`srgan_med.enhance.run.clamp_range`), and ``srgan-med evaluate`` scores every method clamped
the same way (``--no-clip`` turns both off). This measures that choice on the setting of
``benchmarks/model_quality.py``: each shipped model, the public scans of its modality, the three
degradation families, the simulated low-res inputs of ``evaluate`` (same seed). Each pair is scored
by :func:`srgan_med.evaluate.core.evaluate_case` (evaluate's own scoring, mask and data range) from
the same reconstructions three ways: as computed, clamped as ``enhance`` clamps, and clamped to the
low-res input's full range (minimum to maximum: the rejected alternative, which cuts peaks).

Usage::

    python benchmarks/clip_effect.py --out runs/clip_effect

Writes ``OUT/clip_effect.md`` (tables, device, date, exact command) and ``OUT/clip_effect.json``;
``--report-only`` writes the ``.md`` again from the ``.json`` (a new layout of the same rows).
The second table says where the model's voxels below the floor lie (inside or outside evaluate's
foreground mask) and the background's level and spread in the reference, the model and bicubic.
Exit code 2 with one line ``error: ...`` when there is nothing to measure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_quality import (  # noqa: E402 - the benchmarks folder is not a package
    DEFAULT_SCANS,
    FAMILIES,
    FAMILY_DIR,
    BenchmarkError,
    central_slices,
    device_description,
    find_scans,
    model_info,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="model (default: every shipped one)")
    parser.add_argument("--scans", type=Path, default=DEFAULT_SCANS, help="folder of public *.nii.gz scans")
    parser.add_argument("--max-slices", type=int, default=0, help="central slices per scan (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated degradations")
    parser.add_argument("--out", type=Path, default=Path("runs/clip_effect"), help="output folder")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write OUT/clip_effect.md again from OUT/clip_effect.json (its rows, "
        "date, device and command)",
    )
    return parser.parse_args(argv)


def _replayed(method):
    """``method`` computed once per case and replayed: both scorings see the same reconstruction."""
    last: list = [None, None]  # the input (held, so its identity stays its own) and its result

    def replay(low_res, factors, slice_axis):
        if last[0] is not low_res:
            last[:] = [low_res, method(low_res, factors, slice_axis)]
        return last[1].copy()

    return replay


def _within_input_range(method):
    """``method``'s reconstruction clamped to its low-res input's minimum and maximum."""

    def clamped(low_res, factors, slice_axis):
        return np.clip(method(low_res, factors, slice_axis), float(low_res.min()), float(low_res.max()))

    return clamped


def _where_clamped(case, raw) -> dict:
    """Where the voxels below the clamp floor lie, and the background levels around them.

    ``raw`` is the unclamped scoring of ``case``; background is outside its foreground mask
    (evaluate's head/body mask). Levels are given as fractions of evaluate's data range: the
    reference's mean there, and each method's mean and standard deviation there as computed.
    """
    from srgan_med.enhance.run import clamp_range

    floor = clamp_range(case.low_res)[0]
    reference = np.moveaxis(case.high_res[0].detach().cpu().numpy().astype(np.float64), case.slice_axis, -1)
    background = ~raw.mask if raw.mask is not None and raw.mask_found else None
    out: dict = {"background_fraction": None if background is None else float(background.mean())}
    if background is None or not background.any():
        return out
    out["background_mean_reference"] = float(reference[background].mean()) / raw.data_range
    for method, values in raw.reconstructions.items():
        below = values < floor
        count = int(np.count_nonzero(below))
        out[f"below_in_background_{method}"] = (
            float(np.count_nonzero(below & background)) / count if count else None
        )
        out[f"background_mean_{method}"] = float(values[background].mean()) / raw.data_range
        out[f"background_std_{method}"] = float(values[background].std()) / raw.data_range
    return out


def measure(model: str, scans: list[Path], seed: int) -> list[dict]:
    """One row per scan x family: clamped fractions and scores of the model and bicubic, each way."""
    from srgan_med.evaluate.core import Case, crop_to_pair, evaluate_case, interpolation_method, pair_geometry
    from srgan_med.evaluate.run import model_method, synthesise_pair, volume_seed
    from srgan_med.io import load_scan

    name, scale, modality = model_info(model)
    methods = {"model": model_method(model)[1], "bicubic": interpolation_method("bicubic")}
    methods = {method: _replayed(function) for method, function in methods.items()}
    rows = []
    for family in FAMILIES:
        config = str(FAMILY_DIR / f"{modality.lower()}-{family}.yaml")
        for path in scans:
            high_res = load_scan(path, modality=modality)
            high_res, low_res = synthesise_pair(
                high_res, config, scale, volume_seed(seed, high_res), path.name
            )
            slice_axis, factors = pair_geometry(high_res, low_res, str(path))
            case = Case(path.name, crop_to_pair(high_res, low_res), low_res, slice_axis, factors)
            scored = {clip: evaluate_case(case, methods, "auto", clip=clip) for clip in (False, True)}
            full_range = {method: _within_input_range(function) for method, function in methods.items()}
            scored["range"] = evaluate_case(case, full_range, "auto", clip=False)
            region = "mask" if scored[True].mask is not None else "whole"
            scores = {
                (way, row["method"]): row
                for way, result in scored.items()
                for row in result.rows
                if row["region"] == region
            }
            row = {"model": name, "modality": modality, "scan": path.name.split(".")[0], "family": family}
            row["region"] = region
            row.update(_where_clamped(case, scored[False]))
            for method in methods:
                row[f"clamped_{method}"] = scored[True].clipped[method]
                for metric in ("psnr", "ssim"):
                    row[f"{metric}_{method}_raw"] = scores[(False, method)][metric]
                    row[f"{metric}_{method}_clamped"] = scores[(True, method)][metric]
                    row[f"{metric}_{method}_input_range"] = scores[("range", method)][metric]
            rows.append(row)
            print(
                f"{name} {row['scan']} {family}: model voxels clamped {100 * row['clamped_model']:.2f}%, "
                f"PSNR {row['psnr_model_raw']:.3f} -> {row['psnr_model_clamped']:.3f} dB",
                flush=True,
            )
    return rows


def markdown(rows: list[dict], header: dict) -> str:
    def delta(row, metric, method, digits, way="clamped"):
        return f"{row[f'{metric}_{method}_{way}'] - row[f'{metric}_{method}_raw']:+.{digits}f}"

    lines = [
        "# Clamping the output: voxels touched and score changes",
        "",
        f"- date: {header['date']}",
        f"- device: {header['device']}",
        f"- command: `{header['command']}`",
        "- scores: `srgan-med evaluate`'s (mask region where it finds one); Δ: clamped as `enhance` "
        "clamps (at the input's minimum and its stored type's maximum) minus as computed; last column: "
        "clamped to the low-res input's minimum and maximum instead, minus as computed",
        "",
        "| model | scan | family | clamped, model | clamped, bicubic | PSNR model (clamped) | Δ PSNR model "
        "| Δ PSNR bicubic | Δ SSIM model | Δ SSIM bicubic | Δ PSNR model, at input max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['scan']} | {row['family']} | {100 * row['clamped_model']:.2f}% | "
            f"{100 * row['clamped_bicubic']:.2f}% | {row['psnr_model_clamped']:.3f} | "
            f"{delta(row, 'psnr', 'model', 3)} | {delta(row, 'psnr', 'bicubic', 3)} | "
            f"{delta(row, 'ssim', 'model', 4)} | {delta(row, 'ssim', 'bicubic', 4)} | "
            f"{delta(row, 'psnr', 'model', 3, 'input_range')} |"
        )

    def span(values, scale=1.0, digits=3, sign="+"):
        return f"{scale * min(values):{sign}.{digits}f} to {scale * max(values):{sign}.{digits}f}"

    def change(metric, way="clamped"):
        return [row[f"{metric}_model_{way}"] - row[f"{metric}_model_raw"] for row in rows]

    lines += [
        "",
        f"- Model PSNR change from clamping as `enhance` does: {span(change('psnr'))} dB over {len(rows)} "
        f"scan x family pairs; SSIM change: {span(change('ssim'), digits=4)}.",
        f"- Clamped at the low-res input's maximum as well: {span(change('psnr', 'input_range'))} dB.",
    ]
    for modality in sorted({row["modality"] for row in rows}):
        group = [row for row in rows if row["modality"] == modality]
        lines.append(
            f"- {modality}: voxels clamped {span([r['clamped_model'] for r in group], 100, 2, '')}% of the "
            f"model's output, {span([r['clamped_bicubic'] for r in group], 100, 2, '')}% of bicubic's."
        )
    lines += [
        "",
        "## Where the voxels below the floor lie",
        "",
        "Background: outside evaluate's foreground mask. Share: of the voxels a method put below the "
        "floor (the low-res input's minimum), those in the background. Levels in the background, as "
        "computed (before clamping), in % of evaluate's data range: mean of the reference, mean and "
        "standard deviation of each method.",
        "",
        "| model | scan | family | background | below floor in background, model | bicubic "
        "| mean, reference | mean, model | mean, bicubic | std, model | std, bicubic |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def share(value):
        return "—" if value is None else f"{100 * value:.1f}%"

    for row in rows:
        if "background_mean_reference" not in row:
            continue
        lines.append(
            f"| {row['model']} | {row['scan']} | {row['family']} | {share(row['background_fraction'])} | "
            f"{share(row['below_in_background_model'])} | {share(row['below_in_background_bicubic'])} | "
            + " | ".join(
                f"{100 * row[key]:.2f}"
                for key in (
                    "background_mean_reference",
                    "background_mean_model",
                    "background_mean_bicubic",
                    "background_std_model",
                    "background_std_bicubic",
                )
            )
            + " |"
        )

    lines.append("")
    background = [row for row in rows if row.get("below_in_background_model") is not None]
    for modality in sorted({row["modality"] for row in background}):
        group = [row for row in background if row["modality"] == modality]

        def spread(key, group=group):
            return span([row[key] for row in group], 100, 2, "")

        lines.append(
            f"- {modality}: {spread('below_in_background_model')}% of the model's voxels below the floor "
            f"lie in the background; there its mean is {spread('background_mean_model')}% of the data "
            f"range (reference {spread('background_mean_reference')}%, bicubic "
            f"{spread('background_mean_bicubic')}%), its standard deviation "
            f"{spread('background_std_model')}% (bicubic {spread('background_std_bicubic')}%)."
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from srgan_med.errors import SrganMedError
    from srgan_med.models import bundle

    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_description(),
        "command": shlex.join(["python", "benchmarks/clip_effect.py", *argv]),
    }
    if args.report_only:
        try:
            measured = json.loads((args.out / "clip_effect.json").read_text())
            rows, header = measured.pop("rows"), measured
        except (OSError, ValueError, KeyError) as error:
            print(f"error: no measurement to report in {args.out}: {error}", file=sys.stderr)
            return 2
        (args.out / "clip_effect.md").write_text(markdown(rows, header))
        print(f"wrote {args.out / 'clip_effect.md'} from {args.out / 'clip_effect.json'}")
        return 0
    print(f"device {header['device']}, {header['date']}: {header['command']}", flush=True)
    try:
        models = args.model or list(bundle.shipped_models())
        rows = []
        for model in models:
            scans, skipped = find_scans(model_info(model)[2], args.scans)
            for reason in skipped:
                print(f"{model}: {reason}", flush=True)
            rows += measure(model, central_slices(scans, args.max_slices, args.out / "inputs"), args.seed)
        if not rows:
            raise BenchmarkError("no scan of any model's modality was found: nothing measured")
    except (BenchmarkError, SrganMedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, header)
    (args.out / "clip_effect.md").write_text(text)
    (args.out / "clip_effect.json").write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
