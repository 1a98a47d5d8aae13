"""``prelu_matmul`` and the fused output convolution (``output_conv="fused-shift-sum"``) compute the
same function as the plain generator: in torch ops here, in the Triton kernel under Triton's CPU
interpreter (a subprocess, since the interpreter is chosen when the kernel is built), and compiled
on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from srgan_med.enhance.conv_forms import PReLUShiftSumConv2d, fused_shift_sum_tail
from srgan_med.enhance.inference import fold_batch_norm, fold_tail_before_shuffle, prepare_for_inference
from srgan_med.nets import SRResNet
from srgan_med.nets.prelu_matmul import prelu_matmul, prelu_matmul_reference


def _generator(scale: int = 4) -> SRResNet:
    torch.manual_seed(0)
    generator = SRResNet(scale=scale, blocks=2, width=8, residual="bicubic").eval()
    with torch.no_grad():
        generator.tail.weight.normal_(0.0, 0.05)
        for module in generator.modules():
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(0.05, 0.5)  # distinct slopes, so a lost PReLU shows
    return generator


def test_reference_is_bias_prelu_then_product():
    torch.manual_seed(1)
    y, bias, alpha, weight = torch.randn(50, 6), torch.randn(6), torch.rand(6), torch.randn(6, 10)
    shifted = y + bias
    expected = torch.where(shifted >= 0, shifted, shifted * alpha) @ weight
    torch.testing.assert_close(prelu_matmul(y, bias, alpha, weight), expected)  # float32: no kernel
    with pytest.raises(ValueError, match=r"\(M, K\) and \(K, N\)"):
        prelu_matmul(y, bias, alpha, torch.randn(5, 10))


def test_fused_tail_replaces_bias_prelu_and_output_convolution():
    folded = fold_tail_before_shuffle(fold_batch_norm(_generator(4)))
    conv, prelu, tail, shuffle = folded.upsample[-1]
    fused = fused_shift_sum_tail(folded)
    assert list(fused.upsample[-1]) == [conv, fused.upsample[-1][1], shuffle]
    module = fused.upsample[-1][1]
    assert isinstance(module, PReLUShiftSumConv2d) and conv.bias is None
    assert module.taps.shape == (tail.in_channels, 104)  # 5 * 5 * 4 = 100 columns, padded to 8
    torch.testing.assert_close(module.alpha, prelu.weight)
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2))
    assert isinstance(fused_shift_sum_tail(other)[0], nn.Conv2d)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fused_engine_equals_plain_generator(scale, channels_last):
    """In float32 the kernel never runs (:data:`KERNEL_DTYPES`): this is the torch-ops form."""
    generator = _generator(scale)
    prepared = prepare_for_inference(
        generator, "cpu", channels_last=channels_last, precision="fp32", output_conv="fused-shift-sum"
    )
    assert sum(isinstance(m, PReLUShiftSumConv2d) for m in prepared.modules()) == 1
    low_res = torch.rand(3, 1, 14, 17)
    with torch.inference_mode():
        fast = prepared(low_res)
        plain = generator(low_res)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


_INTERPRETER_CHECK = r"""
import json, torch
import srgan_med.nets.prelu_matmul as pm
from srgan_med.enhance.inference import prepare_for_inference
from srgan_med.nets import SRResNet

results = {"loaded": pm.load_kernel(), "interpreted": pm._INTERPRETED}
kernel, calls = pm._OP, []
pm._OP = lambda *args: calls.append(args[0].shape) or kernel(*args)
torch.manual_seed(2)
errors = []
for rows, depth, columns, slopes in ((1000, 256, 104, 256), (333, 100, 52, 1), (7, 24, 8, 24),
                                     (200, 576, 232, 576)):  # x3: 9 phases x 25 taps, wider than a tile
    y = torch.randn(rows, depth).half()
    bias, alpha = torch.randn(depth), torch.rand(slopes)
    weight = (torch.randn(depth, columns) / depth**0.5).half()
    out = pm.prelu_matmul(y, bias, alpha, weight)
    expected = pm.prelu_matmul_reference(y.double(), bias.double(), alpha.double().expand(depth),
                                         weight.double())
    errors.append(float((out.double() - expected).abs().max() / expected.abs().max()))
results["matmul_errors"] = errors
results["matmul_calls"] = len(calls)

torch.manual_seed(0)
generator = SRResNet(scale=4, blocks=2, width=8, residual="bicubic").eval()
with torch.no_grad():
    generator.tail.weight.normal_(0.0, 0.05)
low_res = torch.rand(2, 1, 12, 14)
with torch.no_grad():
    plain = generator(low_res).double()
network = prepare_for_inference(generator, "cpu", precision="fp32",
                                 output_conv="fused-shift-sum").network.half()
before = len(calls)
with torch.inference_mode():
    kernel_path = network(low_res.half()).double()
    results["network_calls"] = len(calls) - before
    counting, pm._OP = pm._OP, None  # no kernel: the torch-ops form
    torch_path = network(low_res.half()).double()
    pm._OP = counting
results["kernel_vs_plain"] = float((kernel_path - plain).norm() / plain.norm())
results["torch_vs_plain"] = float((torch_path - plain).norm() / plain.norm())
print(json.dumps(results))
"""


def test_triton_kernel_in_the_interpreter():
    """The kernel's own code (masks for ragged sizes, the prologue, 64-bit offsets) run on the CPU."""
    pytest.importorskip("triton", reason="triton (test extra, Linux x86-64) not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["loaded"] and results["interpreted"]
    assert results["matmul_calls"] == 4 and max(results["matmul_errors"]) < 2e-3  # float16 rounding
    assert results["network_calls"] == 1  # float16 in channels_last: the kernel
    assert results["kernel_vs_plain"] < 5e-3
    assert abs(results["kernel_vs_plain"] - results["torch_vs_plain"]) < 1e-3


def _compile_for_h100(kernel, config, dtype: str):
    """``kernel`` (a ``JITFunction``) compiled ahead of time for sm_90 with ``config``, no GPU needed:
    Triton's own front end, LLVM and the ``ptxas`` its wheel carries."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pointers = {"y_ptr": dtype, "bias_ptr": "fp32", "alpha_ptr": "fp32", "w_ptr": dtype, "out_ptr": dtype}
    signature = {}
    for name in kernel.arg_names:
        if name in pointers:
            signature[name] = "*" + pointers[name]
        else:
            signature[name] = "constexpr" if name == "K" or name.startswith("BLOCK_") else "i32"
    names = kernel.arg_names
    aligned = [index for index, name in enumerate(names) if name.endswith("_ptr") or "stride" in name]
    source = ASTSource(
        kernel,
        signature,
        constexprs={"K": 256, **config.kwargs},  # the x4 engine's width: 64 channels x 4 phases
        attrs={(index,): [["tt.divisibility", 16]] for index in aligned},
    )
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=options)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_every_autotune_config_builds_for_an_h100_without_spilling(dtype, tmp_path):
    """Each config the autotuner may pick compiles for sm_90, multiplies on the Hopper tensor cores
    (``wgmma``) and keeps its accumulator and the PReLU'd tile in registers: a spilling config
    (stack use in the cubin) would read and write local memory in a pass meant to be bound by reading
    its input once."""
    pytest.importorskip("triton", reason="triton (test extra, Linux x86-64) not installed")
    import triton

    import srgan_med.nets.prelu_matmul as pm

    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (tools / "cuobjdump").exists():
        pytest.skip(f"this triton wheel carries no CUDA tools in {tools}")
    assert not pm._INTERPRETED  # the tests' interpreter runs in subprocesses
    autotuner = pm._kernel()
    assert len(autotuner.configs) >= 4
    for config in autotuner.configs:
        compiled = _compile_for_h100(autotuner.fn, config, dtype)
        assert "wgmma" in compiled.asm["ptx"], config
        cubin = tmp_path / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run(
            [str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True, text=True
        )
        resources = dict(field.split(":") for field in usage.stdout.split() if field.count(":") == 1)
        assert resources.get("STACK") == "0", (config, usage.stdout)
        assert compiled.metadata.shared <= 227 * 1024, config  # an H100 block's shared memory


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_engine_on_cuda_eager_and_compiled():
    """bf16 on the GPU: the kernel against the torch-ops form, and the x4 engine compiled in one
    graph (``triton_op``) against the plain generator."""
    pytest.importorskip("triton", reason="triton not installed")
    torch.manual_seed(3)
    device = torch.device("cuda")
    y = torch.randn(70_001, 256, device=device, dtype=torch.bfloat16)
    bias, alpha = torch.randn(256, device=device), torch.rand(256, device=device)
    weight = (torch.randn(256, 104, device=device) / 16).to(torch.bfloat16)
    from srgan_med.nets.prelu_matmul import load_kernel

    assert load_kernel()
    out = prelu_matmul(y, bias, alpha, weight).float()
    expected = prelu_matmul_reference(y, bias, alpha, weight).float()
    assert float((out - expected).norm() / expected.norm()) < 1e-2

    generator = SRResNet(scale=4, blocks=2, residual="bicubic").eval()  # 64 wide: K = 256, as shipped
    with torch.no_grad():
        generator.tail.weight.normal_(0.0, 0.01)  # zero at init with the bicubic residual
    generator = generator.to(device)
    low_res = torch.rand(8, 1, 64, 64, device=device)
    with torch.no_grad():
        plain = generator(low_res)
    fused = prepare_for_inference(
        generator, device, precision="bf16", output_conv="fused-shift-sum", input_conv="unfold"
    )
    compiled = torch.compile(fused, fullgraph=True)
    with torch.inference_mode():
        for result in (fused(low_res), compiled(low_res)):
            assert float((result - plain).norm() / plain.norm()) < 2e-2
