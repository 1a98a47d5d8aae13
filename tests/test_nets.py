"""Generator and discriminator shapes and sizes, as in Ledig et al. 2017."""

from __future__ import annotations

import pytest
import torch

from srgan_med.nets import Discriminator, SRResNet
from srgan_med.nets.shift_sum import shift_sum_conv2d


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_generator_output_shape_on_odd_sizes(scale):
    generator = SRResNet(scale=scale, blocks=2, width=8).eval()
    with torch.no_grad():
        out = generator(torch.randn(2, 1, 13, 17))
    assert out.shape == (2, 1, 13 * scale, 17 * scale)


def test_parameter_counts_close_to_the_paper():
    generator = SRResNet(scale=4, blocks=16, width=64, channels=3)
    # the paper's SRResNet (x4, 16 blocks, 64 channels, RGB) has about 1.5 M parameters
    assert 1.45e6 < sum(p.numel() for p in generator.parameters()) < 1.6e6
    grey = SRResNet(scale=4)
    assert sum(p.numel() for p in grey.parameters()) < sum(p.numel() for p in generator.parameters())


@pytest.mark.parametrize("size", [96, 128])
def test_discriminator_on_patch_sizes(size):
    discriminator = Discriminator()
    logits = discriminator(torch.randn(2, 1, size, size))
    assert logits.shape == (2, 1)


def test_discriminator_matches_the_paper_layout():
    discriminator = Discriminator()
    convs = [m for m in discriminator.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    norms = [m for m in discriminator.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 7  # none after the first convolution
    dense = [m for m in discriminator.classifier if isinstance(m, torch.nn.Linear)]
    assert [d.out_features for d in dense] == [1024, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale must be one of"):
        SRResNet(scale=5)
    with pytest.raises(ValueError, match="must be positive"):
        SRResNet(blocks=0)


def test_bicubic_residual_starts_as_bicubic_and_learns_a_difference():
    import torch.nn.functional as F

    generator = SRResNet(scale=2, blocks=2, width=8, residual="bicubic")
    low_res = torch.rand(2, 1, 11, 13)
    expected = F.interpolate(low_res, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(generator(low_res), expected)
    generator(low_res).sum().backward()
    assert generator.tail.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="residual must be one of none, bicubic"):
        SRResNet(residual="lanczos")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("size", "outputs", "bias"), [(1, 1, True), (3, 4, False), (9, 1, True)])
def test_shift_sum_convolution_has_the_convolution_s_values_and_gradients(size, outputs, bias, channels_last):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(5, outputs, size, padding=size // 2, bias=bias).double()
    x = torch.randn(2, 5, 10, 7, dtype=torch.float64)  # 7 < 9: outputs that only see the border
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_plain, x_shift = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference = conv(x_plain)
    result = shift_sum_conv2d(x_shift, conv.weight, conv.bias)
    torch.testing.assert_close(result.double(), reference)
    upstream = torch.randn_like(reference)
    grads = torch.autograd.grad((result * upstream).sum(), [x_shift, *conv.parameters()])
    expected = torch.autograd.grad((reference * upstream).sum(), [x_plain, *conv.parameters()])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got.double(), want)


def test_shift_sum_gradient_passes_gradcheck():
    torch.manual_seed(4)
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: shift_sum_conv2d(*a).double(), (x, weight, bias))


def test_shift_sum_output_convolution_trains_the_same_generator():
    """``output_conv`` changes how the generator computes, not what: same output and gradients, and
    the same weights (the state dict has no trace of it)."""
    torch.manual_seed(5)
    plain = SRResNet(scale=2, blocks=1, width=8)
    shifted = SRResNet(scale=2, blocks=1, width=8)
    shifted.load_state_dict(plain.state_dict())
    shifted.output_conv = "shift-sum"
    low_res = torch.randn(2, 1, 9, 11)
    outputs = [net(low_res) for net in (plain, shifted)]
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
    for out in outputs:
        out.square().mean().backward()
    torch.testing.assert_close(shifted.tail.weight.grad, plain.tail.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shifted.head[0].weight.grad, plain.head[0].weight.grad, atol=1e-5, rtol=1e-4)
    assert shifted.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bf16", [False, True])
def test_shift_sum_on_cuda_matches_the_convolution(bf16):
    """The GPU path of both uses (training: 64 -> 1, 9x9; the folded inference tail: 4 outputs,
    5x5) in channels_last, as the trainer and the engine run them; TF32 off for the float32 check."""
    torch.manual_seed(6)
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for inputs, outputs, size in ((64, 1, 9), (256, 4, 5)):
            conv = torch.nn.Conv2d(inputs, outputs, size, padding=size // 2).cuda()
            x = torch.randn(4, inputs, 40, 36, device="cuda").contiguous(memory_format=torch.channels_last)
            x_plain, x_shift = x.clone().requires_grad_(), x.clone().requires_grad_()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                reference = conv(x_plain).float()
                result = shift_sum_conv2d(x_shift, conv.weight, conv.bias)
            tolerance = 2e-2 if bf16 else 1e-4
            assert float((result - reference).norm() / reference.norm()) < tolerance
            result.sum().backward()
            reference.sum().backward()
            assert float((x_shift.grad - x_plain.grad).norm() / x_plain.grad.norm()) < tolerance
    finally:
        torch.backends.cudnn.allow_tf32 = before
