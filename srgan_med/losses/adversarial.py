"""Adversarial and pixel losses of SRGAN (Ledig et al. 2017, https://arxiv.org/abs/1609.04802).

The adversarial loss is binary cross-entropy on the discriminator's logits (the numerically stable
form of the paper's ``-log D(G(x))``); the generator's term is weighted (1e-3 in the paper), the
discriminator's is not, as in BasicSR's ``GANLoss(gan_type="vanilla")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srgan_med.errors import ConfigError


class AdversarialLoss(nn.Module):
    """BCE-with-logits against all-real or all-fake targets.

    Args:
        weight: multiplies the generator's loss (``for_discriminator=False``); 1e-3 in the paper.

    Call: ``(logits (B, 1), target_is_real, for_discriminator=False) -> scalar``.

    Example:
        >>> AdversarialLoss()(torch.zeros(2, 1), target_is_real=True, for_discriminator=True)
        tensor(0.6931)
    """

    def __init__(self, weight: float = 1e-3) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"losses.adversarial_weight: must not be negative, got {weight}")
        self.weight = float(weight)

    def forward(
        self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = False
    ) -> torch.Tensor:
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        return loss if for_discriminator else self.weight * loss


def pixel_loss(kind: str) -> nn.Module:
    """``"mse"`` (the paper's SRResNet loss) or ``"l1"``, mean over pixels."""
    losses = {"mse": nn.MSELoss, "l1": nn.L1Loss}
    if kind not in losses:
        raise ConfigError(f"losses.pixel: must be mse or l1, got {kind!r}")
    return losses[kind]()
