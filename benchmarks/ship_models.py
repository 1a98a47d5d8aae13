"""Ship trained models into the package: only those that pass the quality bar, each with a model card.

A candidate is the model ``srgan-med train configs/shipped/NAME.yaml`` exported
(``runs/shipped/NAME/models/NAME-srresnet.safetensors``). Its quality is what
``benchmarks/model_quality.py`` measured on it (``--quality runs/model_quality/model_quality.json``):
every row of the candidate must beat bicubic on PSNR and SSIM, or it is not shipped (exit 1).
A shipped model is written to ``srgan_med/weights/NAME.safetensors`` (same weights, card completed
with the measured table and the benchmark's device/date/command) and ``srgan_med/weights/NAME.md``
(the card for people).

Usage::

    python benchmarks/model_quality.py --model runs/shipped/ct-x2/models/ct-x2-srresnet.safetensors ...
    python benchmarks/ship_models.py --quality runs/model_quality/model_quality.json ct-x2 mr-x2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "srgan_med" / "weights"


def card_markdown(name: str, card: dict, scale: int, modality: str) -> str:
    """The model card as Markdown (every number comes from the card, i.e. from the runs)."""
    quality = card["quality"]
    lines = [
        f"# {name}: {modality} x{scale} fidelity model",
        "",
        card["summary"],
        "",
        "| | |",
        "|---|---|",
        f"| architecture | SRResNet {card['architecture']} |",
        f"| training recipe | `srgan-med train {card['recipe']}` |",
        f"| training data | {', '.join(card['training_data'])} |",
        f"| validation data (held out) | {', '.join(card['validation_data']) or 'none'} |",
        f"| degradation | preset `{card['degradation']['modality'].lower()}`: PSF "
        f"{card['degradation']['blur']['profile']}, noise {card['degradation']['noise']['kind']} |",
        f"| losses | {card['losses']['pretrain']} (phase 1 only; no GAN phase) |",
        f"| VGG19 weights | {card['vgg_weights'] or 'not used (no perceptual loss in phase 1)'} |",
        f"| steps | {card['steps']['pretrain']} x batch {card['batch_size']} "
        f"patches of {card['patch_size']} px |",
        f"| trained on | {card['trained_on']}, {card['trained_at']} |",
        "",
        "## Measured against bicubic on the public scans",
        "",
        f"{quality['device']}, {quality['date']}: `{quality['command']}`",
        "",
        "Reconstructions clamped before scoring as `srgan-med enhance` clamps its output (at the low-res "
        "input's minimum and its stored type's maximum)."
        if quality.get("clip")
        else "Reconstructions scored as computed (not clamped).",
        "",
        "| scan | family | region | PSNR model | PSNR bicubic | gain (dB) "
        "| SSIM model | SSIM bicubic | gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in quality["rows"]:
        lines.append(
            f"| {row['scan']} | {row['family']} | {row['region']} | {row['psnr_model']:.2f} | "
            f"{row['psnr_bicubic']:.2f} | {row['psnr_gain']:+.2f} | {row['ssim_model']:.4f} | "
            f"{row['ssim_bicubic']:.4f} | {row['ssim_gain']:+.4f} |"
        )
    lines += ["", "## Known limits", ""] + [f"- {text}" for text in card["limits"]]
    return "\n".join(lines) + "\n"


LIMITS = [
    "Trained for minutes on a CPU on a handful of public volumes: a small fidelity model that recovers "
    "some edge detail over bicubic, not a state-of-the-art one. The scans it is measured on include "
    "its training scans (only the validation scan is held out); how it does on your scanner is unknown "
    "until you measure it (`srgan-med evaluate --model`).",
    "Fidelity (pixel-loss) model: it does not hallucinate texture, and it cannot recover detail the "
    "acquisition never measured. No GAN-phase weights are shipped.",
    "The low-resolution inputs it was trained on were simulated (Gaussian, box and anti-aliased bicubic "
    "PSFs, block averaging, noise); real low-dose or thick-slice acquisitions differ.",
    "Research use only; not a medical device.",
]
# What the training code did differently before a change, for models trained before it (by the
# card's training time, UTC): (changed at, modality or None for all, the note).
HISTORY = [
    (
        "2026-12-06T22:30:00Z",
        None,
        "It was trained before 2026-12-06, when the Gaussian PSF's taps were sampled: below about two "
        "voxels of FWHM they blurred less than the stated width (0.8 mm on a 1 mm grid added 0.38 mm), so "
        "its Gaussian training inputs were sharper than its recipe says. Its measurements below use the "
        "corrected blur.",
    ),
    (
        "2026-12-07T00:30:00Z",
        "MR",
        "It was trained before a change of 2026-12-07 00:30 UTC; until then MR training normalised by "
        "the high-res scan's percentiles while enhance normalises by the low-res input's own: it "
        "meets brighter inputs than it was trained on. Its measurements below are of the inference "
        "path as it runs.",
    ),
    (
        "2026-12-07T03:30:00Z",
        "MR",
        "It was trained before a change of 2026-12-07 03:30 UTC; until then the simulated Rician "
        "noise and k-space magnitude of MR training inputs were taken about the low end of the "
        "normalisation range (a low-res percentile), not about zero signal. On its training scans "
        "that point lies just above zero, so its inputs differed little from the corrected "
        "simulation; its measurements below (high-res scans whose 0.5th percentile is 0) are the "
        "same with either.",
    ),
]


def history_notes(card: dict, modality: str) -> list[str]:
    """The :data:`HISTORY` notes that apply to a model trained when its card says."""
    trained = str(card.get("trained_at", ""))  # ISO UTC, as the trainer stamps it
    return [note for changed, only, note in HISTORY if trained < changed and only in (None, modality)]


# The training data differ by modality, and so do the limits they set.
LIMITS_BY_MODALITY = {
    "CT": "Trained on 1.5-3 mm voxels and one 0.66 mm slice (pydicom's CT_small), and measured on 1.5-3 mm "
    "voxels only: on finer pixels it is weaker. On the finer CT images that install with pydicom and "
    "pydicom-data (CT_small; 693_UNCI.dcm, 512x512 at 0.48 mm) the x2 CT model does not reliably beat "
    "bicubic on PSNR and SSIM, and the x4 one was not measured (CPU, 2026-11-26: "
    "`srgan-med evaluate PATH/693_UNCI.dcm example:ct-small --scale 2 "
    "--degradation configs/degradation/families/ct-box.yaml --methods bicubic --model ct-x2`, and the same "
    "with ct-bicubic.yaml); tests/test_shipped_models.py checks only CT_small's PSNR, averaged over the "
    "three PSF families. Measure it on your own scans (`srgan-med evaluate --model`).",
    "MR": "Trained on 1 mm brain volumes (a human T2, a macaque T2, the MNI152 T1 template) and no MR DICOM "
    "image: the MR slices of pydicom and pydicom-data (0.2-0.7 mm pixels, e.g. MR2_UNCI.dcm, 1024x1024) "
    "were neither used nor measured. Other anatomy, contrasts and resolutions are untested.",
}


def ship(name: str, runs: Path, quality: dict, out_dir: Path) -> tuple[bool, str]:
    from srgan_med.models.bundle import load_bundle, save_bundle

    candidate = runs / name / "models" / f"{name}-srresnet.safetensors"
    if not candidate.is_file():
        return False, f"{name}: no trained model at {candidate}"
    rows = [r for r in quality["rows"] if r["model"] == candidate.name.removesuffix(".safetensors")]
    if not rows:
        return False, f"{name}: the quality report has no rows for {candidate.name}"
    failed = [r for r in rows if not r["passed"]]
    if failed:
        worst = ", ".join(f"{r['scan']}/{r['family']}/{r['region']}" for r in failed[:4])
        return (
            False,
            f"{name}: not shipped, {len(failed)} of {len(rows)} comparisons do not beat bicubic ({worst})",
        )
    bundle = load_bundle(str(candidate))
    kwargs = bundle.architecture.get("kwargs", {})
    card = dict(bundle.card)
    card.update(
        summary=(
            f"SRResNet x{bundle.scale} {bundle.modality} fidelity model ({kwargs.get('blocks')} blocks x "
            f"{kwargs.get('width')} channels, bicubic residual), {card['steps']['pretrain']} steps on "
            f"{card['trained_on'].split(' (')[0]}; beats bicubic on every public scan and degradation family"
        ),
        architecture=", ".join(f"{k}={v}" for k, v in kwargs.items()),
        recipe=f"configs/shipped/{name}.yaml",
        limits=[
            *LIMITS[:-1],
            *history_notes(card, bundle.modality),
            LIMITS_BY_MODALITY[bundle.modality],
            LIMITS[-1],
        ],
        quality={key: quality[key] for key in ("date", "device", "command", "seed", "max_slices")}
        # A report from before clamping existed has no "clip": its scores were not clamped.
        | {"clip": bool(quality.get("clip", False)), "rows": rows},
    )
    save_bundle(
        out_dir / f"{name}.safetensors",
        bundle.generator,
        architecture=bundle.architecture,
        scale=bundle.scale,
        modality=bundle.modality,
        normalisation=bundle.normalisation,
        card=card,
        overwrite=True,
    )
    (out_dir / f"{name}.md").write_text(card_markdown(name, card, bundle.scale, bundle.modality))
    return True, f"{name}: shipped ({len(rows)} comparisons beat bicubic) -> {out_dir / name}.safetensors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="model names, e.g. ct-x2 (configs/shipped/NAME.yaml)")
    parser.add_argument("--quality", type=Path, required=True, help="model_quality.json of the candidates")
    parser.add_argument(
        "--runs", type=Path, default=REPO / "runs" / "shipped", help="training output folders"
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="where shipped weights go")
    args = parser.parse_args(argv)
    try:
        quality = json.loads(args.quality.read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"error: {args.quality}: cannot read the quality report ({error})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = [ship(name, args.runs, quality, args.out) for name in args.names]
    for _, message in results:
        print(message)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
