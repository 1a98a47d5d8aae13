"""Validation during training: PSNR and SSIM of the generator and of bicubic, in physical units.

Each held-out volume contributes evenly spaced slices with one fixed degradation draw
(:func:`srgan_med.data.volumes.validation_set`), so numbers are comparable across steps and runs.
The metrics are :mod:`srgan_med.metrics` (scikit-image checked) with an explicit data range: the CT
window width in HU, or the robust range of the MR volume.
"""

from __future__ import annotations

import numpy as np
import torch

from srgan_med import metrics
from srgan_med.data.volumes import ValidationSet
from srgan_med.interpolate import upscale_slices


def bicubic(low_res: torch.Tensor, scale: int) -> torch.Tensor:
    """``(N, 1, h, w)`` -> ``(N, 1, h * s, w * s)``, the project's bicubic baseline."""
    array = upscale_slices(low_res[:, 0].float().cpu().numpy(), (scale, scale), "bicubic")
    return torch.from_numpy(array)[:, None]


@torch.inference_mode()
def super_resolve(
    generator: torch.nn.Module, low_res: torch.Tensor, device, autocast: bool, batch: int = 8
) -> torch.Tensor:
    """The generator's output for ``low_res (N, 1, h, w)``, in eval mode, on the CPU in float32."""
    was_training = generator.training
    generator.eval()
    outputs = []
    try:
        for start in range(0, low_res.shape[0], batch):
            chunk = low_res[start : start + batch].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                outputs.append(generator(chunk).float().cpu())
    finally:
        generator.train(was_training)
    return torch.cat(outputs)


def validate(generator, sets: list[ValidationSet], scale: int, device, autocast: bool) -> dict[str, float]:
    """Mean PSNR (dB) / SSIM over the validation volumes, of the model and of bicubic."""
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_bicubic": [], "ssim_bicubic": []}
    for item in sets:
        reference = item.to_physical(item.high_res)
        if not item.bicubic_scores:
            baseline = item.to_physical(bicubic(item.low_res, scale))
            item.bicubic_scores = {
                "psnr_bicubic": metrics.psnr(reference, baseline, item.data_range),
                "ssim_bicubic": metrics.ssim(reference, baseline, item.data_range),
            }
        test = item.to_physical(super_resolve(generator, item.low_res, device, autocast))
        scores["psnr"].append(metrics.psnr(reference, test, item.data_range))
        scores["ssim"].append(metrics.ssim(reference, test, item.data_range))
        for key, value in item.bicubic_scores.items():
            scores[key].append(value)
    result = {key: float(np.mean(values)) for key, values in scores.items()}
    result["psnr_gain"] = result["psnr"] - result["psnr_bicubic"]
    result["ssim_gain"] = result["ssim"] - result["ssim_bicubic"]
    return result


def image_grid(generator, item: ValidationSet, scale: int, device, autocast: bool) -> torch.Tensor:
    """``(1, H, 4 W)`` image in [0, 1] of the middle validation slice: LR (nearest) | bicubic | SR | HR."""
    middle = item.low_res.shape[0] // 2
    low_res = item.low_res[middle : middle + 1]
    panels = [
        torch.nn.functional.interpolate(low_res.float(), scale_factor=scale, mode="nearest"),
        bicubic(low_res, scale),
        super_resolve(generator, low_res, device, autocast),
        item.high_res[middle : middle + 1].float(),
    ]
    return torch.cat([p[0].clamp(0, 1) for p in panels], dim=-1)
