"""Losses: VGG19 perceptual (content), adversarial and pixel losses."""

from srgan_med.losses.adversarial import AdversarialLoss, pixel_loss
from srgan_med.losses.perceptual import LAYERS, PerceptualLoss, find_vgg19_weights, vgg19_features

__all__ = [
    "LAYERS",
    "AdversarialLoss",
    "PerceptualLoss",
    "find_vgg19_weights",
    "pixel_loss",
    "vgg19_features",
]
