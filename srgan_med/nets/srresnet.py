"""SRResNet generator of Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a
Generative Adversarial Network", CVPR 2017 (https://arxiv.org/abs/1609.04802), for grey-scale scans.

Example:
    >>> generator = SRResNet(scale=4)
    >>> generator(torch.zeros(1, 1, 24, 24)).shape
    torch.Size([1, 1, 96, 96])
"""

from __future__ import annotations

import torch
from torch import nn

from srgan_med.nets.shift_sum import shift_sum_conv2d

SUPPORTED_SCALES = (2, 3, 4, 8)
RESIDUALS = ("none", "bicubic")
# How the 9x9 output convolution is computed: as a convolution, or by shift_sum_conv2d (the same
# function, for GPUs: see srgan_med/nets/shift_sum.py). Not part of the weights.
OUTPUT_CONVS = ("conv", "shift-sum")


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity skip, ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Module):
    """Sub-pixel convolution: conv to ``factor**2`` times the channels, PixelShuffle, PReLU."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        self.activation = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """SRResNet: 9x9 conv + PReLU, ``blocks`` residual blocks, conv-BN + long skip, x2 (or x3)
    sub-pixel stages, 9x9 output conv.

    Args:
        scale: 2, 3, 4 or 8 (x2 stages; one x3 stage for 3).
        blocks: residual blocks (16 in the paper).
        width: feature channels (64 in the paper).
        channels: image channels in and out (1 for grey-scale scans).
        residual: ``"none"`` (the paper) or ``"bicubic"``: the network predicts the difference to the
            bicubic upscaling of its input (a global skip as in VDSR, Kim et al. 2016,
            https://arxiv.org/abs/1511.04587); the output convolution starts at zero, so the untrained
            network *is* bicubic and short (CPU) training only has to learn the missing detail.

    Shapes:
        ``(B, channels, H, W) -> (B, channels, H * scale, W * scale)`` for any ``H``, ``W``.
    """

    def __init__(
        self, scale: int = 4, blocks: int = 16, width: int = 64, channels: int = 1, residual: str = "none"
    ) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {scale}")
        if blocks < 1 or width < 1 or channels < 1:
            raise ValueError(
                f"blocks, width and channels must be positive, got {blocks}, {width}, {channels}"
            )
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {', '.join(RESIDUALS)}, got {residual!r}")
        self.scale = scale
        self.residual = residual
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU(width))
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        factors = [3] if scale == 3 else [2] * {2: 1, 4: 2, 8: 3}[scale]
        self.upsample = nn.Sequential(*[UpsampleBlock(width, f) for f in factors])
        self.tail = nn.Conv2d(width, channels, 9, padding=4)
        if residual == "bicubic":
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
        self.output_conv = "conv"  # or "shift-sum" (OUTPUT_CONVS); set by the trainer's config

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        features = self.head(low_res)
        features = features + self.body_tail(self.body(features))
        features = self.upsample(features)
        if self.output_conv == "shift-sum":
            output = shift_sum_conv2d(features, self.tail.weight, self.tail.bias)
        else:
            output = self.tail(features)
        if self.residual == "bicubic":
            output = output + nn.functional.interpolate(
                low_res, scale_factor=self.scale, mode="bicubic", align_corners=False
            )
        return output
