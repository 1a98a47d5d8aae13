"""Training data: data lists, cached normalised volumes, HR patch sampling, validation slices."""

from srgan_med.data.lists import expand_data_list
from srgan_med.data.volumes import PatchSampler, ValidationSet, Volume, load_volumes, validation_set

__all__ = ["PatchSampler", "ValidationSet", "Volume", "expand_data_list", "load_volumes", "validation_set"]
