"""A generator and everything needed to apply it, in one safetensors file (no pickle).

The file's tensors are the generator's ``state_dict``; its string metadata ``srgan_med`` holds JSON:
architecture (name and keyword arguments), scale, modality, intensity normalisation, and the model card
(training data, degradation, losses, VGG weight source, steps, measured metrics, known limits).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srgan_med.errors import InputError, WeightsNotFoundError, exception_summary

METADATA_KEY = "srgan_med"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"


def normalisation_from_dict(data: dict[str, Any]):
    """The bundle's intensity map, as the degradation model's :class:`NormaliseConfig`."""
    from srgan_med.degrade.config import NormaliseConfig

    kind = data.get("kind")
    if kind not in ("window", "percentile"):
        raise InputError(f"model normalisation kind must be window or percentile, got {kind!r}")
    return NormaliseConfig(
        kind=kind,
        window_hu=tuple(float(v) for v in data.get("window_hu", (-1000.0, 2000.0))),
        percentiles=tuple(float(v) for v in data.get("percentiles", (0.5, 99.5))),
    )


@dataclass
class ModelBundle:
    """A loaded model: generator (eval mode) plus its scale, modality, intensity map and card.

    ``normalisation`` is the training preset's :class:`srgan_med.degrade.config.NormaliseConfig`,
    applied with :func:`srgan_med.degrade.normalise.normalisation_range` so ``enhance`` maps
    intensities exactly as training did, and back.
    """

    name: str
    generator: Any  # torch.nn.Module
    scale: int
    modality: str
    normalisation: Any  # srgan_med.degrade.config.NormaliseConfig
    architecture: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)

    def intensity_maps(self, volume):
        """``(normalise, denormalise)`` for ``volume``: physical units <-> model units, exact inverses."""
        return intensity_maps(volume, self.normalisation)


def intensity_maps(volume, normalisation):
    """``(normalise, denormalise)``: ``volume``'s physical units <-> model units under the
    :class:`srgan_med.degrade.config.NormaliseConfig` ``normalisation``, for numpy arrays and
    tensors alike."""
    from srgan_med.degrade.normalise import normalisation_range

    low, high = normalisation_range(volume, normalisation)
    width = high - low

    def normalise(values):
        return (values - low) / width

    def denormalise(values):
        physical = values * width
        physical += low  # in place: the same values as ``values * width + low``, one array fewer
        return physical

    return normalise, denormalise


def _architectures() -> dict[str, Any]:
    # Imported here so loading a bundle's metadata does not need torch.
    from srgan_med.nets import SRResNet

    return {"srresnet": SRResNet}


def save_bundle(
    path: Path,
    generator,
    *,
    architecture: dict[str, Any],
    scale: int,
    modality: str,
    normalisation,
    card: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``generator`` and its metadata atomically as one ``.safetensors`` file.

    Raises:
        InputError: a bundle :func:`load_bundle` would refuse (its scale not the architecture's) or
            a normalisation that is not a :class:`~srgan_med.degrade.config.NormaliseConfig`.
    """
    from srgan_med.degrade.config import NormaliseConfig
    from srgan_med.io.atomic import atomic_output, save_safetensors

    built = architecture.get("kwargs", {}).get("scale", scale)
    if built != scale:  # written, it was refused only when loaded
        raise InputError(f"{path}: scale {scale}, but the architecture upsamples x{built}")
    if not isinstance(normalisation, NormaliseConfig):
        got = type(normalisation).__name__
        raise InputError(f"{path}: normalisation must be a NormaliseConfig, got a {got}")
    metadata = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "scale": int(scale),
        "modality": modality,
        "normalisation": asdict(normalisation),
        "card": card,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    with atomic_output(Path(path), overwrite=overwrite) as temporary:
        save_safetensors(tensors, temporary, metadata={METADATA_KEY: json.dumps(metadata)})
    return Path(path)


def shipped_models() -> dict[str, Path]:
    """Name -> path of the weights shipped inside the package."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name.removesuffix(".safetensors"): p for p in sorted(SHIPPED_DIR.glob("*.safetensors"))}


def default_model(modality: str, scale: int | None = None) -> str:
    """The shipped model ``enhance --model auto`` picks: ``{ct,mr}-x{scale}`` (x2 by default)."""
    shipped = shipped_models()
    name = f"{str(modality).lower()}-x{scale or 2}"
    if name not in shipped:
        available = ", ".join(shipped) or "none are shipped in this version"
        raise WeightsNotFoundError(
            f"no shipped model for {modality} scans at x{scale or 2} (shipped: {available}); "
            "pass --model NAME or --model PATH to a trained .safetensors file"
        )
    return name


def resolve_model(name_or_path: str) -> Path:
    """A shipped model name, or a path to a ``.safetensors`` bundle."""
    shipped = shipped_models()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return path
    available = ", ".join(shipped) or "none are shipped in this version"
    raise WeightsNotFoundError(
        f"model {name_or_path!r} not found: not a file, and not a shipped model ({available})"
    )


def read_metadata(path: Path) -> dict[str, Any]:
    """The bundle's metadata, validated (raises InputError for files that are not bundles)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad files
        raise InputError(
            f"{path}: not a safetensors model file ({' '.join(str(exc).split())[:120]})"
        ) from None
    if raw is None:
        raise InputError(f"{path}: a safetensors file without srgan-med model metadata")
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise InputError(f"{path}: its srgan-med model metadata is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: its srgan-med model metadata is not a mapping")
    for key in ("architecture", "scale", "modality", "normalisation"):
        if key not in metadata:
            raise InputError(f"{path}: model metadata lacks {key!r}")
    architecture = metadata["architecture"]
    if not isinstance(architecture, dict) or not isinstance(architecture.get("kwargs", {}), dict):
        raise InputError(f"{path}: model metadata's architecture is not a mapping with kwargs")
    scale = metadata["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InputError(f"{path}: model metadata's scale must be a positive integer, got {scale!r}")
    built = architecture.get("kwargs", {}).get("scale", scale)
    if built != scale:  # the network's upsampling and the declared factor must agree
        raise InputError(f"{path}: model metadata says scale {scale}, its architecture scale {built!r}")
    return metadata


def as_device(device, said: str | None = None):
    """``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``) as a
    ``torch.device`` this machine has; otherwise an :class:`InputError` (torch's own was an
    ``AssertionError``, "Torch not compiled with CUDA enabled"). ``said``: how the error names what
    was asked for (``--device cuda``); default ``device 'cuda'``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if chosen.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{said or f'device {device!r}'} asked for, but no CUDA device is available")
    return chosen


def load_bundle(name_or_path: str, device="cpu") -> ModelBundle:
    """Load a shipped or saved model, ready for inference (eval mode, on ``device``: see
    :func:`as_device`)."""
    from safetensors.torch import load_file

    device = as_device(device)

    path = resolve_model(name_or_path)
    metadata = read_metadata(path)
    architecture = metadata["architecture"]
    factories = _architectures()
    if architecture.get("name") not in factories:
        raise InputError(f"{path}: unknown architecture {architecture.get('name')!r}")
    name = architecture["name"]
    try:
        generator = factories[name](**architecture.get("kwargs", {}))
    except (TypeError, ValueError) as exc:  # unknown or out-of-range settings in the metadata
        raise InputError(f"{path}: cannot build its {name} network ({exception_summary(exc, 300)})") from None
    try:
        generator.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        reason = exception_summary(exc, 300)  # a mismatch lists every missing key
        raise InputError(f"{path}: weights do not fit the {name} architecture ({reason})") from None
    try:
        normalisation = normalisation_from_dict(metadata["normalisation"])
    except Exception as exc:  # noqa: BLE001 - ConfigError, TypeError...: any is a bad file
        reason = exception_summary(exc, 300)
        raise InputError(f"{path}: model metadata's normalisation is not usable ({reason})") from None
    generator.to(device).eval()
    return ModelBundle(
        name=path.name.removesuffix(".safetensors"),
        generator=generator,
        scale=int(metadata["scale"]),
        modality=str(metadata["modality"]),
        normalisation=normalisation,
        architecture=architecture,
        card=metadata.get("card", {}),
    )
