"""A ``k x k`` convolution with few output channels, computed as a ``1 x 1`` convolution to one plane
per kernel tap and output channel, then the sum of the shifted planes.

Why by hand: no library computes a convolution this way, and SRResNet's output convolution is the
case where it matters on a GPU. That convolution has one output channel (4 after
``fold_tail_before_shuffle`` moves it before the last pixel shuffle). cuDNN's implicit-GEMM kernels
pad the output channels to their tile, 32 wide, so most of their matrix work is padding. On an H100
(docs/results/h100-2026-11-26, ``--profile``) this one convolution took 31 % of a compiled x4
inference pass, identified by its kernel's tile and call count. In a compiled phase-1 training step
its forward and two backward kernels took 16.2 of 36.6 ms (identified by their FLOPs). The
``1 x 1`` convolution here is a matrix product with ``k * k * out_channels`` (81 or 100) outputs.
The shifted sum is one pass over planes no larger than the convolution's input.
"""

from __future__ import annotations

import torch
from torch import nn


def is_same_conv(conv: nn.Module) -> bool:
    """A ``Conv2d`` with a square odd kernel, stride 1, no dilation or groups, zero "same" padding."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.kernel_size[0] % 2 == 1
        and conv.padding == (conv.kernel_size[0] // 2,) * 2
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def shifted_sum(planes: torch.Tensor, size: int, outputs: int) -> torch.Tensor:
    """``out[:, o, y, x] = sum over taps (dy, dx) of planes[:, (dy * size + dx) * outputs + o,
    y + dy - r, x + dx - r]`` (zero outside), ``r = size // 2``, accumulated in float32 at least."""
    height, width = planes.shape[-2:]
    reach = size // 2
    padded = nn.functional.pad(planes, (reach, reach, reach, reach))
    wide = torch.promote_types(planes.dtype, torch.float32)  # bf16 planes add up in float32
    total = padded[:, :outputs, :height, :width].to(wide, copy=True)  # a copy, never a view
    for tap in range(1, size * size):
        dy, dx = divmod(tap, size)
        total += padded[:, tap * outputs : (tap + 1) * outputs, dy : dy + height, dx : dx + width]
    return total


def tap_matrix(weight: torch.Tensor) -> torch.Tensor:
    """``(out, in, k, k)`` -> ``(k * k * out, in)``: row ``(dy * k + dx) * out + o`` holds tap
    ``(dy, dx)`` of output channel ``o``. Tap-major, so the planes of one tap are adjacent channels
    (one read in channels_last), as :func:`shifted_sum` expects."""
    outputs, inputs, size, _ = weight.shape
    return weight.permute(2, 3, 0, 1).reshape(size * size * outputs, inputs)


class _ShiftedSum(torch.autograd.Function):
    """:func:`shifted_sum` with its gradient as one gather: the gradient of tap ``(dy, dx)``'s planes
    is the output's gradient shifted back by that tap. (Autograd's own gradient of the slices
    would allocate a zero tensor the size of all planes for each of the ``size * size`` taps.)"""

    @staticmethod
    def forward(ctx, planes: torch.Tensor, size: int, outputs: int) -> torch.Tensor:
        ctx.size, ctx.outputs, ctx.dtype = size, outputs, planes.dtype
        return shifted_sum(planes, size, outputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        size, reach = ctx.size, ctx.size // 2
        height, width = grad.shape[-2:]
        padded = nn.functional.pad(grad.to(ctx.dtype), (reach, reach, reach, reach))
        last = size - 1
        shifted = []
        for tap in range(size * size):
            dy, dx = divmod(tap, size)
            shifted.append(padded[:, :, last - dy : last - dy + height, last - dx : last - dx + width])
        return torch.cat(shifted, dim=1), None, None


def shift_sum_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(x, weight, bias, padding=k // 2)`` for a square odd ``k x k`` ``weight``, computed as
    a ``1 x 1`` convolution to ``k * k * out_channels`` planes and their shifted sum. Differentiable
    in ``x``, ``weight`` and ``bias``; the result is float32, or float64 for float64 input (the planes
    may be bf16 under autocast; their sum is taken in float32)."""
    outputs, inputs, size, _ = weight.shape
    taps = tap_matrix(weight)[:, :, None, None]
    total = _ShiftedSum.apply(nn.functional.conv2d(x, taps), size, outputs)
    return total if bias is None else total + bias.view(1, -1, 1, 1).to(total.dtype)
