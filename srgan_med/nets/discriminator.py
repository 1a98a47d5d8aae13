"""SRGAN discriminator of Ledig et al. 2017 (https://arxiv.org/abs/1609.04802), size-agnostic.

Eight 3x3 convolutions 64 -> 512 (stride 2 on every second), BN on all but the first, LeakyReLU
0.2, then dense 1024, LeakyReLU, dense 1. The paper's fixed 96x96 input fixed the dense layer's
size; an adaptive average pool to 6x6 (what a 96x96 patch gives) makes any patch size train.
"""

from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """``(B, channels, H, W) -> (B, 1)`` real/fake logits.

    Args:
        channels: image channels (1 for grey-scale scans).
        width: channels of the first convolution (64 in the paper; doubled every second conv).
    """

    def __init__(self, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for index in range(8):
            out_channels = width * 2 ** (index // 2)
            stride = 1 if index % 2 == 0 else 2
            layers.append(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1))
            if index > 0:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * 36, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(image)))
