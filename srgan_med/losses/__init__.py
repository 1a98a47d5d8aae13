"""Losses: VGG19 perceptual (content) loss."""

from srgan_med.losses.perceptual import LAYERS, PerceptualLoss, find_vgg19_weights, vgg19_features

__all__ = ["LAYERS", "PerceptualLoss", "find_vgg19_weights", "vgg19_features"]
