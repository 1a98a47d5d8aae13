"""Typed training configuration, loaded from YAML and validated at load time.

Every section is a frozen dataclass; unknown keys and bad values fail with the dotted key path
(``gan.learning_rate: expected a number, got 'fast'``). Paths in ``data`` (also ``cache_dir``),
``degradation`` and ``losses.perceptual.weights`` are relative to the config file; ``output_dir`` is
relative to the current directory. ``~`` is the home folder in all of them.

Example:
    >>> config = load_train_config("configs/tiny.yaml", ["gan.steps=4"])  # doctest: +SKIP
    >>> config.gan.steps  # doctest: +SKIP
    4
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from srgan_med.errors import ConfigError
from srgan_med.schema import apply_overrides, check_choices, from_dict, load_yaml, to_dict


@dataclass(frozen=True)
class DataConfig:
    """Where slices come from and how they are batched.

    Attributes:
        train: scans to train on: files, folders (their NIfTI files, or the folder as a DICOM series),
            globs, CSV files (column ``path``, or the first column), or ``example:NAME``.
        validation: held-out scans, same forms; may be empty (no validation).
        patch_size: side of the square high-res patch in pixels (a multiple of the scale).
        batch_size: patches per step (per process under DDP).
        slice_axes: voxel axes that slices are taken across (2: axial slices of a RAS volume).
        cache: ``"memory"`` (MONAI ``CacheDataset``), ``"disk"`` (``PersistentDataset`` in
            ``cache_dir``) or ``"none"``; decoded, normalised volumes are cached. A disk cache entry
            is keyed by the scan's files (size and modification time), the normalisation and the
            modality, so a rewritten scan or a changed preset is decoded again.
        cache_dir: folder of the disk cache, relative to the config file (default ``<output_dir>/cache``).
        validation_slices: slices per validation volume (evenly spaced).
    """

    train: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()
    patch_size: int = 96
    batch_size: int = 16
    slice_axes: tuple[int, ...] = (2,)
    cache: str = "memory"
    cache_dir: str | None = None
    validation_slices: int = 8


@dataclass(frozen=True)
class GeneratorConfig:
    """SRResNet size (16 blocks of 64 channels in the paper) and global skip.

    Attributes:
        residual: ``"none"`` (the paper) or ``"bicubic"`` (predict the difference to bicubic; see
            :class:`srgan_med.nets.SRResNet`).
    """

    blocks: int = 16
    width: int = 64
    residual: str = "none"


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Discriminator width (64 in the paper)."""

    width: int = 64


@dataclass(frozen=True)
class PerceptualConfig:
    """VGG19 content loss.

    Attributes:
        weights: ``"imagenet"`` (torchvision's cache), a path to ``vgg19-dcbb9e9d.pth`` (relative
            to the config's folder), or ``"random"`` (tests only: logged loudly and recorded in
            checkpoints and models).
        layer_weights: VGG19 layer -> weight (``relu5_4`` is the paper's phi_5,4).
        weight: weight of the content loss in the generator's phase-2 loss.
        criterion: ``"mse"`` or ``"l1"``.
    """

    weights: str = "imagenet"
    layer_weights: dict[str, float] = field(default_factory=lambda: {"relu5_4": 1.0})
    weight: float = 1.0
    criterion: str = "mse"


@dataclass(frozen=True)
class LossConfig:
    """Losses: pixel (phase 1, optionally phase 2), content and adversarial (phase 2).

    Attributes:
        pixel: ``"mse"`` (the paper's SRResNet) or ``"l1"``.
        pixel_weight_gan: weight of the pixel loss in phase 2 (0 in the paper).
        adversarial_weight: weight of the generator's adversarial loss (1e-3 in the paper).
    """

    pixel: str = "mse"
    pixel_weight_gan: float = 0.0
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    adversarial_weight: float = 1e-3


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase.

    Attributes:
        steps: optimiser steps (0 skips the phase).
        learning_rate: Adam's initial learning rate.
        decay_steps: steps (within the phase) at which the learning rate is multiplied by
            ``decay_factor`` (the paper: 1e-4, then 1e-5 for the second half of the GAN phase).
    """

    steps: int = 0
    learning_rate: float = 1e-4
    decay_steps: tuple[int, ...] = ()
    decay_factor: float = 0.1


@dataclass(frozen=True)
class OptimiserConfig:
    """Adam's betas (0.9, 0.999 as in the paper) and how the learning rate follows the batch.

    ``lr_scaling``: ``none`` uses each phase's ``learning_rate`` as written; ``linear`` / ``sqrt``
    multiply it by ``(batch_size * processes / reference_batch)`` or its square root, so a GPU run
    with a larger batch (issue #7: throughput needs batches of 128-256) keeps the step size per
    patch of the paper's setting (batch 16).
    """

    betas: tuple[float, float] = (0.9, 0.999)
    lr_scaling: str = "none"
    reference_batch: int = 16

    def lr_factor(self, batch_size: int, processes: int = 1) -> float:
        """The factor each phase's learning rate is multiplied by for this global batch."""
        ratio = batch_size * processes / self.reference_batch
        return {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[self.lr_scaling]


@dataclass(frozen=True)
class ValidationConfig:
    """Validation on held-out volumes every ``every`` steps (0: only at the end of each phase)."""

    every: int = 1000


@dataclass(frozen=True)
class LoggingConfig:
    """TensorBoard scalars every ``every`` steps, image grids every ``images_every`` steps."""

    every: int = 50
    images_every: int = 1000


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoint every ``every`` steps, keeping the ``keep`` newest."""

    every: int = 1000
    keep: int = 2


@dataclass(frozen=True)
class PerformanceConfig:
    """Device and speed switches.

    Attributes:
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        bf16: bf16 autocast: true, false or ``"auto"`` (on CUDA only).
        channels_last: NHWC memory format: true, false or ``"auto"`` (on CUDA only).
        compile: ``torch.compile`` the generator and discriminator.
        compile_mode: ``torch.compile``'s mode: ``default``, ``reduce-overhead`` (CUDA graphs: for
            small batches, whose steps are bound by kernel launches), ``max-autotune`` or
            ``max-autotune-no-cudagraphs``. Only ``default`` has been measured (docs/benchmarks.md).
        deterministic: deterministic algorithms (bit-exact resume on CPU; slower on GPU).
        cpu_threads: intra-op threads on the CPU (0: torch's default). Tiny networks run faster on one.
        output_conv: how the generator's 9x9 output convolution is computed: ``conv`` or
            ``shift-sum`` (the same function, meant for GPUs: ``srgan_med/nets/shift_sum.py``; not
            yet timed on one). It does not change the weights or checkpoints.
    """

    device: str = "auto"
    bf16: bool | str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    deterministic: bool = False
    cpu_threads: int = 0
    output_conv: str = "conv"


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: ``srgan-med train CONFIG``.

    Attributes:
        name: run name, used for exported model files (``<name>-srresnet.safetensors``).
        output_dir: checkpoints, TensorBoard logs and exported models go here.
        scale: in-plane factor (2, 3, 4 or 8).
        modality: ``"CT"`` or ``"MR"`` (recorded in exported models; picks metrics' data range).
        degradation: preset name (``ct``, ``mr``) or a YAML path, as in ``srgan-med degrade``.
        seed: seeds weights, patch sampling and degradation draws.
        pretrain: phase 1, SRResNet on the pixel loss.
        gan: phase 2, SRGAN fine-tuning from phase 1's generator.
        base_dir: folder the config was read from (paths in ``data``/``degradation`` are relative to it).
    """

    name: str = "srgan"
    output_dir: str = "runs/srgan"
    scale: int = 4
    modality: str = "CT"
    degradation: str = "ct"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    pretrain: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=1000))
    gan: PhaseConfig = field(default_factory=PhaseConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    base_dir: str = "."

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def resolve(self, text: str) -> Path:
        """A path from the config, relative to the config's folder."""
        path = Path(text).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    @property
    def output_path(self) -> Path:
        """``output_dir`` as a path: relative to the current directory, ``~`` the home folder (it
        made a folder named ``~`` in the current one)."""
        return Path(self.output_dir).expanduser()

    @property
    def vgg_weights(self) -> str:
        """``losses.perceptual.weights`` as :class:`~srgan_med.losses.PerceptualLoss` takes it: the
        words ``imagenet`` and ``random`` as they are, a path resolved against the config's folder."""
        weights = self.losses.perceptual.weights
        return weights if weights in ("imagenet", "random") else str(self.resolve(weights))


_CHOICES = {
    "modality": ("CT", "MR"),
    "generator.residual": ("none", "bicubic"),
    "data.cache": ("memory", "disk", "none"),
    "losses.pixel": ("mse", "l1"),
    "losses.perceptual.criterion": ("mse", "l1"),
    "performance.device": ("auto", "cpu", "cuda"),
    "performance.bf16": ("auto", True, False),
    "performance.channels_last": ("auto", True, False),
    "optimiser.lr_scaling": ("none", "linear", "sqrt"),
    "performance.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "performance.output_conv": ("conv", "shift-sum"),  # srgan_med.nets.srresnet.OUTPUT_CONVS
}


def _positive(value: float, path: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'non-negative' if allow_zero else 'positive'}, got {value}")


def _validate(config: TrainConfig) -> None:
    from srgan_med.losses.perceptual import LAYERS, halvings_before
    from srgan_med.nets.srresnet import SUPPORTED_SCALES

    check_choices(config, _CHOICES)
    if config.scale not in SUPPORTED_SCALES:
        raise ConfigError(
            f"scale: must be one of {', '.join(map(str, SUPPORTED_SCALES))}, got {config.scale}"
        )
    preset = config.degradation.lower()
    if preset in ("ct", "mr") and preset != config.modality.lower():  # degrade.config.PRESET_NAMES
        # The presets normalise differently (a HU window for CT, percentiles for MR): a CT model
        # trained through the MR preset would record a normalisation its users do not expect.
        raise ConfigError(
            f"degradation: the {preset} preset simulates {preset.upper()} acquisitions, and modality is "
            f"{config.modality}; use the {config.modality.lower()} preset (or a YAML file of your own)"
        )
    if not 0 <= config.seed < 2**32:  # numpy's and torch's generators take 32/64-bit seeds
        raise ConfigError(f"seed: must lie in 0..{2**32 - 1}, got {config.seed}")
    if not config.name or "/" in config.name:
        raise ConfigError(f"name: must be a non-empty file name, got {config.name!r}")
    data = config.data
    _positive(data.patch_size, "data.patch_size")
    if data.patch_size % config.scale:
        raise ConfigError(
            f"data.patch_size: must be a multiple of scale {config.scale}, got {data.patch_size}"
        )
    _positive(data.batch_size, "data.batch_size")
    _positive(data.validation_slices, "data.validation_slices")
    if not data.slice_axes or any(a not in (0, 1, 2) for a in data.slice_axes):
        raise ConfigError(f"data.slice_axes: must list voxel axes among 0, 1, 2, got {list(data.slice_axes)}")
    _positive(config.generator.blocks, "generator.blocks")
    _positive(config.generator.width, "generator.width")
    _positive(config.discriminator.width, "discriminator.width")
    perceptual = config.losses.perceptual
    for layer, weight in perceptual.layer_weights.items():
        if layer not in LAYERS:
            raise ConfigError(f"losses.perceptual.layer_weights.{layer}: not a VGG19 layer (e.g. relu5_4)")
        _positive(weight, f"losses.perceptual.layer_weights.{layer}", allow_zero=True)
    _positive(perceptual.weight, "losses.perceptual.weight", allow_zero=True)
    if config.gan.steps > 0 and perceptual.layer_weights:
        # the patch must survive VGG19's halvings (an 8-pixel patch reached relu5_4 at 0x0 after phase 1)
        deepest = max(perceptual.layer_weights, key=lambda name: LAYERS[name])
        halvings = halvings_before(deepest)
        if data.patch_size < 2**halvings:
            raise ConfigError(
                f"data.patch_size: {data.patch_size} is too small for the perceptual loss's {deepest}, "
                f"which VGG19 reaches after halving the patch {halvings} times; use at least {2**halvings}"
            )
    _positive(config.losses.pixel_weight_gan, "losses.pixel_weight_gan", allow_zero=True)
    _positive(config.losses.adversarial_weight, "losses.adversarial_weight", allow_zero=True)
    for phase in ("pretrain", "gan"):
        settings = getattr(config, phase)
        _positive(settings.steps, f"{phase}.steps", allow_zero=True)
        _positive(settings.learning_rate, f"{phase}.learning_rate")
        _positive(settings.decay_factor, f"{phase}.decay_factor")
        if list(settings.decay_steps) != sorted(settings.decay_steps) or any(
            s <= 0 for s in settings.decay_steps
        ):
            raise ConfigError(
                f"{phase}.decay_steps: must be increasing positive steps, got {list(settings.decay_steps)}"
            )
    if config.pretrain.steps + config.gan.steps == 0:
        raise ConfigError("pretrain.steps and gan.steps: at least one phase needs steps")
    if not all(0 <= b < 1 for b in config.optimiser.betas):
        raise ConfigError(f"optimiser.betas: must lie in [0, 1), got {list(config.optimiser.betas)}")
    _positive(config.optimiser.reference_batch, "optimiser.reference_batch")
    _positive(config.validation.every, "validation.every", allow_zero=True)
    _positive(config.logging.every, "logging.every")
    _positive(config.logging.images_every, "logging.images_every", allow_zero=True)
    _positive(config.checkpoint.every, "checkpoint.every")
    _positive(config.checkpoint.keep, "checkpoint.keep")
    _positive(config.performance.cpu_threads, "performance.cpu_threads", allow_zero=True)


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override (``--set key=value``) and validate a training config.

    Raises:
        ConfigError: unreadable file, unknown key or bad value (message names the dotted key path).
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder; give the training config's YAML file (e.g. configs/ct.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: training config not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read training config ({' '.join(str(error).split())})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a training config must be a mapping of sections")
    if "base_dir" in data:
        raise ConfigError(f"{path}: base_dir: unknown key (paths are relative to the config file)")
    data = apply_overrides(data, list(overrides or []))
    try:
        config = from_dict(TrainConfig, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return replace(config, base_dir=str(path.resolve().parent))


def config_from_mapping(data: dict[str, Any], base_dir: str | Path = ".") -> TrainConfig:
    """A config from a plain mapping (e.g. a checkpoint's sidecar)."""
    data = {k: v for k, v in data.items() if k != "base_dir"}
    return replace(from_dict(TrainConfig, data), base_dir=str(base_dir))
