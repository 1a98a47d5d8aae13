"""Shared builders for the degradation tests (not a test module)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from monai.data import MetaTensor

from srgan_med.degrade import DegradationConfig, config_from_dict


def config(**sections) -> DegradationConfig:
    """A config with no blur, no noise, no k-space unless a section says otherwise."""
    base = {"blur": {"profile": "none"}, "noise": {"kind": "none"}}
    base.update(sections)
    return config_from_dict(base)


def oblique_affine(spacing=(0.7, 0.9, 1.0)) -> np.ndarray:
    """A rotated, translated, anisotropic voxel-centre affine."""
    angle = 0.3
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-12.5, 30.25, 7.0]
    return affine


def scan(array, affine=None, modality="CT") -> MetaTensor:
    array = torch.as_tensor(np.asarray(array, dtype=np.float32))
    affine = np.eye(4) if affine is None else affine
    image = MetaTensor(array, affine=torch.as_tensor(affine, dtype=torch.float64))
    image.meta["modality"] = modality
    return image


def replace(cfg: DegradationConfig, **kwargs) -> DegradationConfig:
    return dataclasses.replace(cfg, **kwargs)
