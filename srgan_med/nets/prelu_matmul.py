"""``prelu(y + bias) @ weight`` in one pass over ``y``: a matrix product whose left operand gets a bias
and a PReLU as it is loaded (a Triton kernel on CUDA; the same function in torch ops elsewhere).

Why by hand: in SRResNet's folded tail (``fold_tail_before_shuffle``) the last upsampling convolution
writes the largest tensor of the network (256 channels at half the output resolution: 8.6 GB for a
batch of 256 x4 slices in bf16). Its bias and PReLU then take one more pass over it (by its name and
time, a 5.7 ms kernel of an 84.3 ms compiled pass on an H100, docs/results/h100-2026-11-26) before
the output convolution reads it again. cuDNN fuses no PReLU into a convolution, and Inductor
declines to fuse a pointwise prologue that it computes in float32 into a bf16 matrix template
(``check_prologue_fusion_heuristics_fusable``).
Here the PReLU is applied in registers while the tile is loaded, so the tensor is read once. With
``weight`` holding one column per kernel tap and output channel, the product is the first half of
:func:`srgan_med.nets.shift_sum.shift_sum_conv2d`.

Note for tests: Triton's CPU interpreter (``TRITON_INTERPRET=1``) computes ``tl.dot`` of bfloat16
wrongly (triton 3.5 and 3.9), so CPU tests run the kernel in float16 and float32; bf16 runs on a GPU.
"""

from __future__ import annotations

import os

import torch
from torch import nn

KERNEL_DTYPES = (torch.float16, torch.bfloat16)  # float32 would take TF32 in tl.dot


def prelu_matmul_reference(y: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor):
    """The function, in torch ops: ``(M, K)``, ``(K,)``, ``(K,)``, ``(K, N)`` -> ``(M, N)`` in ``y``'s
    dtype; the PReLU in float32, its result rounded to ``y``'s dtype before the product (as the
    kernel does)."""
    z = nn.functional.prelu(y.float() + bias.float(), alpha.float()).to(y.dtype)
    return z @ weight.to(y.dtype)


# The registered op (``load_kernel``), and whether its kernel runs in Triton's CPU interpreter.
# Module state, read (not built) in ``forward``: torch.compile traces those reads, but not the build.
_OP = None
_INTERPRETED = False


def load_kernel() -> bool:
    """Build and register the kernel once, if ``triton`` imports; returns whether it is there.

    Call it before ``torch.compile`` traces a caller (``prepare_for_inference`` does). Triton decides
    at this point whether the kernel is compiled or interpreted (``TRITON_INTERPRET=1``, for tests).
    """
    global _OP, _INTERPRETED
    if _OP is None:
        try:
            import triton  # noqa: F401 - optional: on GPU installs torch brings it
        except ImportError:
            return False
        _INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
        _OP = _register()
    return True


def kernel_applies(y: torch.Tensor) -> bool:
    """Whether :func:`prelu_matmul` runs the kernel for ``y``: loaded (:func:`load_kernel`), ``y`` on
    CUDA (anywhere when interpreted), in a dtype of :data:`KERNEL_DTYPES`, unit column stride."""
    return (
        _OP is not None
        and (y.device.type == "cuda" or _INTERPRETED)
        and y.dtype in KERNEL_DTYPES
        and y.stride(-1) == 1
    )


def _kernel():
    """The Triton kernel (``triton`` is optional, and whether it is interpreted is fixed when the
    kernel is decorated, so it is built by ``load_kernel``, not at import)."""
    import triton
    import triton.language as tl

    # Every config keeps its accumulator and the PReLU'd tile in registers without spilling, when
    # compiled for an H100 (sm_90) in bf16 with K = 256 by the triton of the test extra;
    # tests/test_prelu_matmul.py checks that on the CPU. (128x128 tiles at 4 warps, 256-row tiles
    # with 64-deep steps, and 128- or 256-deep steps at 4 warps spilled.)
    configs = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
        for m, n, k, w, s in (
            (128, 128, 64, 8, 4),
            (128, 128, 64, 8, 3),
            (128, 128, 32, 8, 4),
            (128, 128, 128, 8, 2),
            (256, 128, 32, 8, 4),
            (64, 128, 64, 4, 4),
            (128, 64, 64, 4, 4),
        )
    ]
    if _INTERPRETED:  # every config would be "timed" by the interpreter; one is enough there
        configs = configs[:1]

    # Tuned once per width, not per number of rows: the engine's last batch of a volume is smaller,
    # and timing every config again for it would cost more than it could save.
    @triton.autotune(configs=configs, key=["N", "K"])
    @triton.jit
    def prelu_matmul_kernel(
        y_ptr, bias_ptr, alpha_ptr, w_ptr, out_ptr,
        M, N, K: tl.constexpr,  # K: the channels, fixed per network
        stride_ym, stride_wk, stride_om,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        # Rows are pixels: batch * height * width = 256 * 256 * 256 in x4 inference, times 256
        # channels, is past 2**31 elements, so offsets are 64-bit.
        row_offsets = rows.to(tl.int64)[:, None]
        accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            ks = start + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            tile_ok = (rows[:, None] < M) & k_ok[None, :]
            tile = tl.load(y_ptr + row_offsets * stride_ym + ks[None, :], mask=tile_ok, other=0.0)
            tile = tile.to(tl.float32)
            tile += tl.load(bias_ptr + ks, mask=k_ok, other=0.0)[None, :]
            slope = tl.load(alpha_ptr + ks, mask=k_ok, other=0.0)[None, :]
            tile = tl.where(tile >= 0, tile, tile * slope).to(y_ptr.dtype.element_ty)
            weights_ok = k_ok[:, None] & (cols[None, :] < N)
            weights = tl.load(w_ptr + ks[:, None] * stride_wk + cols[None, :], mask=weights_ok, other=0.0)
            accumulator = tl.dot(tile, weights, accumulator)
        tl.store(
            out_ptr + row_offsets * stride_om + cols[None, :],
            accumulator.to(out_ptr.dtype.element_ty),
            mask=(rows[:, None] < M) & (cols[None, :] < N),
        )

    return prelu_matmul_kernel


def _register():
    """``srgan_med::prelu_matmul``, registered with ``torch.library.triton_op`` so that
    ``torch.compile`` traces through the kernel instead of breaking the graph."""
    import triton

    kernel = _kernel()

    @torch.library.triton_op("srgan_med::prelu_matmul", mutates_args=())
    def prelu_matmul_op(
        y: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        rows, depth = y.shape
        columns = weight.shape[1]
        out = y.new_empty((rows, columns))

        def grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(columns, meta["BLOCK_N"]))

        torch.library.wrap_triton(kernel)[grid](
            y, bias, alpha, weight, out, rows, columns, depth, y.stride(0), weight.stride(0), out.stride(0)
        )
        return out

    return prelu_matmul_op


def prelu_matmul(
    y: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``prelu(y + bias, alpha) @ weight``: ``(M, K)``, ``(K,)``, ``(K,)``, ``(K, N)`` -> ``(M, N)`` in
    ``y``'s dtype, accumulated in float32.

    One Triton kernel where :func:`kernel_applies` (after :func:`load_kernel`); otherwise
    :func:`prelu_matmul_reference`. ``bias`` and ``alpha`` are float32; ``weight`` is cast to ``y``'s
    dtype. Inference only: no gradient.
    """
    if y.dim() != 2 or weight.dim() != 2 or y.shape[1] != weight.shape[0]:
        shapes = f"{tuple(y.shape)} and {tuple(weight.shape)}"
        raise ValueError(f"prelu_matmul needs (M, K) and (K, N), got {shapes}")
    if not kernel_applies(y):
        return prelu_matmul_reference(y, bias, alpha, weight)
    return _OP(
        y,
        bias.to(y.device, torch.float32).contiguous(),
        alpha.to(y.device, torch.float32).expand(y.shape[1]).contiguous(),
        weight.to(y.dtype).contiguous(),
    )
