"""The same convolutions computed other ways, for the generator's first and output convolutions:
there GPU convolution kernels spend most of their work on padding few channels to a wide tile, or
the output convolution re-reads the largest tensor of the network (the H100 measurements are in
``srgan_med/nets/shift_sum.py``, ``srgan_med/nets/prelu_matmul.py`` and :class:`UnfoldConv2d`,
and in docs/benchmarks.md). Each is the same function
as the convolution it replaces (``tests/test_enhance_inference.py``, ``tests/test_prelu_matmul.py``);
:func:`srgan_med.enhance.inference.prepare_for_inference` applies them on request, and
``fused-shift-sum`` by default on CUDA in bf16 (the fastest on an H100, compiled or not).
"""

from __future__ import annotations

import torch
from torch import nn

from srgan_med.nets.prelu_matmul import kernel_applies, load_kernel, prelu_matmul
from srgan_med.nets.shift_sum import is_same_conv, shift_sum_conv2d, shifted_sum, tap_matrix
from srgan_med.nets.srresnet import OUTPUT_CONVS

# The output convolution's forms for inference: the training-time ones, and "fused-shift-sum"
# (PReLUShiftSumConv2d, no gradient).
INFERENCE_OUTPUT_CONVS = (*OUTPUT_CONVS, "fused-shift-sum")
# The first convolution's forms: as a convolution, or "unfold" (UnfoldConv2d).
INPUT_CONVS = ("conv", "unfold")


def _frozen_bias(bias: torch.Tensor | None, channels: int) -> nn.Parameter:
    """A copy of ``bias`` (zeros when there is none) as a parameter that takes no gradient."""
    values = bias.detach().clone() if bias is not None else torch.zeros(channels)
    return nn.Parameter(values, requires_grad=False)


class ShiftSumConv2d(nn.Module):
    """``conv`` computed by :func:`srgan_med.nets.shift_sum.shift_sum_conv2d`: a ``1 x 1``
    convolution to one plane per kernel tap, then their shifted sum, in float32. The same function
    (the sums are reassociated; ``tests/test_enhance_inference.py``), aimed at GPU kernels that pad
    few output channels to a wide tile (that module's docstring has the measurement)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not is_same_conv(conv):
            raise ValueError("ShiftSumConv2d needs a stride-1, zero-padded, ungrouped square odd convolution")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = _frozen_bias(conv.bias, conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift_sum_conv2d(x, self.weight, self.bias)


def _aligned(count: int) -> int:
    """``count`` rounded up to a multiple of 8: rows of 8 bf16 values are 16-byte aligned."""
    return -(-count // 8) * 8


def _folded_tail(network: nn.Module) -> nn.Sequential | None:
    """The last upsampling block as ``fold_tail_before_shuffle`` leaves it, ``(conv, prelu,
    low-res output conv, shuffle)``, or ``None`` for a network of another shape."""
    upsample = getattr(network, "upsample", None)
    last = upsample[-1] if isinstance(upsample, nn.Sequential) and len(upsample) else None
    if isinstance(last, nn.Sequential) and len(last) == 4 and is_same_conv(last[2]):
        return last
    return None


def shift_sum_tail(network: nn.Module) -> nn.Module:
    """``network`` (after :func:`fold_tail_before_shuffle`) with its low-resolution output
    convolution as a :class:`ShiftSumConv2d`; networks of another shape are returned unchanged."""
    last = _folded_tail(network)
    if last is not None:
        last[2] = ShiftSumConv2d(last[2])
    return network


class PReLUShiftSumConv2d(nn.Module):
    """``conv(prelu(y + bias))`` in two passes: the bias and PReLU applied as the ``1 x 1`` product's
    operand is loaded (:func:`srgan_med.nets.prelu_matmul.prelu_matmul`, one Triton kernel on CUDA),
    then :func:`srgan_med.nets.shift_sum.shifted_sum` of its planes. Replaces ``bias`` (the
    convolution before it), ``prelu`` and ``conv`` of the folded tail; ``(B, C, H, W)`` without that
    bias -> ``(B, out, H, W)`` float32. Where the kernel does not apply (not channels_last, float32,
    no Triton) the same function runs as :class:`ShiftSumConv2d` after ``prelu``."""

    def __init__(self, bias: torch.Tensor | None, prelu: nn.PReLU, conv: nn.Conv2d) -> None:
        super().__init__()
        self.shift_sum = ShiftSumConv2d(conv)
        self.size, self.outputs = conv.kernel_size[0], conv.out_channels
        columns = self.size**2 * self.outputs
        taps = torch.zeros(conv.in_channels, _aligned(columns))  # aligned rows of planes
        taps[:, :columns] = tap_matrix(conv.weight.detach()).t()
        self.taps = nn.Parameter(taps, requires_grad=False)
        self.in_bias = _frozen_bias(bias, conv.in_channels)
        self.alpha = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = y.shape
        if y.is_contiguous(memory_format=torch.channels_last):  # else the rows below would be a copy
            rows = y.permute(0, 2, 3, 1).reshape(batch * height * width, channels)  # a view
            if kernel_applies(rows):
                planes = prelu_matmul(rows, self.in_bias, self.alpha, self.taps)
                planes = planes.view(batch, height, width, -1).permute(0, 3, 1, 2)
                return shifted_sum(planes, self.size, self.outputs) + self.shift_sum.bias.view(1, -1, 1, 1)
        shifted = y + self.in_bias.view(1, -1, 1, 1).to(y.dtype)
        return self.shift_sum(nn.functional.prelu(shifted, self.alpha.to(y.dtype)))


def fused_shift_sum_tail(network: nn.Module) -> nn.Module:
    """``network`` (after :func:`fold_tail_before_shuffle`) with the last upsampling convolution's
    bias, the PReLU and the low-resolution output convolution as one :class:`PReLUShiftSumConv2d`;
    networks of another shape are returned unchanged."""
    last = _folded_tail(network)
    if last is not None:
        conv, prelu = last[0], last[1]
        fused = PReLUShiftSumConv2d(conv.bias, prelu, last[2])
        conv.bias = None
        network.upsample[-1] = nn.Sequential(conv, fused, last[3])
    return network


class UnfoldConv2d(nn.Module):
    """``conv`` with few input channels computed as one ``1 x 1`` convolution over the
    ``in * k * k`` shifted copies of its input (im2col). ``(B, C, H, W) -> (B, out, H, W)``, in
    ``channels_last`` or NCHW as told.

    Why: SRResNet's first convolution reads one channel with a 9x9 kernel. On an H100 cuDNN ran it
    with a generic kernel at about 17 TFLOP/s (2.5 ms of an 84.3 ms compiled x4 pass of 256 slices,
    docs/results/h100-2026-11-26); the copies are 81 channels, a matrix product with 64 outputs.
    """

    def __init__(self, conv: nn.Conv2d, channels_last: bool = False) -> None:
        super().__init__()
        # The layout of the output, stated: a one-channel input does not show its own (its NCHW
        # and NHWC strides are both "contiguous").
        self.channels_last = channels_last
        if not is_same_conv(conv):
            raise ValueError("UnfoldConv2d needs a stride-1, zero-padded, ungrouped square odd convolution")
        self.size = conv.kernel_size[0]
        depth = conv.in_channels * self.size**2
        weight = torch.zeros(conv.out_channels, _aligned(depth), 1, 1)
        weight[:, :depth, 0, 0] = conv.weight.detach().reshape(conv.out_channels, depth)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = _frozen_bias(conv.bias, conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # the copies in the dtype the product casts them to
            x = x.to(torch.get_autocast_dtype(x.device.type))
        height, width = x.shape[-2:]
        reach = self.size // 2
        padded = nn.functional.pad(x, (reach, reach, reach, reach))
        # Channel c, tap (dy, dx) at index (c * k + dy) * k + dx: conv.weight's own order.
        copies = [
            padded[:, c : c + 1, dy : dy + height, dx : dx + width]
            for c in range(x.shape[1])
            for dy in range(self.size)
            for dx in range(self.size)
        ]
        copies += [torch.zeros_like(copies[0])] * (self.weight.shape[1] - len(copies))
        stacked = torch.cat(copies, dim=1)
        if self.channels_last:
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        return nn.functional.conv2d(stacked, self.weight.to(stacked.dtype), self.bias.to(stacked.dtype))


def rewrite_head(network: nn.Module, input_conv: str, channels_last: bool) -> nn.Module:
    """``network`` (an SRResNet) with its first convolution in the form ``input_conv``
    (:data:`INPUT_CONVS`), its output in the layout the network runs in; networks without a
    ``head`` convolution are returned unchanged."""
    head = getattr(network, "head", None)
    if input_conv == "unfold" and isinstance(head, nn.Sequential) and len(head) and is_same_conv(head[0]):
        head[0] = UnfoldConv2d(head[0], channels_last)
    return network


def rewrite_tail(network: nn.Module, output_conv: str) -> nn.Module:
    """``network`` (after ``fold_tail_before_shuffle``) with its low-resolution output convolution in
    the form ``output_conv`` (:data:`INFERENCE_OUTPUT_CONVS`)."""
    if output_conv == "shift-sum":
        return shift_sum_tail(network)
    if output_conv == "fused-shift-sum":
        load_kernel()  # before any torch.compile traces the network
        return fused_shift_sum_tail(network)
    return network
