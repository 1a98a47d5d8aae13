"""VGG19 perceptual (content) loss of Ledig et al. 2017 (https://arxiv.org/abs/1609.04802).

Grey slices are replicated to 3 channels, mapped to ImageNet mean/std, and compared on VGG19
feature maps (default phi_5,4 = ``relu5_4``) scaled by 1/12.75 as in the paper. The VGG is frozen
and stays in eval mode.

Weights are torchvision's ImageNet VGG19 (``vgg19-dcbb9e9d.pth``), looked up in torchvision's cache
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) or at an explicit path;
nothing is downloaded. ``weights="random"`` (tests only) builds a seeded random VGG, says so in a
WARNING log line and in :attr:`PerceptualLoss.weight_source`, which checkpoints record.

The layer stack is written out here with torchvision's exact layout and state-dict keys because
PyPI's torchvision does not import beside the CPU torch build this project pins; when torchvision
is importable its own ``vgg19`` is used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from srgan_med.errors import ConfigError, InputError, WeightsNotFoundError

logger = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1
# torchvision names its files after the first hex digits of their SHA-256 (torch.hub's check_hash)
VGG19_SHA256_PREFIX = "dcbb9e9d"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
RANDOM_SOURCE = "random-init (NOT ImageNet)"
_CONFIG = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> dict[str, int]:
    """``conv{b}_{i}`` / ``relu{b}_{i}`` / ``pool{b}`` -> index in ``features``."""
    names, block, conv, index = {}, 1, 1, 0
    for item in _CONFIG:
        if item == "M":
            names[f"pool{block}"] = index
            block, conv, index = block + 1, 1, index + 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            conv, index = conv + 1, index + 2
    return names


LAYERS = _layer_names()


def halvings_before(layer: str) -> int:
    """How many of VGG19's 2x2 max-poolings an input passes to reach ``layer`` (``pool{b}`` itself
    included): a patch must be at least ``2 ** halvings_before(layer)`` pixels wide to reach it."""
    index, position, count = LAYERS[layer], 0, 0
    for item in _CONFIG:
        if position > index:
            break
        count, position = (count + 1, position + 1) if item == "M" else (count, position + 2)
    return count


def vgg19_features() -> nn.Sequential:
    """An untrained VGG19 ``features`` stack with torchvision's layout and state-dict keys."""
    try:
        import torchvision

        return torchvision.models.vgg19(weights=None).features
    except Exception:  # noqa: BLE001 - absent, or the PyPI build that fails to import beside this torch
        pass
    layers: list[nn.Module] = []
    channels = 3
    for item in _CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return nn.Sequential(*layers)


def find_vgg19_weights(weights: str = "imagenet") -> Path:
    """The ImageNet VGG19 file: an explicit path, or torchvision's cache. Raises if absent."""
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"VGG19 weights not found at {path}")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    if not path.is_file():
        raise WeightsNotFoundError(
            f"ImageNet VGG19 weights not found at {path}; on a machine with internet run "
            "python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\" "
            f"(or download {VGG19_URL}) and copy the file there, or set losses.perceptual.weights to its path"
        )
    return path


def load_vgg19_state(path: Path) -> dict[str, torch.Tensor]:
    """The convolution weights of torchvision's VGG19 state dict at ``path`` (its ``features.*``
    tensors, prefix dropped), checked against :func:`vgg19_features`'s names and shapes.

    Raises:
        InputError: the file is not one torch reads, or holds no VGG19 (another network, a damaged
            copy): one line naming the file, before any data is loaded.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own: zip reader, unpickler, truncated file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise InputError(f"{path}: not a VGG19 weights file torch can read ({reason})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a VGG19 state dict")
    features = {
        key.removeprefix("features."): value
        for key, value in state.items()
        if isinstance(key, str) and key.startswith("features.") and isinstance(value, torch.Tensor)
    }
    expected = {key: tuple(value.shape) for key, value in vgg19_features().state_dict().items()}
    wrong = [key for key, shape in expected.items() if getattr(features.get(key), "shape", None) != shape]
    if wrong:
        raise InputError(
            f"{path}: not torchvision's VGG19 (features.{wrong[0]} missing or of another shape; "
            f"{len(wrong)} of its {len(expected)} convolution tensors differ)"
        )
    return {key: features[key] for key in expected}


def vgg19_source(path: Path) -> str:
    """What a VGG19 weights file is, for checkpoints and model cards: ``imagenet:PATH`` only when
    its SHA-256 is that of torchvision's ImageNet file, as torch.hub checks a download; any other
    file (another VGG19, a fine-tuned one, a damaged copy) is recorded as unverified, with a warning."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    hexdigest = digest.hexdigest()
    path = Path(path).resolve()
    if hexdigest.startswith(VGG19_SHA256_PREFIX):
        return f"imagenet:{path}"
    logger.warning(
        "perceptual loss: %s is not torchvision's ImageNet VGG19 (%s; its SHA-256 starts %s, not %s): "
        "recorded as an unverified VGG19",
        path,
        VGG19_FILE,
        hexdigest[:8],
        VGG19_SHA256_PREFIX,
    )
    return f"unverified VGG19 file (NOT torchvision's ImageNet weights): {path} sha256:{hexdigest}"


class PerceptualLoss(nn.Module):
    """Weighted MSE (or L1) between VGG19 feature maps of two images.

    Args:
        layer_weights: layer name (``relu5_4``, ``conv5_4``, ...) -> weight. Default ``{"relu5_4": 1}``.
        weights: ``"imagenet"`` (torchvision cache), a path to the ``.pth`` file, or ``"random"``.
        use_input_norm: map inputs from ``[0, 1]`` to ImageNet mean/std.
        feature_scale: multiplies the features (the paper's 1/12.75).
        criterion: ``"mse"`` or ``"l1"``.
        seed: seed of the random VGG when ``weights="random"``.

    Shapes:
        ``(B, 1 or 3, H, W)`` twice -> scalar.
    """

    def __init__(
        self,
        layer_weights: dict[str, float] | None = None,
        weights: str = "imagenet",
        use_input_norm: bool = True,
        feature_scale: float = 1 / 12.75,
        criterion: str = "mse",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.layer_weights = dict(layer_weights or {"relu5_4": 1.0})
        unknown = [name for name in self.layer_weights if name not in LAYERS]
        if unknown:
            raise ConfigError(f"perceptual.layer_weights: unknown VGG19 layer(s) {', '.join(unknown)}")
        if criterion not in ("mse", "l1"):
            raise ConfigError(f"perceptual.criterion: must be mse or l1, got {criterion!r}")
        features = vgg19_features()
        if weights == "random":
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for module in features.modules():
                    if isinstance(module, nn.Conv2d):
                        nn.init.kaiming_normal_(module.weight, generator=generator)
                        module.bias.zero_()
            self.weight_source = RANDOM_SOURCE
            logger.warning(
                "perceptual loss uses a RANDOMLY INITIALISED VGG19, not ImageNet weights (tests only)"
            )
        else:
            path = find_vgg19_weights(weights)
            features.load_state_dict(load_vgg19_state(path))
            self.weight_source = vgg19_source(path)
        last = max(LAYERS[name] for name in self.layer_weights)
        self.features = features[: last + 1].eval()
        for parameter in self.features.parameters():
            parameter.requires_grad_(False)
        for module in self.features.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False  # keep the tapped activations intact
        self.use_input_norm = use_input_norm
        self.feature_scale = feature_scale
        self.distance = nn.functional.mse_loss if criterion == "mse" else nn.functional.l1_loss
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # the VGG never leaves eval mode
        return self

    def _taps(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        if self.use_input_norm:
            image = (image - self.mean) / self.std
        wanted = {LAYERS[name]: name for name in self.layer_weights}
        taps = {}
        for index, layer in enumerate(self.features):
            image = layer(image)
            if index in wanted:
                taps[wanted[index]] = image * self.feature_scale
        return taps

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output_taps = self._taps(output)
        with torch.no_grad():
            target_taps = self._taps(target.detach())
        return sum(
            weight * self.distance(output_taps[name], target_taps[name])
            for name, weight in self.layer_weights.items()
        )
