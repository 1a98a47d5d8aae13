"""A generator made ready for fast inference without changing the function it computes.

Three exact rewrites (equal to the trained generator up to float32 rounding, checked in
``tests/test_enhance_inference.py``):

- eval-mode ``BatchNorm2d`` folded into the ``Conv2d`` before it (one pass over the activations
  fewer per convolution; ``torch.nn.utils.fusion.fuse_conv_bn_eval``);
- SRResNet's output convolution moved before the last pixel shuffle, to the low-resolution grid
  (:func:`fold_tail_before_shuffle`): at full resolution this one-output-channel 9x9 convolution took
  a fifth of a x4 forward pass on CPU;
- on CPU, activations and weights in ``channels_last`` (NHWC), the layout oneDNN's convolutions work
  in, so every convolution skips two layout conversions; on CUDA with bf16 too.

Measured with ``benchmarks/enhance_speed.py`` and ``benchmarks/gpu_inference.py`` (figures in
``docs/benchmarks.md``). The first and the output convolution can be computed in other forms
(:mod:`srgan_med.enhance.conv_forms`: ``input_conv``, ``output_conv``); on CUDA in bf16 the output
convolution is by default ``"fused-shift-sum"`` (:func:`default_output_conv`).

Precision is a separate, explicit choice (:func:`default_precision`): on CUDA bf16 autocast; on a CPU
with native bf16, ``"mixed"`` (the trunk in bf16, the first and the output convolution in float32);
elsewhere strict IEEE fp32. Full bf16 is not used on the CPU: rounding a CT slice normalised to the
-1000..2000 HU window to bfloat16 already moves soft tissue by up to ~6 HU before the network runs,
and it moved PSNR by up to 0.012 dB on the CPU. ``gpu_inference.py`` measures what each precision
costs in PSNR on the public scans (the bar: 0.01 dB).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from srgan_med.enhance.conv_forms import INFERENCE_OUTPUT_CONVS, INPUT_CONVS, rewrite_head, rewrite_tail
from srgan_med.nets.prelu_matmul import load_kernel
from srgan_med.nets.shift_sum import is_same_conv


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with every ``Conv2d`` -> ``BatchNorm2d`` pair inside an ``nn.Sequential``
    replaced by one convolution (and ``nn.Identity``).

    Only pairs that are adjacent in a ``Sequential`` are folded: there the convolution's output feeds
    the normalisation and nothing else. Modules in training mode are left as they are (their
    normalisation uses batch statistics, which cannot be folded).
    """
    folded = copy.deepcopy(network)
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, norm = module[index], module[index + 1]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(norm, nn.BatchNorm2d)
                and not conv.training
                and not norm.training
                and norm.track_running_stats
                and norm.running_mean is not None
            ):
                module[index] = fuse_conv_bn_eval(conv, norm)
                module[index + 1] = nn.Identity()
    return folded


def _low_res_tail(tail: nn.Conv2d, factor: int) -> nn.Conv2d:
    """The convolution ``tail`` applied after ``PixelShuffle(factor)``, rewritten to run before it.

    ``tail(shuffle(z)) == shuffle(low_res(z))``: output phase ``(p, q)`` of high-res pixel
    ``(f * Y + p, f * X + q)`` reads shuffled input ``(c, f * Y + p + dy, ...)`` = ``z[c * f * f + i * f
    + j, Y + m, ...]`` with ``p + dy = f * m + i``, so each tap of ``tail`` lands in one tap of a
    ``(2M + 1)``-wide low-res kernel, ``M = ceil(pad / f)``. Zero padding maps to zero padding (a
    high-res index is outside the image exactly when its low-res index is), so the rewrite is exact.
    """
    out_channels, in_channels, size, _ = tail.weight.shape
    pad = size // 2
    reach = -(-pad // factor)
    low = nn.Conv2d(in_channels * factor**2, out_channels * factor**2, 2 * reach + 1, padding=reach)
    weight = torch.zeros_like(low.weight)
    source = tail.weight.detach()
    for p in range(factor):
        for q in range(factor):
            outputs = torch.arange(out_channels) * factor**2 + p * factor + q
            for dy in range(-pad, pad + 1):
                m_y, i = divmod(p + dy, factor)
                for dx in range(-pad, pad + 1):
                    m_x, j = divmod(q + dx, factor)
                    inputs = torch.arange(in_channels) * factor**2 + i * factor + j
                    weight[outputs[:, None], inputs[None, :], reach + m_y, reach + m_x] = source[
                        :, :, pad + dy, pad + dx
                    ]
    with torch.no_grad():
        low.weight.copy_(weight)
        if tail.bias is None:
            low.bias.zero_()
        else:
            low.bias.copy_(tail.bias.detach().repeat_interleave(factor**2))
    return low


def fold_tail_before_shuffle(network: nn.Module) -> nn.Module:
    """A copy of an SRResNet-shaped ``network`` whose output convolution runs before the last
    pixel shuffle, at low resolution.

    SRResNet's 9x9 output convolution with one output channel runs at full output resolution, where
    oneDNN reaches a fraction of its speed (a fifth of a x4 forward pass on CPU); the rewritten 5x5
    convolution with ``factor**2`` outputs runs on the ``factor``-times smaller grid, and the last
    shuffle and PReLU move to smaller tensors. Exact (:func:`_low_res_tail`); networks of another
    shape are returned unchanged.
    """
    folded = copy.deepcopy(network)
    upsample, tail = getattr(folded, "upsample", None), getattr(folded, "tail", None)
    if not isinstance(upsample, nn.Sequential) or not isinstance(tail, nn.Conv2d) or not len(upsample):
        return folded
    last = upsample[-1]
    conv, shuffle = getattr(last, "conv", None), getattr(last, "shuffle", None)
    activation = getattr(last, "activation", None)
    exact = (
        isinstance(conv, nn.Conv2d)
        and isinstance(shuffle, nn.PixelShuffle)
        and isinstance(activation, nn.PReLU)
        and is_same_conv(tail)
    )
    if not exact:
        return folded
    factor = shuffle.upscale_factor
    prelu = nn.PReLU(activation.num_parameters * (factor**2 if activation.num_parameters > 1 else 1))
    with torch.no_grad():
        prelu.weight.copy_(
            activation.weight.detach().repeat_interleave(prelu.num_parameters // activation.num_parameters)
        )
    upsample[-1] = nn.Sequential(conv, prelu, _low_res_tail(tail, factor), nn.PixelShuffle(factor))
    folded.tail = nn.Identity()
    folded.output_conv = "conv"  # a training-time choice (SRResNet.output_conv); the tail is gone
    return folded.eval()


PRECISIONS = ("fp32", "tf32", "bf16", "mixed")
# What ``prepare_for_inference`` runs on CUDA when no precision is asked for. Chosen by
# ``benchmarks/gpu_inference.py`` (docs/benchmarks.md): the fastest precision whose PSNR on the public
# scans stays within 0.01 dB of strict fp32 for every shipped model. On an H200 (2026-11-26) bf16
# moved PSNR by at most 0.0044 dB over 18 scan x model pairs and ran 5.2x faster than strict fp32.
CUDA_DEFAULT_PRECISION = "bf16"


def default_precision(device: torch.device, network: nn.Module | None = None) -> str:
    """What ``prepare_for_inference`` runs when no precision is asked for: on CUDA
    :data:`CUDA_DEFAULT_PRECISION`; on a CPU with native bf16, ``"mixed"`` for a (folded) SRResNet
    (within 0.0045 dB of strict fp32 on every public scan x shipped model, 1.5x faster on a 2-core
    EPYC; measured by ``benchmarks/gpu_inference.py`` and ``enhance_speed.py``); else strict
    ``"fp32"``."""
    if device.type == "cuda":
        return CUDA_DEFAULT_PRECISION
    if device.type == "cpu" and native_bf16_cpu() and (network is None or _mixable(network)):
        return "mixed"
    return "fp32"


def default_output_conv(device: torch.device, precision: str) -> str:
    """The output convolution's form when none is asked for: ``"fused-shift-sum"`` on CUDA in bf16
    when Triton is there (its kernel: :mod:`srgan_med.nets.prelu_matmul`), else ``"conv"``.

    Measured by ``benchmarks/gpu_inference.py`` on an H100 (2026-11-26,
    docs/results/h100-2026-11-26-forms): x4 at batch 256, 2,026 slices/s eager against 1,726 with the
    convolution, and 4,062 compiled against 3,006; PSNR eager within 0.0049 dB of strict fp32 on every
    public scan x shipped model (0.0044 dB for bf16 with the convolution). Elsewhere the kernel does not run
    (float32, or no CUDA), and its torch fallback is no faster than the convolution."""
    if device.type == "cuda" and precision == "bf16" and load_kernel():
        return "fused-shift-sum"
    return "conv"


@contextlib.contextmanager
def _cudnn_tf32(enabled: bool, device_type: str):
    """cuDNN's TF32 tensor-core convolutions on (``"tf32"``) or off (IEEE float32) inside; a no-op
    off CUDA, where float32 convolutions are IEEE either way."""
    if device_type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


class _Bfloat16(nn.Module):
    """Runs ``module`` under bf16 autocast and hands back float32."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.module(x).float()


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it
    and bf16 is slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _mixable(network: nn.Module) -> bool:
    upsample = getattr(network, "upsample", None)
    parts = ("head", "body", "body_tail", "upsample", "tail")
    if not all(hasattr(network, p) for p in parts) or not isinstance(upsample, nn.Sequential):
        return False
    last = upsample[-1] if len(upsample) else None
    return isinstance(last, nn.Sequential) and len(last) == 4 and isinstance(network.tail, nn.Identity)


def mixed_precision(network: nn.Module) -> nn.Module:
    """``network`` (an SRResNet after :func:`fold_tail_before_shuffle`) with its trunk in bf16: the
    residual blocks, the body's last convolution and the sub-pixel convolutions with their PReLU. The
    first convolution (which reads the image) and the output convolution (which writes it) stay in
    float32, as do the long skip and the residual sums, so neither the input nor the output is ever
    rounded to bf16's 8 bits. Networks of another shape are refused."""
    if not _mixable(network):
        raise ValueError(
            "precision 'mixed' needs an SRResNet-shaped generator with its output convolution "
            "folded before the last shuffle (fold_tail_before_shuffle)"
        )
    upsample, last = network.upsample, network.upsample[-1]
    network.body = _Bfloat16(network.body)
    network.body_tail = _Bfloat16(network.body_tail)
    for index in range(len(upsample) - 1):
        upsample[index] = _Bfloat16(upsample[index])
    conv, prelu, tail, shuffle = last
    upsample[-1] = nn.Sequential(_Bfloat16(nn.Sequential(conv, prelu)), tail, shuffle)
    return network


class InferenceGenerator(nn.Module):
    """Wraps a generator prepared by :func:`prepare_for_inference`.

    ``(B, C, h, w)`` float32 in any layout -> ``(B, C, h * s, w * s)`` float32, contiguous (NCHW),
    so callers see exactly the tensor the plain generator would return (in ``precision``).
    """

    def __init__(self, network: nn.Module, channels_last: bool, precision: str = "fp32") -> None:
        super().__init__()
        self.network = network
        self.channels_last = channels_last
        self.precision = precision

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            low_res = low_res.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16":  # autocast itself, so torch.compile traces it without a break
            with torch.autocast(low_res.device.type, dtype=torch.bfloat16):
                high_res = self.network(low_res)
        else:  # "mixed" has its bf16 inside the network (mixed_precision); the rest is float32
            with _cudnn_tf32(self.precision == "tf32", low_res.device.type):
                high_res = self.network(low_res)
        return high_res.float().contiguous()


def prepare_for_inference(
    generator: nn.Module,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool | None = None,
    precision: str | None = None,
    output_conv: str | None = None,
    input_conv: str = "conv",
) -> InferenceGenerator:
    """An eval-mode copy of ``generator`` on ``device``, with batch norm folded and, on CPU, the
    channels-last layout. The original module is not modified.

    Args:
        generator: a convolutional generator (e.g. :class:`srgan_med.nets.SRResNet`).
        device: where it will run.
        channels_last: use NHWC; default: on CPU, and on CUDA with bf16 or mixed.
        precision: ``"fp32"`` (IEEE float32; cuDNN's TF32 off), ``"tf32"`` (TF32 tensor-core
            convolutions on CUDA), ``"bf16"`` (autocast) or ``"mixed"`` (:func:`mixed_precision`);
            default: :func:`default_precision`.
        output_conv: ``"conv"`` (the output convolution as a convolution), ``"shift-sum"``
            (``ShiftSumConv2d``, the same function computed another way; 10 % slower on a 2-core
            CPU, 2 % slower eager on an H100), or ``"fused-shift-sum"`` (``PReLUShiftSumConv2d``:
            the PReLU before it fused into the product, a Triton kernel on CUDA); default:
            :func:`default_output_conv`. See :mod:`srgan_med.enhance.conv_forms`.
        input_conv: ``"conv"`` or ``"unfold"`` (``UnfoldConv2d``, the first convolution as a
            product over shifted copies of the input; on an H100 1 % slower eager and a quarter
            slower compiled, so not the default).

    Returns:
        :class:`InferenceGenerator` computing the same function as ``generator.eval()``.
    """
    device = torch.device(device)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if output_conv is not None and output_conv not in INFERENCE_OUTPUT_CONVS:
        raise ValueError(f"output_conv must be one of {INFERENCE_OUTPUT_CONVS}, got {output_conv!r}")
    if input_conv not in INPUT_CONVS:
        raise ValueError(f"input_conv must be one of {INPUT_CONVS}, got {input_conv!r}")
    if precision == "mixed" and output_conv == "fused-shift-sum":
        raise ValueError(
            "precision 'mixed' keeps the output convolution in float32, where 'fused-shift-sum' has no kernel"
        )
    # Rewritten on the CPU (the rewrites build their weights there), then moved.
    network = fold_tail_before_shuffle(fold_batch_norm(copy.deepcopy(generator).cpu().eval()))
    if precision is None:
        precision = default_precision(device, network)
    if output_conv is None:
        output_conv = default_output_conv(device, precision)
    network = rewrite_tail(network, output_conv)
    if channels_last is None:
        channels_last = device.type == "cpu" or precision in ("bf16", "mixed")
    network = rewrite_head(network, input_conv, channels_last).to(device)
    if precision == "mixed":
        network = mixed_precision(network)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return InferenceGenerator(network, channels_last, precision).eval()


def _error_line(error: BaseException) -> str:
    """``"Type: first line of the message"``: torch.compile's errors run to pages."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


def compile_problem(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot build kernels on ``device`` here, or ``None``.

    It compiles a one-line function (seconds, cold): torch has no public "can compile" check, and a
    real compile covers a missing C/C++ compiler, an unsupported GPU and a broken toolchain alike.
    """
    try:
        torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(3, device=device))
    except Exception as error:  # noqa: BLE001 - any failure means: it cannot compile here
        return with_compiler_hint(_error_line(error), device)
    return None


def with_compiler_hint(reason: str, device: torch.device | str) -> str:
    """``reason``, led by the likely cause when no C++ compiler is on the PATH (Inductor builds its
    CPU kernels with the one ``CXX`` names, else g++ or clang++); its own error does not say so."""
    import os
    import shutil

    if torch.device(device).type != "cpu":
        return reason
    candidates = [os.environ["CXX"]] if "CXX" in os.environ else ["g++", "clang++", "c++"]
    if any(name and shutil.which(name) for name in candidates):
        return reason
    named = f"CXX={os.environ['CXX']!r} is not a program" if "CXX" in os.environ else "no C++ compiler found"
    return f"{named}: install g++ or clang++, or set CXX ({reason})"


class CompiledGenerator:
    """``generator`` run through ``torch.compile`` (mode ``default``), failures of the compiler raised
    as :class:`~srgan_med.errors.CompileError`.

    Compiling takes seconds to minutes, once per input shape (from the second shape on, with dynamic
    sizes); each pass after that is faster. Measured on an H100 with ``benchmarks/gpu_inference.py``
    (docs/benchmarks.md): x4, 128x128 slices at batch 256, 4,062 slices/s compiled against 2,026
    eager. Same function: ``tests/test_enhance_inference.py``.
    """

    def __init__(self, generator: InferenceGenerator) -> None:
        self.precision = generator.precision
        self._compiled = torch.compile(generator)

    def __call__(self, low_res: torch.Tensor) -> torch.Tensor:
        from torch._dynamo.exc import TorchDynamoException
        from torch._inductor.exc import InductorError

        from srgan_med.errors import CompileError

        try:
            return self._compiled(low_res)
        except (TorchDynamoException, InductorError) as error:
            reason = _error_line(error)
            raise CompileError(f"torch.compile failed ({reason}); run without --compile") from None
