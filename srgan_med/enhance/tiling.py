"""Seam-free tiled inference for fully convolutional super-resolution networks.

Why by hand: MONAI's ``sliding_window_inference`` blends overlapping windows, but a window's output
near its border is computed without full context (zero padding), so blended seams differ from the
untiled result. Here every tile is inferred with a halo at least as wide as the network's receptive
field and only its centre is kept, so the tiled output equals the untiled one to float tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Upscaler = Callable[[torch.Tensor], torch.Tensor]


def tiled_upscale(upscale: Upscaler, low_res: torch.Tensor, scale: int, tile: int, halo: int) -> torch.Tensor:
    """Apply ``upscale`` tile by tile and stitch the centres.

    Args:
        upscale: maps ``(B, C, h, w)`` to ``(B, C, h * scale, w * scale)``.
        low_res: ``(B, C, H, W)`` input.
        scale: the network's upscaling factor.
        tile: tile size in input pixels (without halo); ``0`` or ``>= max(H, W)`` disables tiling.
        halo: context in input pixels added on each side (>= the receptive-field radius).

    Returns:
        ``(B, C, H * scale, W * scale)``.
    """
    if low_res.ndim != 4:
        raise ValueError(f"low_res must be (B, C, H, W), got shape {tuple(low_res.shape)}")
    batch, channels, height, width = low_res.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return upscale(low_res)
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    output = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            # input window with halo, clipped at the image border (where the untiled net pads too)
            top_h, left_h = max(top - halo, 0), max(left - halo, 0)
            bottom_h, right_h = min(bottom + halo, height), min(right + halo, width)
            result = upscale(low_res[:, :, top_h:bottom_h, left_h:right_h])
            if output is None:
                output = result.new_empty((batch, result.shape[1], height * scale, width * scale))
            r0, c0 = (top - top_h) * scale, (left - left_h) * scale
            output[:, :, top * scale : bottom * scale, left * scale : right * scale] = result[
                :, :, r0 : r0 + (bottom - top) * scale, c0 : c0 + (right - left) * scale
            ]
    assert output is not None  # the loops run at least once for a non-empty input
    return output


def receptive_field_radius(network: torch.nn.Module) -> int:
    """Upper bound of the receptive-field radius, in input pixels, of a convolutional network.

    Sums ``dilation * (kernel - 1) / 2`` over every ``Conv2d``. Convolutions after an upsampling
    stage really see less of the input than that, so this over-estimates, which only costs a wider
    halo; it never under-estimates for conv / pixel-shuffle stacks such as SRResNet.
    """
    radius = 0.0
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            radius += module.dilation[0] * (module.kernel_size[0] - 1) / 2
    return int(-(-radius // 1))
