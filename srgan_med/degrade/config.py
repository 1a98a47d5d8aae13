"""Typed degradation presets, loaded from YAML and validated at load time.

A preset says how a worse acquisition would have seen the same anatomy, in physical units. Ranges
``[low, high]`` are drawn uniformly once per item. The two shipped presets live as package data in
``srgan_med/presets/{ct,mr}.yaml`` so an installed package finds them; ``configs/degradation/`` at the
top of the repository holds identical copies for people browsing the repository (a test checks they
are identical). ``load_degradation_preset("ct")`` reads the packaged one; any other argument is a
path to a YAML file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srgan_med.errors import ConfigError
from srgan_med.schema import check_choices, from_dict, load_yaml

Range = tuple[float, float]

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
PRESET_NAMES = ("ct", "mr")


@dataclass(frozen=True)
class NormaliseConfig:
    """Invertible intensity normalisation to about ``[0, 1]``.

    Attributes:
        kind: ``"window"`` (fixed window, CT in HU) or ``"percentile"`` (robust, per scan, MR).
        window_hu: ``[low, high]`` mapped to ``[0, 1]`` when ``kind == "window"``; not clipped,
            so the mapping inverts exactly.
        percentiles: ``[low, high]`` percentiles mapped to ``[0, 1]`` when ``kind == "percentile"``.
    """

    kind: str = "window"
    window_hu: Range = (-1000.0, 2000.0)
    percentiles: Range = (0.5, 99.5)


PSF_PROFILES = ("gaussian", "box", "bicubic", "none")


@dataclass(frozen=True)
class BlurConfig:
    """In-plane point-spread function (PSF) family and width.

    Attributes:
        profile: ``"gaussian"``, ``"box"`` (voxel averaging over the width), ``"bicubic"`` (the PSF
            that makes the block averaging that follows anti-aliased bicubic downsampling; its width
            follows the scale, so ``fwhm_mm`` is unused) or ``"none"``; or a list of these (a
            mixture), one drawn uniformly per item (list a family twice to weight it).
        fwhm_mm: ``[low, high]`` full width at half maximum in mm (for a box, its width).
        anisotropic: draw a separate width for each in-plane axis.
    """

    profile: str | tuple[str, ...] = "gaussian"
    fwhm_mm: Range = (1.0, 2.0)
    anisotropic: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.profile, list):  # keep the frozen config hashable when built from a list
            object.__setattr__(self, "profile", tuple(self.profile))

    @property
    def profiles(self) -> tuple[str, ...]:
        """The families drawn from: ``(profile,)`` for a single family."""
        return (self.profile,) if isinstance(self.profile, str) else tuple(self.profile)


@dataclass(frozen=True)
class ThroughPlaneConfig:
    """Thick-slice simulation along the through-plane axis (3-D volumes only).

    Attributes:
        slice_thickness_mm: nominal thickness of a simulated slice; ``None`` leaves the axis alone.
        slice_gap_mm: gap between simulated slices (slice spacing = thickness + gap).
        profile: slice profile, ``"box"`` (ideal) or ``"gaussian"`` (FWHM = thickness).
    """

    slice_thickness_mm: float | None = None
    slice_gap_mm: float = 0.0
    profile: str = "box"


@dataclass(frozen=True)
class KSpaceConfig:
    """MR k-space truncation: keep only the central fraction of in-plane k-space.

    Attributes:
        enabled: apply it.
        keep_fraction: ``[low, high]`` fraction of the in-plane k-space extent kept per axis.
    """

    enabled: bool = False
    keep_fraction: Range = (0.6, 0.9)


@dataclass(frozen=True)
class NoiseConfig:
    """Acquisition noise.

    Attributes:
        kind: ``"gaussian"`` (CT, in HU), ``"rician"`` (magnitude MR) or ``"none"``.
        std_hu: ``[low, high]`` standard deviation in HU (CT presets).
        std_relative: ``[low, high]`` standard deviation as a fraction of the normalisation range
            (MR has no absolute unit).
        signal_dependence: CT only; the local std is
            ``std * max(0, 1 + signal_dependence * (HU + 1000) / 1000)``, so denser tissue (fewer
            photons through) is noisier. 0 gives stationary noise.
    """

    kind: str = "gaussian"
    std_hu: Range | None = None
    std_relative: Range | None = None
    signal_dependence: float = 0.0


@dataclass(frozen=True)
class QuantiseConfig:
    """JPEG-like quantisation of 8-bit inputs: 8x8 block DCT with the JPEG luminance table.

    The normalised intensities are taken as the 8-bit export's display range: everything outside
    ``[0, 1]`` (below the CT window's -1000 HU or above its 2000 HU; for MR outside the 0.5-99.5
    percentiles) is clipped to it, and the 256 levels span it (11.8 HU apart in the CT window), as an
    export through a display window clips and bins.

    Attributes:
        enabled: apply it.
        quality: ``[low, high]`` JPEG quality (1..100).
    """

    enabled: bool = False
    quality: Range = (50.0, 90.0)


@dataclass(frozen=True)
class DegradationConfig:
    """A full degradation model.

    Attributes:
        modality: ``"CT"``, ``"MR"`` or other (informational; noise units follow ``noise``).
        in_plane_axes: the two spatial axes of a ``(1, I, J, K)`` volume that are in-plane.
    """

    modality: str = "CT"
    in_plane_axes: tuple[int, int] = (0, 1)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    through_plane: ThroughPlaneConfig = field(default_factory=ThroughPlaneConfig)
    kspace: KSpaceConfig = field(default_factory=KSpaceConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    quantise: QuantiseConfig = field(default_factory=QuantiseConfig)

    def __post_init__(self) -> None:
        _validate(self)


_CHOICES = {
    "normalise.kind": ("window", "percentile"),
    "through_plane.profile": ("box", "gaussian"),
    "noise.kind": ("gaussian", "rician", "none"),
}


def _check_range(value: Range | None, path: str, low: float = 0.0, high: float = float("inf")) -> None:
    if value is None:
        return
    if not all(math.isfinite(v) for v in value):
        raise ConfigError(f"{path}: values must be finite numbers, got {list(value)}")
    if not (value[0] <= value[1]):
        raise ConfigError(f"{path}: low must not exceed high, got {list(value)}")
    if value[0] < low or value[1] > high:
        raise ConfigError(f"{path}: values must lie in [{low}, {high}], got {list(value)}")


def _validate(config: DegradationConfig) -> None:
    check_choices(config, _CHOICES)
    profile = config.blur.profile
    if not isinstance(profile, str) and not profile:
        raise ConfigError(f"blur.profile: a mixture needs at least one of {', '.join(PSF_PROFILES)}")
    for index, name in enumerate(config.blur.profiles):
        if name not in PSF_PROFILES:
            where = "blur.profile" if isinstance(profile, str) else f"blur.profile[{index}]"
            raise ConfigError(f"{where}: must be one of {', '.join(PSF_PROFILES)}, got {name!r}")
    axes = config.in_plane_axes
    if len(axes) != 2 or axes[0] == axes[1] or not all(a in (0, 1, 2) for a in axes):
        raise ConfigError(f"in_plane_axes: must be two different axes among 0, 1, 2, got {list(axes)}")
    norm = config.normalise
    if not norm.window_hu[0] < norm.window_hu[1]:
        raise ConfigError(f"normalise.window_hu: low must be below high, got {list(norm.window_hu)}")
    _check_range(norm.percentiles, "normalise.percentiles", 0.0, 100.0)
    if not norm.percentiles[0] < norm.percentiles[1]:
        raise ConfigError(f"normalise.percentiles: low must be below high, got {list(norm.percentiles)}")
    _check_range(config.blur.fwhm_mm, "blur.fwhm_mm")
    tp = config.through_plane
    if tp.slice_thickness_mm is not None and not 0 < tp.slice_thickness_mm < math.inf:
        raise ConfigError(
            f"through_plane.slice_thickness_mm: must be a positive number, got {tp.slice_thickness_mm}"
        )
    if not 0 <= tp.slice_gap_mm < math.inf:
        raise ConfigError(f"through_plane.slice_gap_mm: must be a non-negative number, got {tp.slice_gap_mm}")
    if tp.slice_gap_mm > 0 and tp.slice_thickness_mm is None:  # it would be ignored
        raise ConfigError(
            "through_plane.slice_gap_mm: a gap between simulated slices needs slice_thickness_mm"
        )
    _check_range(config.kspace.keep_fraction, "kspace.keep_fraction", 1e-3, 1.0)
    noise = config.noise
    _check_range(noise.std_hu, "noise.std_hu")
    _check_range(noise.std_relative, "noise.std_relative")
    if noise.kind != "none" and (noise.std_hu is None) == (noise.std_relative is None):
        raise ConfigError("noise: give exactly one of std_hu (CT) or std_relative (MR)")
    if noise.std_hu is not None and norm.kind != "window":
        raise ConfigError("noise.std_hu: needs normalise.kind 'window' to convert HU to intensities")
    _check_range(config.quantise.quality, "quantise.quality", 1.0, 100.0)


def config_from_dict(data: dict[str, Any]) -> DegradationConfig:
    """Build a :class:`DegradationConfig` from a plain mapping (e.g. parsed YAML).

    Raises:
        ConfigError: unknown key or bad value; the message names the dotted key path.
    """
    return from_dict(DegradationConfig, data, "", name="degradation config")


def load_degradation_preset(name_or_path: str | Path) -> DegradationConfig:
    """Load a shipped preset (``"ct"``, ``"mr"``) or a YAML file.

    Args:
        name_or_path: preset name or path to a YAML file with the same schema.

    Returns:
        The validated :class:`DegradationConfig`.

    Raises:
        ConfigError: unknown preset, unreadable file, unknown key or bad value (dotted key path).

    Example:
        >>> load_degradation_preset("ct").normalise.window_hu
        (-1000.0, 2000.0)
    """
    import yaml

    text = str(name_or_path)
    if text.lower() in PRESET_NAMES:
        path = PRESET_DIR / f"{text.lower()}.yaml"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"degradation preset {text!r}: not a preset name ({', '.join(PRESET_NAMES)}) nor a file"
            )
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read degradation preset ({error})") from None
    try:
        return config_from_dict(data or {})
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
