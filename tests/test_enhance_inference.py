"""The optimised inference path computes the same function as the plain one (fp32, eager, one slice
at a time), and ``enhance_volume`` keeps its memory to about one output volume."""

from __future__ import annotations

import functools
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from srgan_med.enhance.conv_forms import PReLUShiftSumConv2d, ShiftSumConv2d, UnfoldConv2d, shift_sum_tail
from srgan_med.enhance.engine import enhance_volume
from srgan_med.enhance.inference import (
    default_output_conv,
    default_precision,
    fold_batch_norm,
    fold_tail_before_shuffle,
    mixed_precision,
    native_bf16_cpu,
    prepare_for_inference,
)
from srgan_med.metrics import psnr
from srgan_med.nets import SRResNet


def _generator(scale: int = 2, residual: str = "none") -> SRResNet:
    """A small SRResNet in eval mode with non-trivial batch-norm statistics and affine parameters."""
    torch.manual_seed(0)
    generator = SRResNet(scale=scale, blocks=2, width=8, residual=residual).eval()
    with torch.no_grad():
        generator.tail.weight.normal_(0.0, 0.05)  # the bicubic-residual variant starts at zero
        for module in generator.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return generator


def _plain(generator: nn.Module, low_res: torch.Tensor) -> torch.Tensor:
    """The reference: fp32, eager, one slice at a time."""
    with torch.no_grad():
        return torch.cat([generator(low_res[i : i + 1]) for i in range(low_res.shape[0])])


def test_folding_removes_every_batch_norm_and_keeps_the_function():
    generator = _generator()
    folded = fold_batch_norm(generator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in generator.modules()) == 5  # original untouched
    low_res = torch.rand(3, 1, 20, 17)
    with torch.no_grad():
        torch.testing.assert_close(folded(low_res), _plain(generator, low_res), atol=1e-5, rtol=1e-5)


def test_training_mode_batch_norm_is_not_folded():
    generator = _generator().train()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fold_batch_norm(generator).modules()) == 5


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_output_convolution_moved_before_the_last_shuffle_keeps_the_function(scale):
    generator = _generator(scale)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(-0.5, 0.5)  # per-channel slopes must follow their channels
    folded = fold_tail_before_shuffle(generator)
    assert isinstance(folded.tail, nn.Identity) and isinstance(generator.tail, nn.Conv2d)
    low_res = torch.rand(2, 1, 13, 17)  # odd sizes: the borders' zero padding must map exactly
    with torch.no_grad():
        torch.testing.assert_close(folded(low_res), generator(low_res), atol=1e-5, rtol=1e-5)


def test_networks_of_another_shape_are_left_as_they_are():
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2))
    assert isinstance(fold_tail_before_shuffle(network)[0], nn.Conv2d)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(
    ("size", "outputs", "bias"), [(1, 1, True), (3, 4, False), (5, 4, True), (9, 1, True)]
)
def test_shift_sum_convolution_equals_the_convolution(size, outputs, bias, channels_last):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, outputs, size, padding=size // 2, bias=bias)
    x = torch.randn(3, 6, 11, 8)  # smaller than the kernel along one side: all-border outputs too
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = ShiftSumConv2d(conv)(x)
        torch.testing.assert_close(got, conv(x), atol=1e-5, rtol=1e-5)
    assert got.dtype == torch.float32


def test_shift_sum_convolution_accumulates_bf16_planes_in_float32():
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 4, 5, padding=2)
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = ShiftSumConv2d(conv)(x)
    assert got.dtype == torch.float32
    with torch.no_grad():
        reference = conv(x)
    assert float((got - reference).norm() / reference.norm()) < 1e-2


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(2, 2, 3, padding=1, stride=2),
        nn.Conv2d(2, 2, 3, padding=0),
        nn.Conv2d(2, 2, 4, padding=2),
        nn.Conv2d(2, 2, 3, padding=1, groups=2),
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
    ],
)
def test_shift_sum_refuses_convolutions_it_does_not_compute(conv):
    with pytest.raises(ValueError, match="stride-1"):
        ShiftSumConv2d(conv)


def test_shift_sum_tail_replaces_only_the_folded_output_convolution():
    folded = fold_tail_before_shuffle(fold_batch_norm(_generator(4)))
    convs = sum(isinstance(m, nn.Conv2d) for m in folded.modules())
    rewritten = shift_sum_tail(folded)
    assert isinstance(rewritten.upsample[-1][2], ShiftSumConv2d)
    assert sum(isinstance(m, ShiftSumConv2d) for m in rewritten.modules()) == 1
    assert sum(isinstance(m, nn.Conv2d) for m in rewritten.modules()) == convs - 1
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2))
    assert isinstance(shift_sum_tail(network)[0], nn.Conv2d)


@pytest.mark.parametrize("size", [3, 9])
@pytest.mark.parametrize("inputs", [1, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_unfold_convolution_equals_the_convolution(size, inputs, channels_last):
    torch.manual_seed(4)
    conv = nn.Conv2d(inputs, 16, size, padding=size // 2)
    x = torch.randn(2, inputs, 19, 23)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    unfold = UnfoldConv2d(conv, channels_last)
    assert unfold.weight.shape[1] % 8 == 0  # padded with zero columns
    with torch.no_grad():
        got, expected = unfold(x), conv(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got.stride(1) == 1) == channels_last  # the layout it was told
    with pytest.raises(ValueError, match="UnfoldConv2d needs"):
        UnfoldConv2d(nn.Conv2d(1, 4, 3, stride=2, padding=1))


def test_unfold_under_autocast_makes_its_copies_in_the_autocast_dtype_and_compiles_whole():
    """Under bf16 autocast the 81 copies are made in bf16, half the bytes, and the result is the
    autocast convolution's own (both round the input to bf16 before the product); traced whole."""
    torch.manual_seed(5)
    conv = nn.Conv2d(1, 8, 9, padding=4)
    unfold = UnfoldConv2d(conv, channels_last=True)
    x = torch.rand(2, 1, 20, 21)

    class Copies(TorchDispatchMode):  # the dtype of the stacked copies (aten.cat's result)
        made = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.cat.default:
                self.made.append(out.dtype)
            return out

    def run(module, image):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return module(image)

    with Copies():
        got = run(unfold, x)
    expected = run(conv, x)
    assert Copies.made == [torch.bfloat16] and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)
    compiled = torch.compile(functools.partial(run, unfold), fullgraph=True)
    torch.testing.assert_close(compiled(x), got, atol=1e-2, rtol=1e-2)
    with torch.no_grad():  # outside autocast: float32, as before
        assert unfold(x).dtype == torch.float32


@pytest.mark.parametrize(
    ("output_conv", "input_conv"),
    [("conv", "conv"), ("shift-sum", "conv"), ("conv", "unfold"), ("fused-shift-sum", "unfold")],
)
@pytest.mark.parametrize("residual", ["none", "bicubic"])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_prepared_generator_equals_plain(channels_last, scale, residual, output_conv, input_conv):
    generator = _generator(scale, residual)
    prepared = prepare_for_inference(
        generator,
        "cpu",
        channels_last=channels_last,
        precision="fp32",
        output_conv=output_conv,
        input_conv=input_conv,
    )
    assert any(isinstance(m, ShiftSumConv2d) for m in prepared.modules()) == (output_conv != "conv")
    assert isinstance(prepared.network.head[0], UnfoldConv2d) == (input_conv == "unfold")
    low_res = torch.rand(4, 1, 24, 31)
    with torch.inference_mode():
        fast = prepared(low_res)
    assert fast.is_contiguous() and fast.dtype == torch.float32
    torch.testing.assert_close(fast, _plain(generator, low_res), atol=1e-5, rtol=1e-5)
    assert generator.body[0].body[1].running_var.requires_grad is False  # original kept as it was
    assert next(generator.parameters()).requires_grad


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "mixed"])
def test_each_precision_computes_the_plain_function(precision):
    """fp32 and tf32 are IEEE float32 on CPU (TF32 exists on CUDA only); bf16 autocast is close, in
    float32 NCHW out; the CUDA versions are compared on a GPU by benchmarks/gpu_inference.py."""
    generator = _generator(4, "bicubic")
    prepared = prepare_for_inference(generator, "cpu", precision=precision)
    assert prepared.precision == precision and prepared.channels_last
    low_res = torch.rand(3, 1, 20, 22)
    with torch.inference_mode():
        fast = prepared(low_res)
    plain = _plain(generator, low_res)
    assert fast.is_contiguous() and fast.dtype == torch.float32
    if precision in ("bf16", "mixed"):
        assert 0 < float((fast - plain).norm() / plain.norm()) < 2e-2
    else:
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_mixed_precision_keeps_the_image_convolutions_in_float32():
    """The first and the output convolution run in float32 on float32 data; the trunk in bf16."""
    generator = _generator(4, "bicubic")
    prepared = prepare_for_inference(generator, "cpu", precision="mixed")
    network = prepared.network
    seen: dict[str, torch.dtype] = {}

    def record(name):
        def hook(module, inputs, output) -> None:
            seen[name] = output.dtype

        return hook

    network.head[0].register_forward_hook(record("head"))
    network.upsample[-1][1].register_forward_hook(record("tail"))  # the folded output conv
    network.body.module[0].body[0].register_forward_hook(record("trunk"))
    with torch.inference_mode():
        prepared(torch.rand(2, 1, 12, 12))
    assert seen == {"head": torch.float32, "trunk": torch.bfloat16, "tail": torch.float32}
    with pytest.raises(ValueError, match="SRResNet-shaped"):
        mixed_precision(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)))


def test_default_precision_follows_the_device_and_the_cpu():
    generator = _generator(2)
    cpu = prepare_for_inference(generator, "cpu").precision
    assert cpu == ("mixed" if native_bf16_cpu() else "fp32")
    assert default_precision(torch.device("cuda")) == "bf16"
    plain_network = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3))
    assert default_precision(torch.device("cpu"), plain_network) == "fp32"  # not mixable


def test_default_output_convolution_is_the_fused_kernel_only_on_cuda_in_bf16():
    import importlib.util

    triton = importlib.util.find_spec("triton") is not None
    cuda = torch.device("cuda")
    assert default_output_conv(cuda, "bf16") == ("fused-shift-sum" if triton else "conv")
    for precision in ("fp32", "tf32", "mixed"):  # the kernel computes bf16 / fp16 only
        assert default_output_conv(cuda, precision) == "conv"
    assert default_output_conv(torch.device("cpu"), "bf16") == "conv"
    prepared = prepare_for_inference(_generator(2), "cpu", precision="bf16")
    assert not any(isinstance(m, PReLUShiftSumConv2d) for m in prepared.modules())
    asked = prepare_for_inference(_generator(2), "cpu", precision="bf16", output_conv="fused-shift-sum")
    assert any(isinstance(m, PReLUShiftSumConv2d) for m in asked.modules())


def test_unknown_precision_or_tail_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(_generator(2), "cpu", precision="fp16")
    with pytest.raises(ValueError, match="output_conv must be one of"):
        prepare_for_inference(_generator(2), "cpu", output_conv="fft")
    with pytest.raises(ValueError, match="input_conv must be one of"):
        prepare_for_inference(_generator(2), "cpu", input_conv="fft")
    with pytest.raises(ValueError, match="'fused-shift-sum' has no kernel"):
        prepare_for_inference(_generator(2), "cpu", precision="mixed", output_conv="fused-shift-sum")


def _ct_scan(shape=(40, 36, 7)) -> MetaTensor:
    rng = np.random.default_rng(0)
    volume = rng.normal(40.0, 300.0, shape).astype(np.float32)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    return MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(affine), meta={"modality": "CT"})


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_enhance_volume_with_the_optimised_path_equals_plain_slice_by_slice(slice_axis):
    generator = _generator(2)
    scan = _ct_scan()

    def normalise(values):
        return (values + 1000.0) / 3000.0

    def denormalise(values):
        return values * 3000.0 - 1000.0

    result = enhance_volume(
        scan,
        prepare_for_inference(generator, "cpu", precision="fp32"),
        2,
        normalise=normalise,
        denormalise=denormalise,
        slice_axis=slice_axis,
        batch_size=8,
        tile=16,  # tiled, with the receptive-field halo
        halo=14,
        max_pixels_per_pass=3 * 40 * 36,
    )
    height, width = (s for a, s in enumerate(scan.shape[1:]) if a != slice_axis)
    assert result.batch_size == min(8, 3 * 40 * 36 // (height * width))
    slices = np.moveaxis(scan[0].numpy(), slice_axis, 0)[:, None]
    expected = denormalise(_plain(generator, torch.from_numpy(normalise(slices))).numpy()[:, 0])
    expected = np.moveaxis(expected, 0, slice_axis)
    np.testing.assert_allclose(result.image[0].numpy(), expected, atol=0.05)  # HU, from ~1e-5 in [0, 1]
    block_mean = np.moveaxis(expected, slice_axis, -1)
    h, w, n = block_mean.shape
    block_mean = block_mean.reshape(h // 2, 2, w // 2, 2, n).mean(axis=(1, 3))
    reference = np.moveaxis(scan[0].numpy(), slice_axis, -1)
    data_range = float(np.ptp(reference))
    assert result.consistency_psnr_db == pytest.approx(psnr(reference, block_mean, data_range), abs=1e-3)


def test_enhance_volume_holds_about_one_output_volume():
    """numpy allocations (tracked by tracemalloc) stay within 1.1x the float32 output: no float64,
    transposed or normalised copy of a whole volume (each would add at least 0.25x)."""
    scan = _ct_scan((160, 48, 40))
    output_bytes = 160 * 48 * 2 * 40 * 2 * 4
    tracemalloc.start()
    try:
        result = enhance_volume(
            scan,
            lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
            2,
            normalise=lambda v: v / 1000,
            denormalise=lambda v: v * 1000,
            slice_axis=0,  # the transposed case: the output must still be written in place
            batch_size=2,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tuple(result.image.shape[1:]) == (160, 96, 80)
    assert peak < 1.1 * output_bytes, f"peak {peak / output_bytes:.2f}x the output"


def test_a_compile_that_fails_is_raised_as_a_compile_error(monkeypatch):
    """A real failed compile: inductor pointed at a C++ compiler that does not exist, caches off."""
    import torch._inductor.config as inductor_config

    from srgan_med.enhance.inference import CompiledGenerator
    from srgan_med.errors import CompileError

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/g++"))
    monkeypatch.setattr(inductor_config, "force_disable_caches", True)
    torch._dynamo.reset()
    compiled = CompiledGenerator(prepare_for_inference(_generator(2), "cpu", precision="fp32"))
    assert compiled.precision == "fp32"
    with pytest.raises(CompileError, match=r"^torch.compile failed \(.*\); run without --compile$"):
        compiled(torch.rand(1, 1, 12, 12))
    torch._dynamo.reset()


def test_inside_disk_backed_the_output_lives_in_a_file_and_the_file_goes(tmp_path):
    """Over the budget, the output is a memory-mapped file: numpy allocates next to nothing, the values
    are those of the in-memory run, and the file is gone when the block ends."""
    from srgan_med.io import scratch

    scan = _ct_scan((160, 48, 40))
    output_bytes = 160 * 48 * 2 * 40 * 2 * 4
    options = dict(normalise=lambda v: v / 1000, denormalise=lambda v: v * 1000, slice_axis=2, batch_size=2)
    upscale = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")  # noqa: E731
    in_memory = enhance_volume(scan, upscale, 2, **options).image[0].numpy().copy()
    tracemalloc.start()
    try:
        with scratch.disk_backed(tmp_path, budget_bytes=0):
            result = enhance_volume(scan, upscale, 2, **options)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert len(list(tmp_path.glob(".srgan_med-*.scratch"))) == 1
            np.testing.assert_array_equal(result.image[0].numpy(), in_memory)
    finally:
        tracemalloc.stop()
    assert peak < 0.2 * output_bytes, f"peak {peak / output_bytes:.2f}x the output"
    assert not list(tmp_path.iterdir())
