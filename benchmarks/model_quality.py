"""Model-quality benchmark: does each super-resolution model beat bicubic everywhere it must?

Issue #5's bar: a shipped model beats bicubic on PSNR *and* SSIM for every public scan of its modality
and every degradation family (box, Gaussian, anti-aliased bicubic). For each model, each family
(``configs/degradation/families/{ct,mr}-{family}.yaml``) and the public scans of the model's modality
(``../shared/data/scans/*.nii.gz``, plus nilearn's MNI152 template for MR when nilearn is installed),
this runs the evaluation of ``srgan-med evaluate`` (:func:`srgan_med.evaluate.run.run_evaluation`:
same simulated LR inputs, mask, data range and metrics), so every number here is one that
``srgan-med evaluate`` reports; the exact ``srgan-med evaluate`` command of each run is printed and
saved. The scale is the model's own.

Usage::

    python benchmarks/model_quality.py                         # every shipped model
    python benchmarks/model_quality.py --model ct_x4.safetensors --max-slices 8 --out runs/quality

Writes ``OUT/model_quality.md`` (table, device, date, exact command), ``OUT/model_quality.json`` and
each evaluation's full report under ``OUT/runs/MODEL/FAMILY/``. With ``--max-slices N`` each scan is
cut to its ``N`` central slices first (``OUT/inputs/``) and those files are what is evaluated.

Exit codes: 0 every model passes; 1 a model fails the bar; 2 nothing could be benchmarked (no model,
no data for a model, a bad option), with one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCANS = REPO.parent / "shared" / "data" / "scans"
FAMILY_DIR = REPO / "configs" / "degradation" / "families"
FAMILIES = ("box", "gaussian", "bicubic")
MNI_TEMPLATE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"  # inside nilearn
NAME_PREFIXES = {"ct_": "CT", "mr_": "MR"}


class BenchmarkError(Exception):
    """Nothing (or not enough) to benchmark; printed as one line, exit code 2."""


@dataclass
class Row:
    """One model x scan x family comparison (PSNR in dB, SSIM unitless, over evaluate's region)."""

    model: str
    scan: str
    family: str
    region: str
    psnr_model: float
    psnr_bicubic: float
    ssim_model: float
    ssim_bicubic: float

    @property
    def psnr_gain(self) -> float:
        return self.psnr_model - self.psnr_bicubic

    @property
    def ssim_gain(self) -> float:
        return self.ssim_model - self.ssim_bicubic

    @property
    def passed(self) -> bool:
        # NaN (an undefined metric) compares False: a score that cannot be checked does not pass.
        return self.psnr_gain > 0 and self.ssim_gain > 0

    def as_dict(self) -> dict:
        values = {**asdict(self), "psnr_gain": self.psnr_gain, "ssim_gain": self.ssim_gain}
        # JSON has no NaN: an undefined score is null.
        values = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
        return {**values, "passed": self.passed}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="model bundle (shipped name or .safetensors path); repeatable; default: every shipped model",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/model_quality"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated degradations")
    parser.add_argument(
        "--max-slices",
        type=int,
        default=0,
        metavar="N",
        help="evaluate only the N central slices of each scan (0: all); keeps CPU runs short",
    )
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated degradation families (default {','.join(FAMILIES)}; the bar needs all)",
    )
    parser.add_argument("--scans", type=Path, default=DEFAULT_SCANS, help="folder of public *.nii.gz scans")
    parser.add_argument("--mask", default="auto", help="evaluate's --mask: auto or none")
    parser.add_argument(
        "--no-clip",
        action="store_true",
        help="score reconstructions as computed, not clamped (evaluate --no-clip)",
    )
    args = parser.parse_args(argv)
    if args.max_slices < 0:
        parser.error(f"--max-slices must not be negative, got {args.max_slices}")
    return args


def model_info(name_or_path: str) -> tuple[str, int, str]:
    """``(name, scale, modality)`` of a model bundle, from its metadata (no weights loaded)."""
    from srgan_med.models.bundle import read_metadata, resolve_model

    path = resolve_model(name_or_path)
    metadata = read_metadata(path)
    return path.name.removesuffix(".safetensors"), int(metadata["scale"]), str(metadata["modality"])


def find_scans(modality: str, scans_dir: Path) -> tuple[list[Path], list[str]]:
    """Public scans of ``modality`` and one printed reason per scan or source left out.

    A scan counts as ``modality`` when ``load_scan`` (what ``evaluate`` uses) reads it so *and* its
    name (``ct_``/``mr_``) does not say otherwise: an 8-bit display-windowed CT has no HU, reads as
    MR, and belongs to neither benchmark.
    """
    from srgan_med.io import load_scan

    found: list[Path] = []
    skipped: list[str] = []
    if scans_dir.is_dir():
        for path in sorted(scans_dir.glob("*.nii.gz")):
            named = next((m for p, m in NAME_PREFIXES.items() if path.name.lower().startswith(p)), None)
            read_as = str(load_scan(path).meta.get("modality", ""))
            if read_as == modality and named in (None, modality):
                found.append(path)
            elif modality in (named, read_as):
                skipped.append(
                    f"skip {path.name}: named {named or 'without a modality'} but read as {read_as} "
                    "(stored values are not in the modality's units, e.g. 8-bit display values, not HU)"
                )
    else:
        skipped.append(f"skip public scans: {scans_dir} not found")
    if modality == "MR":
        try:
            import nilearn
        except ImportError:
            skipped.append("skip MNI152 template: nilearn is not installed (pip install nilearn)")
        else:
            template = Path(nilearn.__file__).parent / MNI_TEMPLATE
            if template.is_file():
                found.append(template)
            else:
                skipped.append(f"skip MNI152 template: {template} not found in this nilearn")
    return found, skipped


def central_slices(paths: list[Path], max_slices: int, folder: Path) -> list[Path]:
    """Copies of ``paths`` cut to their ``max_slices`` central slices along axis 2 (evaluate's slice
    axis), with the affine moved to match (nibabel's slicer), dtype and scaling kept."""
    import nibabel as nib

    if max_slices == 0:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    cut = []
    for path in paths:
        image = nib.load(path)
        depth = image.shape[2]
        start = max(0, (depth - max_slices) // 2)
        target = folder / path.name
        nib.save(image.slicer[:, :, start : start + min(max_slices, depth)], str(target))
        cut.append(target)
    return cut


def evaluate_command(paths, scale, seed, config, out, mask, model, clip=True) -> str:
    """The ``srgan-med evaluate`` command equivalent to one benchmark run."""
    words = ["srgan-med", "evaluate", *[str(p) for p in paths], "--scale", str(scale), "--seed", str(seed)]
    words += ["--degradation", str(config), "--out", str(out), "--methods", "bicubic", "--mask", mask]
    return shlex.join([*words, "--model", model, *([] if clip else ["--no-clip"]), "--overwrite"])


def read_rows(run_dir: Path, paths: list[Path], model: str, model_method: str, family: str) -> list[Row]:
    """Per-scan PSNR/SSIM of the model and bicubic from one evaluation's metrics.csv / summary.json."""
    import csv

    region = json.loads((run_dir / "summary.json").read_text())["region"]
    with open(run_dir / "metrics.csv", newline="") as handle:
        table = [row for row in csv.DictReader(handle) if row["region"] == region]
    rows = []
    for index, path in enumerate(paths):
        volume = f"{index:02d}_{path.name.split('.')[0]}"  # evaluate's volume name
        scores = {row["method"]: row for row in table if row["volume"] == volume}
        rows.append(
            Row(
                model=model,
                scan=path.name,
                family=family,
                region=region,
                psnr_model=float(scores[model_method]["psnr"]),
                psnr_bicubic=float(scores["bicubic"]["psnr"]),
                ssim_model=float(scores[model_method]["ssim"]),
                ssim_bicubic=float(scores["bicubic"]["ssim"]),
            )
        )
    return rows


def device_description() -> str:
    import torch

    from srgan_med.enhance.run import pick_device

    device = pick_device("auto")  # the device evaluate --model runs the model on
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(
    rows: list[Row], verdicts: dict[str, str], header: dict, commands: list[str], skipped: list[str]
) -> str:
    lines = [
        "# Model quality vs bicubic",
        "",
        f"- date: {header['date']}",
        f"- device: {header['device']}",
        f"- command: `{header['command']}`",
        f"- bar: beat bicubic on PSNR and SSIM for every scan and family ({header['region_note']})",
        "- reconstructions: "
        + (
            "clamped before scoring as `srgan-med enhance` clamps its output, at the low-res input's "
            "minimum and its stored type's maximum (evaluate's default)"
            if header.get("clip", True)
            else "scored as computed, not clamped (`--no-clip`)"
        ),
        "",
        "| model | scan | family | PSNR model | PSNR bicubic | PSNR gain | SSIM model | SSIM bicubic "
        "| SSIM gain | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | {row.scan} | {row.family} | {_fmt(row.psnr_model, 2)} | "
            f"{_fmt(row.psnr_bicubic, 2)} | {_fmt(row.psnr_gain, 2)} | {_fmt(row.ssim_model, 4)} | "
            f"{_fmt(row.ssim_bicubic, 4)} | {_fmt(row.ssim_gain, 4)} | {'pass' if row.passed else 'FAIL'} |"
        )
    lines += ["", "| model | verdict |", "|---|---|"]
    lines += [f"| {model} | {verdict} |" for model, verdict in verdicts.items()]
    if skipped:
        lines += ["", "Left out:", "", *[f"- {reason}" for reason in skipped]]
    lines += ["", "Each run, as `srgan-med evaluate` (same numbers):", "", "```bash", *commands, "```", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from srgan_med.evaluate.run import run_evaluation
    from srgan_med.models import bundle

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise BenchmarkError(
            f"--families: unknown {', '.join(unknown) or '(none given)'}; use {', '.join(FAMILIES)}"
        )
    models = list(args.model)
    if not models:
        models = list(bundle.shipped_models())
        if not models:
            raise BenchmarkError(
                "no shipped models in this version (srgan-med models lists none); pass --model PATH"
            )
    info = {model: model_info(model) for model in models}  # fail early on a bad --model
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_description(),
        "command": shlex.join(["python", "benchmarks/model_quality.py", *argv]),
        "region_note": "scores inside evaluate's automatic body/head mask when it finds one",
        "clip": not args.no_clip,
    }
    print(f"device {header['device']}, {header['date']}: {header['command']}", flush=True)
    rows: list[Row] = []
    verdicts: dict[str, str] = {}
    commands: list[str] = []
    skipped_all: list[str] = []
    for model in models:
        name, scale, modality = info[model]
        scans, skipped = find_scans(modality, args.scans)
        for reason in skipped:
            print(f"{name}: {reason}", flush=True)
        skipped_all += [f"{name}: {reason}" for reason in skipped]
        if not scans:
            verdicts[name] = "NO DATA (nothing to evaluate: not verified)"
            continue
        inputs = central_slices(scans, args.max_slices, out / "inputs")
        model_rows: list[Row] = []
        for family in families:
            config = FAMILY_DIR / f"{modality.lower()}-{family}.yaml"
            run_dir = out / "runs" / name / family
            command = evaluate_command(
                inputs, scale, args.seed, config, run_dir, args.mask, model, clip=not args.no_clip
            )
            commands.append(command)
            print(f"{name} x{scale} {family}: {len(inputs)} {modality} scan(s)", flush=True)
            run_evaluation(
                inputs,
                None,
                run_dir,
                scale=scale,
                degradation=str(config),
                seed=args.seed,
                methods=["bicubic"],
                models=[model],
                mask=args.mask,
                clip=not args.no_clip,
                overwrite=True,
                command=command,
                show_progress=False,
            )
            model_rows += read_rows(run_dir, inputs, name, name, family)
        rows += model_rows
        failed = [r for r in model_rows if not r.passed]
        verdicts[name] = (
            f"FAIL ({len(failed)} of {len(model_rows)} scan x family comparisons do not beat bicubic)"
            if failed
            else f"pass (all {len(model_rows)} scan x family comparisons beat bicubic)"
        )
    text = markdown(rows, verdicts, header, commands, skipped_all)
    (out / "model_quality.md").write_text(text)
    report = {
        **header,
        "seed": args.seed,
        "max_slices": args.max_slices,
        "families": families,
        "skipped": skipped_all,
        "verdicts": verdicts,
        "rows": [row.as_dict() for row in rows],
        "commands": commands,
    }
    (out / "model_quality.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(text)
    if any(v.startswith("FAIL") for v in verdicts.values()):
        return 1
    if any(v.startswith("NO DATA") for v in verdicts.values()):
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (0 pass, 1 a model fails the bar, 2 cannot run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from srgan_med.errors import SrganMedError

    try:
        return run(args, argv)
    except (BenchmarkError, SrganMedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
